"""Warm start-up of the real control plane (etcd + kube-apiserver, then kube-scheduler and kwok).

Run with ``make bench BENCH_ARGS="-k controlplane"``; the numbers are recorded in
docs/performance.md under "Control plane" (target: etcd + kube-apiserver ready under 10 s).
Each round starts every component in a fresh temporary directory and stops it again.
"""

from __future__ import annotations

from typing import Any

from tests.controlplane.measure import COLUMNS, measure_once


def test_control_plane_warm_startup(benchmark: Any) -> None:
    rounds: list[tuple[float, ...]] = []

    def start_and_stop() -> None:
        rounds.append(measure_once())

    benchmark.pedantic(start_and_stop, rounds=5, iterations=1)
    for column, values in zip(COLUMNS, zip(*rounds, strict=True), strict=True):
        benchmark.extra_info[f"{column}_median_s"] = sorted(values)[len(values) // 2]
        benchmark.extra_info[f"{column}_worst_s"] = max(values)
    assert all(len(values) == len(COLUMNS) for values in rounds)
