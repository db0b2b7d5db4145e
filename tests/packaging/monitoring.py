"""What the monitoring tests share: promtool, the rule files and dashboard, and PromQL names.

The sources live in ``charts/gputopo/files`` (see :mod:`hack.monitoring`). PromQL is parsed by
promtool (Debian's prometheus package, next to the server the integration tests run); the
metric names an expression reads are picked out here with a small lexer that knows PromQL's
grammar well enough for that (strings, label matchers, ranges and grouping clauses removed;
function calls and keywords dropped), and checked against real /metrics output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.podresources import PodResourcesClient
from gputopo.agent.runloop import serve
from gputopo.agent.stats import MetricsSnapshot
from hack.monitoring import ALERTS_RULES, DASHBOARD, DCGM_RULES, rule_groups
from hack.testenv import prometheus
from tests.polling import eventually
from tests.unit.agent.fake_kubelet import fake_kubelet, short_socket_dir

__all__ = [
    "ALERTS_RULES",
    "DASHBOARD",
    "DCGM_RULES",
    "MockedAgent",
    "dashboard_expressions",
    "metric_names",
    "mocked_agent",
    "promtool",
    "rule_expressions",
    "rule_groups",
]

# Grafana's variables, replaced by values that keep an expression's PromQL shape.
GRAFANA_VARIABLES = {
    "${datasource}": "prometheus",
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$node": "dgx-test",
}

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def promtool() -> Path:
    """Debian's promtool: $PROMTOOL_BIN, else beside the Prometheus server, else on PATH."""
    configured = os.environ.get("PROMTOOL_BIN")
    if configured:
        return Path(configured)
    found = prometheus.find()
    if found is not None and (found[0].parent / "promtool").is_file():
        return found[0].parent / "promtool"
    on_path = shutil.which("promtool")
    if on_path is None:
        raise AssertionError(
            "no promtool: install Debian's `prometheus` package or set PROMTOOL_BIN"
        )
    return Path(on_path)


def run_promtool(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def substitute_variables(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (``foo{...}``, ``foo[5m]``, bare ``foo``)."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _NAME.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def rule_expressions(source: Path) -> Iterator[tuple[str, str]]:
    """(alert or record name, expression) of every rule in a rule file."""
    for group in rule_groups(source):
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def recorded_names(source: Path) -> set[str]:
    return {
        rule["record"]
        for group in rule_groups(source)
        for rule in group["rules"]
        if "record" in rule
    }


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*[A-Za-z_]\w*\)$", re.S)


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a dashboard.

    A ``label_values(SELECTOR, label)`` variable query contributes its selector.
    """
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        found.append((f"variable {variable['name']!r}", match.group(1) if match else text))
    return found


def rule_file(path: Path, expressions: list[tuple[str, str]]) -> Path:
    """A rule file recording each expression (promtool parses every ``expr`` it checks)."""
    rules = [
        {"record": f"dashboard:expression_{index}", "expr": substitute_variables(expression)}
        for index, (_, expression) in enumerate(expressions)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


class MockedAgent:
    """``gputopo-agent run``'s loop on a mocked machine (fake NVML and sysfs from a profile, a
    fake kubelet serving pod-resources), with its real /metrics server on a loopback port."""

    def __init__(self, agent: Agent, address: str, nvml: Any) -> None:
        self.agent = agent
        self.address = address
        self.control: Any = nvml.control

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=10) as response:
            text: str = response.read().decode()
        return text

    def series_names(self) -> set[str]:
        return exposition_names(self.metrics_text())


def exposition_names(text: str) -> set[str]:
    """The sample names of a Prometheus text exposition (``foo_total``, ``foo_bucket``, ...)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


@contextmanager
def mocked_agent(profile: str, workdir: Path, node_name: str = "dgx-test") -> Iterator[MockedAgent]:
    """An agent on ``profile`` whose first discovery, health tick and pod-resources poll are done;
    one container holds GPU 0 and GPU 1 (the fake kubelet)."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile(profile)
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, workdir / "sys")
    config = RunLoopConfig(
        interval_s=3600,
        health_interval_s=0.2,
        pod_resources_interval_s=0.5,
        min_trigger_interval_s=0,
        udev=False,
    )
    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with (
            fake_kubelet(socket_path) as kubelet,
            Discoverer(nvml, workdir / "sys", node_name) as discoverer,
        ):
            agent = Agent(
                discoverer,
                publisher=None,
                pod_resources=PodResourcesClient(socket_path),
                config=config,
            )
            server = serve(agent, "127.0.0.1:0", registry_version="test")
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            try:
                eventually(lambda: agent.holder.get().topology is not None, 30, "first discovery")
                topology = agent.holder.get().topology
                assert topology is not None
                kubelet.allocatable["nvidia.com/gpu"] = [
                    (gpu.uuid, gpu.numa_node) for gpu in topology.gpus if gpu.uuid
                ]
                held = [(gpu.uuid, gpu.numa_node) for gpu in topology.gpus[:2] if gpu.uuid]
                kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", held)
                # What the publisher records after a successful Node write (no API server in
                # these tests; the integration tests' publisher does it for real).
                agent.stats.record_api_write("success")
                agent.stats.record_publish_success()
                mocked = MockedAgent(agent, f"127.0.0.1:{server.port}", nvml)
                eventually(
                    lambda: _complete(agent.holder.get()), 30, "a load sample and pod-resources"
                )
                # The slow signals (NVLink states and counters) come every 10th health tick.
                eventually(
                    lambda: "gputopo_gpu_nvlink_up{" in mocked.metrics_text(), 30, "NVLink states"
                )
                yield mocked
            finally:
                agent.stop()
                thread.join(timeout=10)
                server.stop()


def _complete(snapshot: MetricsSnapshot) -> bool:
    resources = snapshot.pod_resources
    return (
        snapshot.load is not None
        and resources is not None
        and resources.allocatable is not None
        and any(allocation.pod == "trainer-0" for allocation in resources.allocations)
    )


def scheduler_series_names() -> set[str]:
    """Sample names of the scheduler's real metrics registry, each labelled family touched once."""
    from gputopo.scheduler.runtime.metrics import RuntimeState, SchedulerMetrics
    from gputopo.scheduler.runtime.queue import QueueDepth

    metrics = SchedulerMetrics(
        lambda: RuntimeState(
            queue_depth=QueueDepth(active=1, backoff=0, unschedulable=2, in_flight=0),
            leader=True,
            assumed_pods=0,
            nodes=3,
        )
    )
    metrics.bind_errors.labels("conflict").inc()
    metrics.watch_errors.labels("pods").inc()
    metrics.scheduling_duration.observe(0.01)
    metrics.bind_duration.observe(0.01)
    return exposition_names(metrics.render().decode())


def collector_series_names() -> set[str]:
    """Sample names of the agent's collector on the snapshots the mocked machines do not
    produce: NVLink error counters (the mocks' NVML has no ``nvmlDeviceGetNvLinkErrorCounter``),
    a node whose driver is gone (NVML down, GPUs on the PCI bus only) and a pre-Ampere GPU's
    retired pages (every profile's GPUs remap rows instead)."""
    from gputopo.agent.metrics import MetricsCollector, build_registry
    from gputopo.agent.topology import MemoryRepair
    from tests.unit.agent.machines import degraded, dgx_h100, nvml_down_with_gpus
    from tests.unit.agent.test_metrics import load_sample, pods, small_dgx

    retiring = MemoryRepair(retired_pages_single_bit=2, retired_pages_double_bit=1)
    names: set[str] = set()
    for snapshot in (
        MetricsSnapshot(topology=small_dgx(), load=load_sample(), pod_resources=pods()),
        MetricsSnapshot(topology=nvml_down_with_gpus()),
        MetricsSnapshot(topology=degraded(dgx_h100(), 0, memory_repair=retiring)),
    ):
        registry = build_registry(MetricsCollector(lambda snapshot=snapshot: snapshot))
        names |= exposition_names(generate_latest(registry).decode())
    return names
