"""Extender latency per call: `filter` and `prioritize` over HTTP at 500 nodes (nodeCacheCapable).

What kube-scheduler waits for on every pod it sends to the extender: the JSON request (the Pod
and up to 500 NodeNames) over loopback HTTP, one gputopo scheduling cycle on the extender's
cache, and the JSON answer. The cluster is `test_simulate_bench`'s seeded mix (500 nodes) with
2500 of its pods already placed as load; each call asks about a pending pod of a mixed shape
against all 500 node names (kube-scheduler sends only the nodes that passed its own filters, so
this is the worst case). Each pod carries a UID and resourceVersion as kube-scheduler's do, so
prioritize reuses the cycle its filter ran (the cache has not changed between the two). In-process
time of a full cycle (no HTTP, no JSON, nothing reused) is reported beside it.

Run with `make bench`, or `PYTHONPATH=. .venv/bin/python tests/bench/test_extender_bench.py
[nodes] [calls]` for the same numbers without pytest.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any

import pytest

from gputopo.scheduler.extender import Extender, ExtenderRequest, ExtenderServer
from gputopo.scheduler.model import parse_node, parse_pod
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.simulate import ClusterInput, simulate
from tests.bench.test_simulate_bench import generate


def _loaded_framework(nodes: int, load_pods: int, seed: int) -> tuple[CoreFramework, list[Any]]:
    node_dicts, pod_dicts = generate(nodes, load_pods + 400, seed)
    load, pending = pod_dicts[:load_pods], pod_dicts[load_pods:]
    cluster = ClusterInput(
        nodes=[parse_node(n) for n in node_dicts], pending_pods=[parse_pod(p) for p in load]
    )
    _, results = simulate(cluster, explain=False)
    framework = CoreFramework()
    for node in node_dicts:
        framework.upsert_node(node)
    for pod, result in zip(load, results, strict=True):
        if result.node is not None:
            framework.upsert_pod(pod | {"spec": pod["spec"] | {"nodeName": result.node}})
    return framework, pending


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(nodes: int = 500, calls: int = 400, seed: int = 1) -> dict[str, float]:
    framework, pending = _loaded_framework(nodes, nodes * 5, seed)
    names = framework.node_names()
    extender = Extender(framework)
    server = ExtenderServer("127.0.0.1:0", extender)
    server.start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port)  # kept alive, as Go's is
    timings: dict[str, list[float]] = {"filter": [], "prioritize": [], "inprocess_filter": []}
    try:
        for index in range(calls):
            bare = pending[index % len(pending)]
            # As kube-scheduler sends it: a stored pod has a UID and a resourceVersion.
            pod = bare | {
                "metadata": bare["metadata"] | {"uid": f"uid-{index}", "resourceVersion": "7"}
            }
            body = json.dumps({"Pod": pod, "NodeNames": names}).encode()
            for verb in ("filter", "prioritize"):
                started = time.perf_counter()
                connection.request(
                    "POST", f"/gputopo/{verb}", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                json.loads(response.read())
                timings[verb].append(time.perf_counter() - started)
                assert response.status == 200
            # No UID: a full cycle every time (nothing reused from the HTTP calls above).
            request = ExtenderRequest.from_json({"Pod": bare, "NodeNames": names})
            started = time.perf_counter()
            extender.filter(request)
            timings["inprocess_filter"].append(time.perf_counter() - started)
    finally:
        connection.close()
        server.stop()
    stats: dict[str, float] = {"nodes": nodes, "calls": calls}
    for verb, samples in timings.items():
        stats[f"{verb}_p50_ms"] = 1000 * _percentile(samples, 0.50)
        stats[f"{verb}_p99_ms"] = 1000 * _percentile(samples, 0.99)
        stats[f"{verb}_max_ms"] = 1000 * max(samples)
    return stats


@pytest.mark.bench
def test_extender_500_nodes_node_cache_capable(benchmark: Any) -> None:
    stats = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    assert stats["calls"] > 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    for key, value in run(*args).items():
        print(f"{key:>22}: {value:.2f}" if isinstance(value, float) else f"{key:>22}: {value}")
