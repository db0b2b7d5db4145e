"""The agent's runtime costs, against a real kube-apiserver + etcd, on the mocked DGX H100.

* ``xid`` / ``ecc``: an XID (79) or an uncorrectable ECC error injected into the fake NVML ->
  the health taint seen by a watch on the Node. Each sample is independent: a fresh Node, a
  fresh agent (in-process, default run-loop settings: the event thread asleep in NVML's event
  wait, triggered cycles at most every 5 s, discovery every 60 s; publishing through the agent's
  own client, gputopo/core/kube/), and the error is injected once the agent has been idle
  longer than the trigger rate limit, the steady state of a node. p50/p99 over
  GPUTOPO_BENCH_XID_SAMPLES (default 30) each.
* ``footprint``: ``gputopo-agent run`` as the DaemonSet starts it (``--publish-nrt``, the
  pod-resources socket of a fake kubelet, udev on, default intervals) as a subprocess, scraped
  every 15 s as the shipped ServiceMonitor does, for GPUTOPO_BENCH_FOOTPRINT_S seconds
  (default 180) after it is ready; psutil samples RSS every second, CPU is the process's
  user+system time over the window.
* ``health tick``: one health tick (health signals + load sample of all 8 GPUs, NUMA memory,
  CPU), what the agent does every second: with the fake NVML (pure Python, as the footprint
  run has it) and with every NVML answer replayed from memory (the agent's own work).
* ``idle writes``: the same subprocess with ``--interval 0.5 --jitter 0`` for 60 cycles (the
  cycles of an hour at the default 60 s): Node resourceVersion and the agent's own
  ``gputopo_agent_api_writes_total`` before and after.

Run: ``make bench BENCH_ARGS="-k agent -s"``.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.writer import Publisher
from tests.bench.agent_env import (
    TaintWatch,
    agent_process,
    cpu_seconds,
    ensure_nrt_crd,
    node_body,
    percentile,
)
from tests.bench.test_discovery_bench import ReplayedNvml
from tests.controlplane import ControlPlane
from tests.polling import eventually
from tests.unit.agent.fake_kubelet import fake_kubelet, short_socket_dir

pytestmark = pytest.mark.bench

HEALTH_TAINT = "gputopo.io/gpu-health"
XID_SAMPLES = int(os.environ.get("GPUTOPO_BENCH_XID_SAMPLES", "30"))
FOOTPRINT_S = float(os.environ.get("GPUTOPO_BENCH_FOOTPRINT_S", "180"))
SCRAPE_EVERY_S = 15.0
IDLE_CYCLES = 60
MiB = 1024 * 1024


def xid_sample(plane: ControlPlane, sysfs_root: Path, gpu: int, error: str = "xid") -> float:
    """Seconds from injecting an XID 79 (``error="xid"``) or an uncorrectable ECC error
    (``"ecc"``) to the taint arriving at a Node watch; fresh Node and agent."""
    from gputopo.core.kube import KubeClient, load_kubeconfig
    from gputopo.mocks.fake_pynvml import make_fake_pynvml

    admin = plane.admin
    core = client.CoreV1Api(admin)
    api = KubeClient(load_kubeconfig(str(plane.admin_kubeconfig)))
    node_name = f"xid-{uuid.uuid4().hex[:8]}"
    core.create_node(node_body(node_name))
    nvml = make_fake_pynvml("dgx-h100")
    config = RunLoopConfig(udev=False)  # defaults otherwise; no netlink in a test
    try:
        with Discoverer(nvml, sysfs_root, node_name) as discoverer:
            agent = Agent(discoverer, publisher=Publisher(api, node_name), config=config)
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            try:
                eventually(lambda: agent.readiness()[0], 60, "first publish", interval_s=0.05)
                # Past the rate limit of triggered cycles, as on a node that has been up a while.
                time.sleep(config.min_trigger_interval_s + 0.2)
                taint = TaintWatch(admin, node_name, HEALTH_TAINT)
                try:
                    injected = time.monotonic()
                    if error == "xid":
                        nvml.control.inject_xid(gpu, 79)
                    else:
                        nvml.control.inject_ecc_error(gpu, uncorrectable=True)
                    seen = taint.wait(timeout=30)
                finally:
                    taint.close()
                if seen is None:
                    raise AssertionError(f"no health taint on {node_name} within 30 s")
                return seen - injected
            finally:
                agent.stop()
                thread.join(timeout=30)
    finally:
        api.close()
        core.delete_node(node_name)


@pytest.mark.parametrize("error", ["xid", "ecc"])
def test_agent_xid_to_health_taint_latency(
    benchmark: Any, control_plane: ControlPlane, tmp_path: Path, error: str
) -> None:
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    build_sysfs(load_profile("dgx-h100"), tmp_path / "sys")
    latencies: list[float] = []

    def run() -> None:
        for sample in range(XID_SAMPLES):
            latencies.append(xid_sample(control_plane, tmp_path / "sys", sample % 8, error))

    benchmark.pedantic(run, rounds=1, iterations=1)
    result = {
        "samples": len(latencies),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "min_s": round(min(latencies), 3),
        "max_s": round(max(latencies), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
    }
    benchmark.extra_info.update(result)
    what = "XID 79" if error == "xid" else "uncorrectable ECC error"
    print(f"\n{what} -> health taint on the Node (watch): {result}")


def test_agent_footprint_dgx_h100_default_intervals(
    benchmark: Any, control_plane: ControlPlane, tmp_path: Path
) -> None:
    admin = control_plane.admin
    ensure_nrt_crd(admin)
    node_name = f"footprint-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_node(node_body(node_name))
    result: dict[str, Any] = {}

    def run() -> None:
        with short_socket_dir() as directory:
            socket_path = os.path.join(directory, "kubelet.sock")
            extra = ["--publish-nrt", f"--pod-resources-socket={socket_path}"]
            with (
                fake_kubelet(socket_path),
                agent_process(control_plane, node_name, tmp_path, extra) as agent,
            ):
                result["ready_s"] = round(agent.wait_ready(), 2)
                result["startup_cpu_s"] = round(cpu_seconds(agent.process), 2)
                result["rss_at_ready_mib"] = round(agent.process.memory_info().rss / MiB, 1)
                cpu_start, started = cpu_seconds(agent.process), time.monotonic()
                rss: list[int] = []
                next_scrape = started
                while time.monotonic() - started < FOOTPRINT_S:
                    if time.monotonic() >= next_scrape:
                        agent.samples()
                        next_scrape += SCRAPE_EVERY_S
                    rss.append(agent.process.memory_info().rss)
                    time.sleep(1.0)
                wall = time.monotonic() - started
                cpu = cpu_seconds(agent.process) - cpu_start
                result.update(
                    duration_s=round(wall, 1),
                    cpu_percent_of_one_core=round(100 * cpu / wall, 3),
                    cpu_s=round(cpu, 2),
                    rss_max_mib=round(max(rss) / MiB, 1),
                    rss_end_mib=round(rss[-1] / MiB, 1),
                    threads=agent.process.num_threads(),
                    discoveries=agent.counter("gputopo_agent_discoveries_total", outcome="success"),
                    api_writes=agent.counter("gputopo_agent_api_writes_total", outcome="success"),
                )

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        client.CoreV1Api(admin).delete_node(node_name)
    benchmark.extra_info.update(result)
    print(f"\nagent footprint (dgx-h100 mock, default intervals): {result}")


def test_agent_node_writes_over_an_idle_hour_of_cycles(
    benchmark: Any, control_plane: ControlPlane, tmp_path: Path
) -> None:
    admin = control_plane.admin
    core = client.CoreV1Api(admin)
    node_name = f"idle-{uuid.uuid4().hex[:8]}"
    core.create_node(node_body(node_name))
    result: dict[str, Any] = {}

    def run() -> None:
        extra = ["--interval=0.5", "--jitter=0", "--no-udev", "--pod-resources-socket="]
        with agent_process(control_plane, node_name, tmp_path, extra) as agent:
            agent.wait_ready()
            # The first cycle's write is done; what follows is the idle node's steady state.
            version = core.read_node(node_name).metadata.resource_version
            writes = agent.counter("gputopo_agent_api_writes_total", outcome="success")
            first = agent.counter("gputopo_agent_discoveries_total", outcome="success")
            started = time.monotonic()
            eventually(
                lambda: (
                    agent.counter("gputopo_agent_discoveries_total", outcome="success")
                    >= first + IDLE_CYCLES
                ),
                IDLE_CYCLES * 5,
                f"{IDLE_CYCLES} cycles",
                interval_s=0.05,
            )
            result.update(
                cycles=int(
                    agent.counter("gputopo_agent_discoveries_total", outcome="success") - first
                ),
                seconds=round(time.monotonic() - started, 1),
                node_resource_version_changed=(
                    core.read_node(node_name).metadata.resource_version != version
                ),
                agent_api_writes=int(
                    agent.counter("gputopo_agent_api_writes_total", outcome="success") - writes
                ),
            )

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        core.delete_node(node_name)
    benchmark.extra_info.update(result)
    print(f"\nNode writes over {IDLE_CYCLES} idle cycles: {result}")


@pytest.mark.parametrize("nvml", ["fake", "replayed"])
def test_agent_health_tick_dgx_h100(benchmark: Any, tmp_path: Path, nvml: str) -> None:
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile("dgx-h100")
    build_sysfs(profile, tmp_path / "sys")
    fake = make_fake_pynvml(profile)
    module = fake if nvml == "fake" else ReplayedNvml(fake)
    benchmark.group = "agent health tick"
    with Discoverer(module, tmp_path / "sys", "dgx-h100") as discoverer:
        agent = Agent(discoverer, publisher=None, config=RunLoopConfig(udev=False))
        agent.run_cycle()
        agent.health_tick()
        benchmark(agent.health_tick)
    load = agent.holder.get().load
    assert load is not None and len(load.gpus) == 8
