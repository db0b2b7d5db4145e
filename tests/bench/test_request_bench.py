"""Request benchmark (``reqbench``): CPU per API request of the scheduler's client, by transport.

A real kube-apiserver + etcd; the client is the scheduler's ``KubeApi`` (the bind path:
Authorization header cached, JSON body, answer not decoded where nobody reads it) over each
candidate transport: ``hand`` (HTTP/1.1 framed by hand on the TLS socket, the shipped one) and
``urllib3`` (tests/bench/urllib3_transport.py). Measured per request, sequentially on one
thread, with ``time.thread_time`` (the CPU the scheduler's threads take from each other under
the GIL) and wall time:

* ``get``: GET a Node (the answer decoded);
* ``patch``: a merge PATCH of one annotation on that Node;
* ``bind``: POST pods/binding for a pending pod (``KubeApi.bind``);
* ``event``: POST an Event (``decode=False``, as the event recorder sends them);
* ``watch``: per event of a Pod watch replaying the pods just bound, raw chunks read and split
  into lines without JSON decoding (decoding costs the same on either transport).

Transports run in ABBA order (``hand, urllib3, urllib3, hand``, repeated
``GPUTOPO_REQBENCH_ROUNDS`` times, default 2) so that load from other work on a shared machine
falls on both. ``GPUTOPO_REQBENCH_TRANSPORTS`` picks others (comma-separated, in order, then
reversed): ``httpx`` (tests/bench/httpx_transport.py) needs httpx installed.
``GPUTOPO_REQBENCH_REQUESTS`` (default 400) requests per verb per run.

Run: ``make bench BENCH_ARGS="-k request -s"`` or
``PYTHONPATH=. .venv/bin/python tests/bench/test_request_bench.py`` (prints one JSON line per
run and a median table).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gputopo.core.kube import HttpConnections, load_kubeconfig
from gputopo.scheduler.runtime.kube import KubeApi
from hack.testenv import locate
from tests.bench.urllib3_transport import Urllib3Connections
from tests.controlplane import ControlPlane, running_control_plane

pytestmark = pytest.mark.bench

REQUESTS = int(os.environ.get("GPUTOPO_REQBENCH_REQUESTS", "400"))
ROUNDS = int(os.environ.get("GPUTOPO_REQBENCH_ROUNDS", "2"))
WARM_UP = 20
NAMES = os.environ.get("GPUTOPO_REQBENCH_TRANSPORTS", "hand,urllib3").split(",")


def _transports(names: list[str]) -> dict[str, Callable[..., Any]]:
    """The named transports; httpx (not a dependency) is imported only when asked for."""
    known: dict[str, Callable[..., Any]] = {"hand": HttpConnections, "urllib3": Urllib3Connections}
    if "httpx" in names:
        from tests.bench.httpx_transport import HttpxConnections

        known["httpx"] = HttpxConnections
    return {name: known[name] for name in names}


TRANSPORTS = _transports(NAMES)
VERBS = ("get", "patch", "bind", "event", "watch")


def scheduler_api(plane: ControlPlane, transport: str) -> KubeApi:
    """The scheduler's client for the admin kubeconfig, on the named transport."""
    config = load_kubeconfig(str(plane.admin_kubeconfig))
    api = KubeApi.from_cluster_config(config)
    api.client._http = TRANSPORTS[transport](
        config.server, ssl_context=config.ssl_context(), tls_server_name=config.tls_server_name
    )
    return api


def _per_request(run: Callable[[int], None], count: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of ``run(i)`` for i in range(count)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for index in range(count):
        run(index)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return cpu / count * 1e6, wall / count * 1e6


def _pending_pods(admin: KubeApi, namespace: str, count: int) -> list[tuple[str, str]]:
    def create(index: int) -> tuple[str, str]:
        pod = admin.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            body={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"req-{index:05d}"},
                "spec": {
                    "schedulerName": "nobody",
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        )
        return pod["metadata"]["name"], pod["metadata"]["uid"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(create, range(count)))


def measure(plane: ControlPlane, transport: str, node: str) -> dict[str, Any]:
    """One run: every verb REQUESTS times on a fresh client of the named transport."""
    admin = scheduler_api(plane, "hand")
    namespace = f"reqbench-{uuid.uuid4().hex[:6]}"
    plane.create_namespace(namespace)
    try:
        listing = admin.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        since = listing["metadata"]["resourceVersion"]
        pods = _pending_pods(admin, namespace, REQUESTS + WARM_UP)
        api = scheduler_api(plane, transport)
        node_path = f"/api/v1/nodes/{node}"

        def get(_: int) -> None:
            api.request("GET", node_path)

        def patch(index: int) -> None:
            api.request(
                "PATCH",
                node_path,
                body={"metadata": {"annotations": {"reqbench": str(index)}}},
                content_type="application/merge-patch+json",
                decode=False,
            )

        def bind(index: int) -> None:
            name, uid = pods[index]
            api.bind(namespace, name, uid, node)

        def event(index: int) -> None:
            api.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                body={
                    "metadata": {"name": f"reqbench.{index:05d}", "namespace": namespace},
                    "involvedObject": {"kind": "Pod", "namespace": namespace, "name": "x"},
                    "reason": "Scheduled",
                    "message": f"bound to {node}",
                    "type": "Normal",
                    "source": {"component": "reqbench"},
                },
                decode=False,
            )

        result: dict[str, Any] = {"transport": transport, "requests": REQUESTS}
        for name, run in (("get", get), ("patch", patch), ("event", event)):
            _per_request(run, WARM_UP)
            result[name] = _per_request(lambda i, run=run: run(i + WARM_UP), REQUESTS)
        _per_request(bind, WARM_UP)
        result["bind"] = _per_request(lambda i: bind(i + WARM_UP), REQUESTS)
        result["watch"] = _watch_per_event(api, namespace, since, 2 * (REQUESTS + WARM_UP))
        api.close()
        return result
    finally:
        plane.delete_namespace(namespace)


def _watch_per_event(api: KubeApi, namespace: str, since: str, events: int) -> tuple[float, float]:
    """A Pod watch from before the pods were created: ADDED, then binding MODIFIED events
    replayed from the watch cache; CPU and wall µs per event, lines split, not decoded."""
    stream = api.client._http.open_stream(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={since}"
        "&allowWatchBookmarks=false",
        api.client._headers(),
        timeout_s=60,
    )
    assert stream.status == 200, stream.read()
    seen = 0
    cpu, wall = time.thread_time(), time.perf_counter()
    pending = b""
    for chunk in stream.chunks():
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        seen += sum(1 for line in lines if line.strip())
        if seen >= events:
            break
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    stream.shutdown()
    stream.close()
    return cpu / seen * 1e6, wall / seen * 1e6


def abba(rounds: int) -> list[str]:
    """The transports in order, then reversed, ``rounds`` times: ABBA for two."""
    return (NAMES + NAMES[::-1]) * rounds


def run_all(plane: ControlPlane) -> list[dict[str, Any]]:
    admin = scheduler_api(plane, "hand")
    node = f"reqbench-{uuid.uuid4().hex[:6]}"
    admin.request("POST", "/api/v1/nodes", body={"metadata": {"name": node}})
    try:
        results = []
        for transport in abba(ROUNDS):
            result = measure(plane, transport, node)
            print(json.dumps(result), flush=True)
            results.append(result)
        return results
    finally:
        admin.request("DELETE", f"/api/v1/nodes/{node}")


def summary(results: list[dict[str, Any]]) -> str:
    """A Markdown table: median (min-max) CPU µs per request, and median wall µs."""
    rows = ["| transport | " + " | ".join(VERBS) + " |", "| --- |" + " --- |" * len(VERBS)]
    for transport in TRANSPORTS:
        runs = [r for r in results if r["transport"] == transport]
        cells = []
        for verb in VERBS:
            cpu = [r[verb][0] for r in runs]
            wall = [r[verb][1] for r in runs]
            cells.append(
                f"{statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) CPU, "
                f"{statistics.median(wall):.0f} wall"
            )
        rows.append(f"| {transport} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_request_cpu_per_transport(benchmark: Any, control_plane: ControlPlane) -> None:
    results: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: results.extend(run_all(control_plane)), rounds=1, iterations=1)
    print(summary(results))
    benchmark.extra_info["results"] = results
    assert len(results) == 2 * len(NAMES) * ROUNDS


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="reqbench-") as workdir,
        running_control_plane(locate(), Path(workdir)) as plane,
    ):
        print(summary(run_all(plane)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
