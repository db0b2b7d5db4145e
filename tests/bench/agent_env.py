"""What the agent benchmarks share: a Node watch that timestamps a taint's arrival, the agent as
a subprocess (`gputopo-agent run --mock ...`) sampled with psutil, and /metrics scrapes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

from tests.controlplane import ControlPlane, free_port

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(sys.executable).parent / "gputopo-agent"
NRT_CRD = REPO / "daemonset" / "crds" / "noderesourcetopologies.yaml"


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (p99 of 30 samples is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-int(share * 100 * len(ordered)) // 100)))
    return ordered[rank - 1]


class TaintWatch:
    """Watches one Node from a given resourceVersion; records when ``key`` first appears."""

    def __init__(self, admin: client.ApiClient, node_name: str, key: str) -> None:
        self.core = client.CoreV1Api(admin)
        self.node_name = node_name
        self.key = key
        self.seen_at: float | None = None
        self.arrived = threading.Event()
        self._watch = watch.Watch()
        version = self.core.read_node(node_name).metadata.resource_version
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(version,), daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _run(self, version: str) -> None:
        stream = self._watch.stream(
            self.core.list_node,
            field_selector=f"metadata.name={self.node_name}",
            resource_version=version,
            timeout_seconds=120,
        )
        self._started.set()
        for event in stream:
            node = event["object"]
            taints = node.spec.taints or [] if node.spec is not None else []
            if any(t.key == self.key for t in taints):
                self.seen_at = time.monotonic()
                self.arrived.set()
                break
        self._watch.stop()

    def wait(self, timeout: float) -> float | None:
        self.arrived.wait(timeout)
        return self.seen_at

    def close(self) -> None:
        self._watch.stop()
        self._thread.join(timeout=1)


def ensure_nrt_crd(admin: client.ApiClient) -> None:
    """The NodeResourceTopology CRD the shipped DaemonSet publishes to (--publish-nrt)."""
    extensions = client.ApiextensionsV1Api(admin)
    crd = yaml.safe_load(NRT_CRD.read_text())
    try:
        extensions.create_custom_resource_definition(crd)
    except client.ApiException as error:
        if error.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status
        if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
            return
        time.sleep(0.2)
    raise RuntimeError("NodeResourceTopology CRD not established within 30 s")


@dataclass
class AgentProcess:
    """``gputopo-agent run`` as its own process, with its metrics address."""

    popen: subprocess.Popen[bytes]
    metrics_url: str
    log_path: Path
    process: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.popen.pid)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /readyz answers 200 (first discovery published)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.popen.poll() is not None:
                raise RuntimeError(f"agent exited {self.popen.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"agent not ready within {timeout:.0f} s: {self.log_tail()}")

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def counter(self, name: str, **labels: str) -> float:
        wanted = tuple(sorted(labels.items()))
        return self.samples().get((name, wanted), 0.0)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def agent_process(
    plane: ControlPlane, node_name: str, workdir: Path, extra: Sequence[str] = ()
) -> Iterator[AgentProcess]:
    """The agent as the DaemonSet runs it, on the mocked DGX H100, against ``plane``."""
    port = free_port()
    log_path = workdir / f"agent-{node_name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTOPO_")}
    argv = [
        str(AGENT),
        "run",
        "--mock",
        "dgx-h100",
        f"--node-name={node_name}",
        f"--kubeconfig={plane.admin_kubeconfig}",
        f"--metrics-address=127.0.0.1:{port}",
        *extra,
    ]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    running = AgentProcess(popen, f"http://127.0.0.1:{port}", log_path)
    try:
        yield running
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def node_body(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}
