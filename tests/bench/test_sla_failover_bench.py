"""SLA failover latency: a mocked XID to the Deployment's replacement Pod Running on a healthy node.

The scenario of tests/integration/test_sla_failover.py (same helpers): the in-process agent on a
mocked DGX H100 publishes ``NoExecute`` SLA taints to a kwok node; a one-replica Deployment
(4 GPUs, ``Gt 950`` toleration without ``tolerationSeconds`` + ``Exists`` with
``tolerationSeconds: 0``, node affinity ``gputopo.io/sla Gt 950``) runs there; a healthy kwok
node (SLA 1000) waits beside it. Each round starts afresh (new nodes, agent, controllers,
scheduler runtime), injects XID 61 on GPU 3 and polls the API server every 20 ms for:

* ``taint_s``: XID -> the node's SLA taint no longer 1000 (the agent's event-triggered cycle);
* ``evicted_s``: XID -> the Pod deleted (kube-controller-manager's taint-eviction controller);
* ``running_s``: XID -> the replacement Pod Running on the healthy node (ReplicaSet controller,
  gputopo's scheduler runtime, kwok standing in for the kubelet).

With ``tolerationSeconds: N`` a user's failover takes N seconds more (the integration test
proves the wait). Recorded in docs/performance.md, "SLA failover".

Run: ``make bench BENCH_ARGS="-k sla_failover -s"``; GPUTOPO_BENCH_ROUNDS (default 5).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster
from tests.integration.test_sla_failover import (
    DEGRADING_XID,
    XID_GPU,
    failover_cluster,
    healthy_node,
    sla_deployment,
    sla_taint,
)
from tests.polling import eventually

pytestmark = pytest.mark.bench

POLL_S = 0.02


def _seconds_until(start: float, check: Callable[[], object], what: str) -> float:
    eventually(check, timeout_s=60, what=what, interval_s=POLL_S)
    return time.monotonic() - start


def _ready(cluster: Cluster, node: str) -> bool:
    conditions = cluster.api.request("GET", f"/api/v1/nodes/{node}").get("status", {})
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions.get("conditions") or []
    )


def _one_round(plane: ControlPlane, namespace: str, sysfs_root: Path) -> dict[str, float]:
    cluster = Cluster(plane)
    try:
        with failover_cluster(plane, cluster, namespace, sysfs_root) as (sick, control, workloads):
            workloads.create(sla_deployment("strict", threshold=950, grace_s=0, gpus=4))
            first = eventually(lambda: workloads.running_on("strict", sick), what="strict on sick")
            healthy = f"healthy-{uuid.uuid4().hex[:8]}"
            cluster.create_node(healthy_node(healthy))
            eventually(lambda: _ready(cluster, healthy), what=f"node {healthy} Ready")
            start = time.monotonic()
            control.inject_xid(XID_GPU, DEGRADING_XID)
            taint_s = _seconds_until(
                start,
                lambda: (sla_taint(cluster.api, sick) or "1000:").split(":")[0] != "1000",
                "the SLA taint updated",
            )
            evicted_s = _seconds_until(
                start,
                lambda: all(
                    p.name != first.name or p.terminating for p in workloads.pods("strict")
                ),
                "the Pod evicted",
            )
            running_s = _seconds_until(
                start,
                lambda: workloads.running_on("strict", healthy),
                "the replacement Running on the healthy node",
            )
            return {"taint_s": taint_s, "evicted_s": evicted_s, "running_s": running_s}
    finally:
        cluster.delete_nodes()


def test_sla_failover_latency(
    benchmark: Any,
    control_plane: ControlPlane,
    kwok: ManagedProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    rounds = int(os.environ.get("GPUTOPO_BENCH_ROUNDS", "5"))
    results: list[dict[str, float]] = []

    def run_once() -> None:
        sysfs_root = tmp_path / f"sys-{len(results)}"
        results.append(_one_round(control_plane, namespace, sysfs_root))

    benchmark.pedantic(run_once, rounds=rounds, iterations=1)
    for column in ("taint_s", "evicted_s", "running_s"):
        values = sorted(result[column] for result in results)
        benchmark.extra_info[f"{column}_median"] = round(statistics.median(values), 3)
        benchmark.extra_info[f"{column}_min"] = round(values[0], 3)
        benchmark.extra_info[f"{column}_max"] = round(values[-1], 3)
        print(
            f"{column}: median {statistics.median(values):.3f} s, "
            f"range {values[0]:.3f}-{values[-1]:.3f} s over {len(values)} rounds"
        )
    assert len(results) == rounds
