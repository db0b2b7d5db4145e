"""The end-to-end benchmark's ceiling: a "scheduler" that makes no decisions.

It learns the pending pods of one schedulerName as a scheduler does (a list, then a watch from
the list's resourceVersion), and binds each to the next node in name order (round robin), with
the gputopo scheduler's own client (`scheduler.runtime.kube`), its binding pool size
(`RuntimeConfig.bind_workers`) and its Scheduled event per bind (`EventRecorder`): the same API
writes per pod as gputopo-scheduler, none of its thinking. What it reaches is what the API
server and etcd absorb on this machine; tests/bench/test_e2e_scheduler_bench.py reports both
schedulers as a fraction of it.

Run by the benchmark as a process:
``python -m tests.bench.ceiling_binder --kubeconfig K --scheduler-name N`` (it runs until
stopped).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
from typing import Any

from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, load_kube_api
from gputopo.scheduler.runtime.runner import RuntimeConfig
from gputopo.scheduler.runtime.workers import WorkerPool

CEILING_NAME = "bench-ceiling-binder"


class CeilingBinder:
    """Round-robin binds on the scheduler's pool of bind workers; no cache, no queue."""

    def __init__(self, api: KubeApi, scheduler_name: str, nodes: list[str], workers: int):
        self.api = api
        self.scheduler_name = scheduler_name
        self.nodes = itertools.cycle(nodes)
        self.pool = WorkerPool("bind", workers)
        self.recorder = EventRecorder(api, controller=scheduler_name, instance=CEILING_NAME)
        self.seen: set[str] = set()

    def offer(self, pod: JsonDict) -> None:
        """Bind a pod of ours that has no node yet, once."""
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        if spec.get("schedulerName") != self.scheduler_name or spec.get("nodeName"):
            return
        if not uid or uid in self.seen:
            return
        self.seen.add(uid)
        self.pool.submit(self._bind, pod, next(self.nodes))

    def _bind(self, pod: JsonDict, node: str) -> None:
        meta = pod["metadata"]
        try:
            self.api.bind(str(meta["namespace"]), str(meta["name"]), str(meta["uid"]), node)
        except Exception as err:  # the benchmark counts binds; a failure shows as a missing one
            print(f"bind {meta['namespace']}/{meta['name']}: {err}", file=sys.stderr)
            return
        self.recorder.scheduled(pod, node)

    def run(self, stop: threading.Event) -> None:
        query: dict[str, str | int | bool] = {"fieldSelector": "spec.nodeName="}
        listing = self.api.request("GET", "/api/v1/pods", query=query)
        for pod in listing.get("items") or []:
            self.offer(pod)
        version = str(listing["metadata"]["resourceVersion"])
        while not stop.is_set():
            watch: dict[str, str | int | bool] = {
                **query,
                "watch": True,
                "resourceVersion": version,
                "timeoutSeconds": 300,
            }
            for event in self.api.stream_lines("/api/v1/pods", watch, timeout_s=330):
                if stop.is_set():
                    return
                pod: Any = event.get("object") or {}
                if event.get("type") == "ADDED":
                    self.offer(pod)
                version = str((pod.get("metadata") or {}).get("resourceVersion") or version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ceiling_binder", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--scheduler-name", required=True)
    parser.add_argument("--bind-workers", type=int, default=RuntimeConfig.bind_workers)
    args = parser.parse_args(argv)
    api = load_kube_api(args.kubeconfig)
    nodes = sorted(
        str(node["metadata"]["name"])
        for node in api.request("GET", "/api/v1/nodes").get("items") or []
    )
    if not nodes:
        print("ceiling_binder: no nodes to bind to", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    binder = CeilingBinder(api, args.scheduler_name, nodes, args.bind_workers)
    watcher = threading.Thread(target=binder.run, args=(stop,), daemon=True)
    watcher.start()
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
