"""The running agent under faults, against a real kube-apiserver: the API server going away,
a GPU falling off the bus, NVML failing for a while, and garbage configuration.

Machine: the mocked DGX H100 (fake pynvml + fake sysfs from the `dgx-h100` profile), the
agent in-process (:class:`agent.loop.Agent` with its metrics server), except for the
configuration tests, which run the installed ``gputopo-agent`` command as a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.runloop import serve
from gputopo.core.kube import KubeClient, load_kubeconfig
from gputopo.core.serve import ProbeServer
from hack.testenv import Tools
from tests.controlplane import ClusterObjects, ControlPlane, ManagedProcess, running_control_plane
from tests.polling import eventually

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"
HEALTH_TAINT = "gputopo.io/gpu-health"
AGENT = Path(sys.executable).parent / "gputopo-agent"


# -- the agent, in-process ----------------------------------------------------------------------


@dataclass
class RunningAgent:
    agent: Agent
    control: Any  # mocks.fake_pynvml.FakeNvmlControl
    server: ProbeServer

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.server.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape of /metrics: (sample name, sorted labels) -> value."""
        status, text = self.get("/metrics")
        assert status == 200, text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def gpu_sample(self, name: str, gpu: int, **labels: str) -> float | None:
        for (sample_name, sample_labels), value in self.samples().items():
            found = dict(sample_labels)
            if (
                sample_name == name
                and found.get("gpu") == str(gpu)
                and all(found.get(key) == wanted for key, wanted in labels.items())
            ):
                return value
        return None


@contextlib.contextmanager
def running_agent(
    plane: ControlPlane, node_name: str, sysfs_root: Path, config: RunLoopConfig
) -> Iterator[RunningAgent]:
    """The agent publishing through its own client (gputopo.core.kube), as the admin."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile(PROFILE)
    nvml = make_fake_pynvml(profile)
    build_sysfs(profile, sysfs_root)
    api = KubeClient(load_kubeconfig(str(plane.admin_kubeconfig)))
    with Discoverer(nvml, sysfs_root, node_name) as discoverer:
        agent = Agent(discoverer, publisher=Publisher(api, node_name), config=config)
        server = serve(agent, "127.0.0.1:0", registry_version="test")
        thread = threading.Thread(target=agent.run, name="agent-under-test", daemon=True)
        thread.start()
        try:
            yield RunningAgent(agent, nvml.control, server)
        finally:
            agent.stop()
            thread.join(timeout=30)
            server.stop()
            api.close()
        assert not thread.is_alive(), "the agent did not stop"


def read_node(api: client.ApiClient, name: str) -> client.V1Node:
    return client.CoreV1Api(api).read_node(name)


def labels_of(node: client.V1Node) -> dict[str, str]:
    return dict(node.metadata.labels or {})


def taints_of(node: client.V1Node) -> dict[str, str]:
    return {t.key: f"{t.value}:{t.effect}" for t in node.spec.taints or []}


def bare_node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}


# -- API server outage --------------------------------------------------------------------------


def _apiserver(plane: ControlPlane) -> ManagedProcess:
    (process,) = [p for p in plane.processes if p.name == "kube-apiserver"]
    return process


def _apiserver_ready(plane: ControlPlane) -> bool:
    assert plane.pki is not None
    context = ssl.create_default_context(cafile=str(plane.pki.ca_file))
    request = urllib.request.Request(f"{plane.url}/readyz")
    request.add_header("Authorization", f"Bearer {plane.admin_token}")
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return bool(response.read().decode().strip() == "ok")


def stop_apiserver(plane: ControlPlane) -> ManagedProcess:
    """SIGTERM the kube-apiserver (etcd keeps the data): connections now get refused."""
    process = _apiserver(plane)
    process.stop()
    return process


def restart_apiserver(plane: ControlPlane, stopped: ManagedProcess) -> None:
    """The same kube-apiserver again (same port, certificates, etcd), until ready."""
    process = ManagedProcess(stopped.name, stopped.argv, stopped.log_path, plane.workdir)
    plane.processes[plane.processes.index(stopped)] = process
    process.wait_until(lambda: _apiserver_ready(plane), 60.0, "ready again (/readyz)")


@pytest.fixture
def private_control_plane(testenv_tools: Tools, tmp_path: Path) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for this test alone: it stops the API server."""
    with running_control_plane(testenv_tools, tmp_path / "controlplane") as plane:
        yield plane


def test_api_server_outage_during_run_keeps_the_agent_alive_and_it_converges(
    private_control_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = private_control_plane
    admin = plane.admin
    node_name = f"dgx-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_node(bare_node(node_name))
    config = RunLoopConfig(
        interval_s=2.0, health_interval_s=0.2, min_trigger_interval_s=0.5, udev=False
    )
    with running_agent(plane, node_name, tmp_path / "sys", config) as running:
        agent = running.agent
        eventually(lambda: agent.readiness()[0], what="first publish")
        before = read_node(admin, node_name)
        assert labels_of(before)["nvidia.com/gpu.count"] == "8"
        assert HEALTH_TAINT not in taints_of(before)

        stopped = stop_apiserver(plane)
        try:
            running.control.inject_xid(4, 79)  # GPU 4 falls off the bus while nobody listens
            eventually(
                lambda: not agent.readiness()[0],
                timeout_s=90,
                what="a publish failing on the outage",
            )
            reason = agent.readiness()[1]
            assert "last publish failed" in reason and "Connection refused" in reason, reason
            # Alive and observable throughout: probes, health poll and metrics keep going.
            assert running.get("/healthz")[0] == 200
            assert running.get("/readyz")[0] == 503
            beat = agent._last_health_beat
            eventually(lambda: agent._last_health_beat > beat, timeout_s=5, what="a health tick")
            samples = running.samples()
            assert samples[("gputopo_agent_api_writes_total", (("outcome", "error"),))] >= 1
            assert running.gpu_sample("gputopo_gpu_xid_errors_total", 4, xid="79") == 1
            assert running.gpu_sample("gputopo_gpu_health", 4, state="failed") == 1
        finally:
            restart_apiserver(plane, stopped)

        # Converges by itself on a later cycle: the taint that arose during the outage lands.
        eventually(
            lambda: HEALTH_TAINT in taints_of(read_node(admin, node_name)),
            timeout_s=90,
            what="the health taint after the outage",
        )
        eventually(lambda: agent.readiness()[0], timeout_s=30, what="ready again")
        after = read_node(admin, node_name)
        assert taints_of(after)[HEALTH_TAINT] == "failed:NoSchedule"
        assert set(labels_of(before)) <= set(labels_of(after))
        assert labels_of(after)["nvidia.com/gpu.count"] == "8"
        assert running.get("/readyz")[0] == 200
        assert agent.liveness() == (True, "ok")


# -- NVML faults --------------------------------------------------------------------------------


@pytest.fixture
def node_name(cluster_objects: ClusterObjects) -> str:
    name = f"dgx-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node(bare_node(name))
    return name


def test_gpu_lost_mid_run_keeps_metrics_and_labels_and_taints_the_node(
    control_plane: ControlPlane, kube_admin: client.ApiClient, node_name: str, tmp_path: Path
) -> None:
    config = RunLoopConfig(
        interval_s=3600, health_interval_s=0.2, min_trigger_interval_s=0.5, udev=False
    )
    with running_agent(control_plane, node_name, tmp_path / "sys", config) as running:
        agent, control = running.agent, running.control
        eventually(lambda: agent.readiness()[0], what="first publish")
        before = read_node(kube_admin, node_name)
        assert HEALTH_TAINT not in taints_of(before)
        cycles = agent.cycles

        control.set_lost(3)  # NVML answers GPU_IS_LOST for GPU 3 from now on
        eventually(
            lambda: HEALTH_TAINT in taints_of(read_node(kube_admin, node_name)),
            timeout_s=20,
            what="the health taint",
        )
        assert agent.cycles > cycles  # the health poll triggered it, not the hourly schedule
        after = read_node(kube_admin, node_name)
        assert taints_of(after)[HEALTH_TAINT] == "failed:NoSchedule"
        stripped = set(labels_of(before)) - set(labels_of(after))
        assert not stripped, f"labels removed on a lost GPU: {sorted(stripped)}"
        for key in ("nvidia.com/gpu.product", "nvidia.com/gpu.memory", "gputopo.io/gpu.present"):
            assert labels_of(after)[key] == labels_of(before)[key], key
        # Usable GPUs of the model, as for the dgx-h100-degraded profile (docs/labels.md).
        assert labels_of(after)["nvidia.com/gpu.count"] == "7"
        assert labels_of(after)["gputopo.io/gpu.health"] == "failed"

        # The lost GPU shows as lost and failed; the seven others keep reporting live load.
        eventually(lambda: running.gpu_sample("gputopo_gpu_lost", 3) == 1, what="gpu_lost 1")
        assert running.gpu_sample("gputopo_gpu_health", 3, state="failed") == 1
        for utilization in (37, 81):
            for gpu in (0, 7):
                control.set_utilization(gpu, gpu=utilization)
            eventually(
                lambda u=utilization: all(  # type: ignore[misc]
                    running.gpu_sample("gputopo_gpu_utilization_ratio", gpu) == u / 100
                    for gpu in (0, 7)
                ),
                timeout_s=10,
                what=f"utilization {utilization} % on the healthy GPUs",
            )
        for gpu in (0, 1, 2, 4, 5, 6, 7):
            assert running.gpu_sample("gputopo_gpu_lost", gpu) == 0, gpu
            assert running.gpu_sample("gputopo_gpu_health", gpu, state="ok") == 1, gpu
            assert running.gpu_sample("gputopo_gpu_temperature_celsius", gpu) is not None, gpu
        assert running.gpu_sample("gputopo_gpu_utilization_ratio", 3) is None
        assert agent.liveness() == (True, "ok")


def test_nvml_failing_for_several_cycles_changes_nothing_on_the_node(
    control_plane: ControlPlane, kube_admin: client.ApiClient, node_name: str, tmp_path: Path
) -> None:
    config = RunLoopConfig(
        interval_s=0.5, jitter=0.0, health_interval_s=0.2, min_trigger_interval_s=0.5, udev=False
    )
    with running_agent(control_plane, node_name, tmp_path / "sys", config) as running:
        agent, control = running.agent, running.control
        eventually(lambda: agent.readiness()[0], what="first publish")
        before = read_node(kube_admin, node_name)
        writes = agent.stats.snapshot().api_writes.get("success", 0)
        failed_discoveries = agent.stats.snapshot().discoveries.get("error", 0)

        control.inject_error("nvmlDeviceGetCount", "UNKNOWN")  # NVML broken node-wide
        eventually(
            lambda: agent.stats.snapshot().discoveries.get("error", 0) >= failed_discoveries + 4,
            timeout_s=30,
            what="four failed discoveries",
        )
        assert agent.liveness() == (True, "ok")
        assert running.samples()[("gputopo_nvml_up", ())] == 0
        during = read_node(kube_admin, node_name)
        assert during.metadata.resource_version == before.metadata.resource_version
        assert labels_of(during) == labels_of(before)

        control.clear_errors()
        cycles = agent.cycles
        eventually(lambda: agent.cycles >= cycles + 3, what="three cycles after recovery")
        eventually(
            lambda: running.samples()[("gputopo_nvml_up", ())] == 1, what="nvml_up back to 1"
        )
        after = read_node(kube_admin, node_name)
        assert after.metadata.resource_version == before.metadata.resource_version
        assert agent.stats.snapshot().api_writes.get("success", 0) == writes


def test_an_nvml_function_the_driver_lacks_is_not_asked_every_second(
    control_plane: ControlPlane, node_name: str, tmp_path: Path
) -> None:
    """The fake, like an older driver, has no nvmlDeviceGetNvLinkErrorCounter: FUNCTION_NOT_FOUND
    once, then the once-a-second load sample stops asking (8 GPUs x 18 links x 4 counters)."""
    config = RunLoopConfig(
        interval_s=3600, health_interval_s=0.1, min_trigger_interval_s=0.5, udev=False
    )
    with running_agent(control_plane, node_name, tmp_path / "sys", config) as running:
        eventually(lambda: running.agent.readiness()[0], what="first publish")
        calls = running.control.calls
        ticks = calls["nvmlDeviceGetUtilizationRates"]
        eventually(lambda: calls["nvmlDeviceGetUtilizationRates"] >= ticks + 8 * 10, what="ticks")
        assert calls["nvmlDeviceGetNvLinkErrorCounter"] == 1
        assert running.gpu_sample("gputopo_gpu_nvlink_up", 0, link="0") == 1


def test_an_idle_hour_of_cycles_makes_no_node_writes(
    control_plane: ControlPlane, kube_admin: client.ApiClient, node_name: str, tmp_path: Path
) -> None:
    """Sixty cycles, the discoveries of an hour at the default 60 s interval, on a node where
    nothing changes: the first cycle writes, the other sixty write nothing."""
    config = RunLoopConfig(
        interval_s=0.2, jitter=0.0, health_interval_s=0.2, min_trigger_interval_s=0.2, udev=False
    )
    with running_agent(control_plane, node_name, tmp_path / "sys", config) as running:
        agent = running.agent
        eventually(lambda: agent.readiness()[0], what="first publish")
        version = read_node(kube_admin, node_name).metadata.resource_version
        writes = agent.stats.snapshot().api_writes.get("success", 0)
        assert writes == 1
        cycles = agent.cycles
        eventually(lambda: agent.cycles >= cycles + 60, timeout_s=120, what="sixty cycles")
        assert read_node(kube_admin, node_name).metadata.resource_version == version
        assert agent.stats.snapshot().api_writes == {"success": 1}
        assert running.samples()[("gputopo_agent_api_writes_total", (("outcome", "success"),))] == 1


# -- garbage configuration ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "profile-not-yaml": ("profile.yaml", "name: broken\ngpus: [1, 2\n"),
        "profile-wrong-shape": ("shape.yaml", "name: shapeless\ngpus: seven\n"),
        "kubeconfig-not-yaml": ("not-yaml.kubeconfig", "clusters: [\n"),
        "kubeconfig-wrong-shape": ("list.kubeconfig", "- 1\n- 2\n"),
    }
    paths = {key: directory / name for key, (name, _) in files.items()}
    for key, (_, text) in files.items():
        paths[key].write_text(text)
    paths["kubeconfig-directory"] = directory
    paths["missing"] = directory / "does-not-exist.kubeconfig"
    return paths


# (case, extra argv with {placeholders} from bad_inputs, extra environment, what stderr names)
GARBAGE: list[tuple[str, list[str], dict[str, str], str]] = [
    ("flag not a number", ["--interval", "abc"], {}, "--interval"),
    ("flag out of range", ["--jitter", "2"], {}, "--jitter"),
    ("flag not an address", ["--metrics-address", "nowhere"], {}, "--metrics-address"),
    ("flag not a choice", ["--health-taint-effect", "Evict"], {}, "--health-taint-effect"),
    ("env twin not a number", [], {"GPUTOPO_JITTER": "abc"}, "GPUTOPO_JITTER"),
    ("env twin not a choice", [], {"GPUTOPO_LOG_LEVEL": "verbose"}, "GPUTOPO_LOG_LEVEL"),
    ("env twin not an address", [], {"GPUTOPO_METRICS_ADDRESS": "x"}, "--metrics-address"),
    ("profile not YAML", ["--mock", "{profile-not-yaml}"], {}, "--mock"),
    ("profile of the wrong shape", ["--mock", "{profile-wrong-shape}"], {}, "--mock"),
    ("profile missing", ["--mock", "{missing}"], {}, "--mock"),
    ("kubeconfig missing", ["--kubeconfig", "{missing}"], {}, "--kubeconfig"),
    ("kubeconfig unreadable", ["--kubeconfig", "{kubeconfig-directory}"], {}, "--kubeconfig"),
    ("kubeconfig not YAML", ["--kubeconfig", "{kubeconfig-not-yaml}"], {}, "--kubeconfig"),
    ("kubeconfig wrong shape", ["--kubeconfig", "{kubeconfig-wrong-shape}"], {}, "--kubeconfig"),
]


@pytest.mark.parametrize(
    ("argv", "environment", "named"),
    [pytest.param(argv, env, named, id=case) for case, argv, env, named in GARBAGE],
)
def test_garbage_configuration_is_one_line_and_a_nonzero_exit(
    control_plane: ControlPlane,
    bad_inputs: dict[str, Path],
    argv: list[str],
    environment: dict[str, str],
    named: str,
    tmp_path: Path,
) -> None:
    """`gputopo-agent run` as a DaemonSet would start it, with one bad input each; the real
    API server's kubeconfig unless the kubeconfig is the bad input."""
    arguments = [part.format(**{k: str(v) for k, v in bad_inputs.items()}) for part in argv]
    base = ["run", "--node-name", "faults", "--no-udev", "--pod-resources-socket", ""]
    if "--mock" not in arguments:
        base += ["--mock", PROFILE]
    if "--kubeconfig" not in arguments:
        base += ["--kubeconfig", str(control_plane.admin_kubeconfig)]
    if "--metrics-address" not in arguments and "GPUTOPO_METRICS_ADDRESS" not in environment:
        base += ["--metrics-address", "127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTOPO_")}
    env.update(environment)
    result = subprocess.run(
        [str(AGENT), *base, *arguments],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert named in lines[0], lines[0]
    assert result.stdout == ""
