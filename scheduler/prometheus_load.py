"""Node and GPU load from Prometheus, refreshed in the background, never on the scheduling path.

The agent exports per-GPU utilisation and memory (series labelled ``gpu``, ``uuid``,
``numa_node``, ``nvlink_domain``) and node CPU; Prometheus scrapes them. A `LoadTracker` runs
one PromQL query per resource every ``refresh_interval_s`` in its own thread, each with
``timeout_s``, and swaps in a new immutable `LoadSnapshot` when all answered. A scheduling
cycle only reads the latest snapshot: with Prometheus slow or down, scheduling goes on at full
speed and load simply becomes unknown.

Unknown is neutral, never a verdict: a node whose metrics are missing, or whose newest sample
(``gputopo_agent_load_sample_timestamp_seconds``) or whose whole snapshot is older than
``max_age_s``, passes the threshold filter and scores in the middle of the known nodes.

Anti-herd: Prometheus sees a just-bound pod's load only a scrape and a window later, so until a
node's samples are newer than the bind plus ``settle_s``, every pod bound there counts with an
estimate (``bound_gpu_utilization`` per GPU it holds, ``bound_cpu`` of the node per pod) — a
burst of pods does not all land on the node that looked idle a second ago.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.scheduler.errors import SchedulerInputError

log = logging.getLogger(__name__)

GPU_UTILIZATION: Final = "gpu_utilization"
GPU_MEMORY: Final = "gpu_memory"
NODE_CPU: Final = "node_cpu"
SAMPLE_TIME: Final = "sample_time"
RESOURCES: Final = (GPU_UTILIZATION, GPU_MEMORY, NODE_CPU)

_NODE_JOIN: Final = " * on (instance) group_left (node) max by (instance, node) (gputopo_node_info)"

# `{window}` is replaced by the configured window ("2m"); `node` comes from gputopo_node_info.
DEFAULT_QUERIES: Final = {
    GPU_UTILIZATION: "avg_over_time(gputopo_gpu_utilization_ratio[{window}])" + _NODE_JOIN,
    GPU_MEMORY: (
        "(avg_over_time(gputopo_gpu_memory_used_bytes[{window}])"
        " / avg_over_time(gputopo_gpu_memory_total_bytes[{window}]))" + _NODE_JOIN
    ),
    NODE_CPU: "avg_over_time(gputopo_node_cpu_utilization_ratio[{window}])" + _NODE_JOIN,
    SAMPLE_TIME: "gputopo_agent_load_sample_timestamp_seconds" + _NODE_JOIN,
}


MAX_QUERY_LENGTH: Final = 4096
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CLOSING: Final = {")": "(", "]": "[", "}": "{"}


def check_query(name: str, promql: str) -> None:
    """Refuse a PromQL template that can never be a valid query, at start-up rather than as a
    failed refresh every interval forever: empty, over :data:`MAX_QUERY_LENGTH` characters,
    with a control character, a placeholder other than ``{window}``, an unterminated string
    or unbalanced brackets. PromQL's own grammar is Prometheus' to check; these are the
    mistakes a template makes."""
    flag = f"--load-query {name}"
    if not promql.strip():
        raise SchedulerInputError(f"{flag}: expected a PromQL expression, got an empty one")
    if len(promql) > MAX_QUERY_LENGTH:
        raise SchedulerInputError(f"{flag}: longer than {MAX_QUERY_LENGTH} characters")
    if any(not character.isprintable() for character in promql):
        raise SchedulerInputError(f"{flag}: contains a control character")
    for placeholder in _PLACEHOLDER.findall(promql):
        if placeholder != "window":
            raise SchedulerInputError(
                f"{flag}: unknown placeholder {{{placeholder}}} (only {{window}} is substituted)"
            )
    open_brackets: list[str] = []
    quote: str | None = None
    escaped = False
    for character in promql:
        if quote is not None:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == quote:
                quote = None
        elif character in "\"'`":
            quote = character
        elif character in "([{":
            open_brackets.append(character)
        elif character in _CLOSING and (
            not open_brackets or open_brackets.pop() != _CLOSING[character]
        ):
            raise SchedulerInputError(f"{flag}: unbalanced {character!r} in {promql[:80]!r}")
    if quote is not None:
        raise SchedulerInputError(f"{flag}: unterminated string in {promql[:80]!r}")
    if open_brackets:
        raise SchedulerInputError(f"{flag}: unclosed {open_brackets[-1]!r} in {promql[:80]!r}")


@dataclass(frozen=True)
class LoadConfig:
    """Where and how load is read. Thresholds are off unless set (ratios 0..1 per resource)."""

    url: str
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    window_s: float = 60.0
    timeout_s: float = 2.0
    refresh_interval_s: float = 10.0
    max_age_s: float = 120.0
    thresholds: Mapping[str, float] = field(default_factory=dict)
    bound_gpu_utilization: float = 0.8
    bound_cpu: float = 0.05
    settle_s: float = 0.0  # extra wait after a bind before samples are trusted; 0 = the window
    resource_weights: Mapping[str, float] = field(
        default_factory=lambda: {GPU_UTILIZATION: 2.0, GPU_MEMORY: 1.0, NODE_CPU: 1.0}
    )

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SchedulerInputError(
                f"--prometheus-url {self.url!r}: expected http(s)://host:port"
            )
        for name, value in self.thresholds.items():
            if name not in RESOURCES:
                raise SchedulerInputError(
                    f"--load-threshold {name}: expected one of {', '.join(RESOURCES)}"
                )
            if not 0 < value <= 1:
                raise SchedulerInputError(
                    f"--load-threshold {name}={value}: expected a ratio in (0, 1]"
                )
        for name in (SAMPLE_TIME, *RESOURCES):
            if name not in self.queries:
                raise SchedulerInputError(f"load query {name!r} is missing")
        for name, promql in self.queries.items():
            check_query(name, promql)

    @property
    def window(self) -> str:
        return f"{max(1, math.ceil(self.window_s))}s"

    def promql(self, name: str) -> str:
        return self.queries[name].replace("{window}", self.window)

    @property
    def settle(self) -> float:
        return self.settle_s or self.window_s


@dataclass(frozen=True)
class LoadSnapshot:
    """One complete read of Prometheus: per node CPU, per (node, gpu) utilisation/memory."""

    fetched_at: float  # wall-clock (Unix) time of the read
    node_cpu: Mapping[str, float] = field(default_factory=dict)
    gpu_utilization: Mapping[tuple[str, int], float] = field(default_factory=dict)
    gpu_memory: Mapping[tuple[str, int], float] = field(default_factory=dict)
    sample_time: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeLoad:
    """One node's load as the scheduler sees it now (estimates included); None = unknown."""

    gpu_utilization: Mapping[int, float]
    gpu_memory: Mapping[int, float]
    cpu: float | None

    def gpu_mean(self, resource: str, gpus: tuple[int, ...] | None = None) -> float | None:
        values = self.gpu_utilization if resource == GPU_UTILIZATION else self.gpu_memory
        picked = [values[g] for g in (gpus if gpus is not None else values) if g in values]
        return sum(picked) / len(picked) if picked else None


class PromQLError(RuntimeError):
    pass


def instant_query(url: str, promql: str, timeout: float) -> list[tuple[dict[str, str], float]]:
    """Run one instant query; (labels, value) per series. Raises PromQLError on any failure."""
    target = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise PromQLError(f"query {promql!r} at {url}: {error}") from None
    if body.get("status") != "success":
        raise PromQLError(f"query {promql!r} at {url}: {body.get('error', body)}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PromQLError(f"query {promql!r}: expected a vector, got {data.get('resultType')}")
    out: list[tuple[dict[str, str], float]] = []
    for series in data.get("result") or []:
        value = float(series["value"][1])
        if math.isfinite(value):
            out.append((dict(series.get("metric") or {}), value))
    return out


@dataclass
class _Bound:
    at: float  # wall-clock time of the bind
    gpus: tuple[int, ...]


class LoadTracker:
    """The latest LoadSnapshot plus binds not yet visible in it; refreshed by a daemon thread."""

    def __init__(
        self,
        config: LoadConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        query: Callable[[str, str, float], list[tuple[dict[str, str], float]]] = instant_query,
    ) -> None:
        self.config = config
        self.wall_clock = wall_clock
        self._query = query
        self.snapshot: LoadSnapshot | None = None
        self._bound: dict[str, list[_Bound]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ refresh

    def refresh_once(self) -> bool:
        """Read every query; swap in the new snapshot only if all answered."""
        config = self.config
        results: dict[str, list[tuple[dict[str, str], float]]] = {}
        try:
            for name in (*RESOURCES, SAMPLE_TIME):
                results[name] = self._query(config.url, config.promql(name), config.timeout_s)
        except PromQLError as error:
            self.failures += 1
            self.last_error = str(error)
            log.warning("load refresh failed (load is unknown until it works): %s", error)
            return False
        node_cpu: dict[str, float] = {}
        sample_time: dict[str, float] = {}
        per_gpu: dict[str, dict[tuple[str, int], float]] = {GPU_UTILIZATION: {}, GPU_MEMORY: {}}
        for labels, value in results[NODE_CPU]:
            if labels.get("node"):
                node_cpu[labels["node"]] = value
        for labels, value in results[SAMPLE_TIME]:
            if labels.get("node"):
                sample_time[labels["node"]] = max(value, sample_time.get(labels["node"], 0.0))
        for name, target in per_gpu.items():
            for labels, value in results[name]:
                node, gpu = labels.get("node"), labels.get("gpu", "")
                if node and gpu.isdigit():
                    target[(node, int(gpu))] = value
        snapshot = LoadSnapshot(
            fetched_at=self.wall_clock(),
            node_cpu=node_cpu,
            gpu_utilization=per_gpu[GPU_UTILIZATION],
            gpu_memory=per_gpu[GPU_MEMORY],
            sample_time=sample_time,
        )
        with self._lock:
            self.snapshot = snapshot
            self._expire_bound(snapshot)
        self.refreshes += 1
        self.last_error = None
        return True

    def start(self) -> None:
        """Refresh in a daemon thread until `stop()`; the first read starts immediately."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s * 5 + 1)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # a bug here must not kill the thread; load goes stale
                self.failures += 1
                log.exception("load refresh crashed")
            self._stop.wait(self.config.refresh_interval_s)

    # ------------------------------------------------------------ anti-herd

    def note_bound(self, node: str, gpus: tuple[int, ...]) -> None:
        """Count a just-bound pod on `node` (holding `gpus`) until the metrics show it."""
        with self._lock:
            self._bound.setdefault(node, []).append(_Bound(self.wall_clock(), gpus))

    def _expire_bound(self, snapshot: LoadSnapshot) -> None:
        settle = self.config.settle
        now = snapshot.fetched_at
        for node in list(self._bound):
            sampled = snapshot.sample_time.get(node)
            keep = [
                bound
                for bound in self._bound[node]
                if (sampled is None or sampled < bound.at + settle)
                and now - bound.at < self.config.max_age_s + settle
            ]
            if keep:
                self._bound[node] = keep
            else:
                del self._bound[node]

    # ------------------------------------------------------------ queries

    def fresh(self) -> LoadSnapshot | None:
        snapshot = self.snapshot
        if snapshot is None or self.wall_clock() - snapshot.fetched_at > self.config.max_age_s:
            return None
        return snapshot

    def node_load(self, node: str, snapshot: LoadSnapshot | None = None) -> NodeLoad | None:
        """The node's load with pending binds added; None when unknown or too old."""
        snapshot = snapshot or self.fresh()
        if snapshot is None:
            return None
        sampled = snapshot.sample_time.get(node)
        if sampled is None or self.wall_clock() - sampled > self.config.max_age_s:
            return None
        gpu_utilization = {
            gpu: value for (name, gpu), value in snapshot.gpu_utilization.items() if name == node
        }
        gpu_memory = {
            gpu: value for (name, gpu), value in snapshot.gpu_memory.items() if name == node
        }
        cpu = snapshot.node_cpu.get(node)
        with self._lock:
            pending = list(self._bound.get(node, ()))
        for bound in pending:
            for gpu in bound.gpus:
                if gpu in gpu_utilization:
                    gpu_utilization[gpu] = min(
                        1.0, gpu_utilization[gpu] + self.config.bound_gpu_utilization
                    )
            if cpu is not None:
                cpu = min(1.0, cpu + self.config.bound_cpu)
        if not gpu_utilization and not gpu_memory and cpu is None:
            return None
        return NodeLoad(gpu_utilization, gpu_memory, cpu)
