"""The long-running agent's loop: when to run the one publishing cycle, and the work between.

Four triggers, one publishing path. Every trigger ends in the same cycle the publishing layer
defines for ``run --once`` (:func:`agent.publish.cycle.run_cycle`: discover, then publish what
changed); this module only decides *when*:

- a full discovery every ``--interval`` seconds (default 60) with ±``--jitter`` so a fleet's
  agents do not hit the apiserver in step;
- a health tick every ``--health-interval`` second(s): the adapter's fast health signals plus a
  load sample for ``/metrics``; a GPU newly lost triggers an immediate cycle;
- an event watcher asleep in NVML's event wait (``nvmlEventSetWait``): a new XID or
  uncorrectable (double-bit) ECC error wakes it and triggers an immediate cycle, so the health
  taint follows within a fraction of a second (where NVML cannot wait, it polls every 0.2 s);
  an XID that has not recurred for ``--xid-window`` stops counting for health, except those
  that need a GPU reset (:class:`agent.nvml.XidDecay`);
- a udev monitor (:mod:`agent.triggers`): an NVIDIA PCI device added, removed, bound or unbound
  triggers an immediate rediscovery (GPU hotplug, driver reload); SIGHUP triggers a cycle.

While the GPU Operator upgrades the node's driver (its label
``nvidia.com/gpu-driver-upgrade-state``, read every ``upgrade_poll_interval_s``;
:mod:`agent.driver_upgrade`) the agent releases NVML — event thread stopped, no samples, no
discoveries, no Node writes — and keeps serving ``/metrics`` and its probes; it reopens NVML and
rediscovers when the upgrade moves on.

Immediate cycles are rate-limited (``min_trigger_interval_s``) so an XID storm cannot become an
API-write storm. Time is read through an injected :class:`agent.clock.Clock`, so tests move it
by hand. The flags, logging and the metrics server around the loop are :mod:`agent.runloop`'s.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from gputopo.agent.clock import Clock, SystemClock
from gputopo.agent.discovery import Discoverer
from gputopo.agent.driver_upgrade import DEFAULT_UPGRADE_POLL_S, UPGRADE_STATE_LABEL, releases_nvml
from gputopo.agent.nvml import HealthPoll
from gputopo.agent.podresources import (
    PodResourcesClient,
    PodResourcesSnapshot,
    available_gpus_by_numa_node,
    unavailable,
)
from gputopo.agent.publish.calls import PublishResult
from gputopo.agent.publish.cycle import CycleResult, DeviceTaintWriter, NrtWriter, run_cycle
from gputopo.agent.publish.desired import is_successful_discovery
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.stats import AgentStats, SnapshotHolder
from gputopo.agent.topology import NodeTopology, count_nvml_errors
from gputopo.agent.triggers import UdevMonitor, open_udev_monitor, watch_udev
from gputopo.agent.usage import LoadSampler

log = logging.getLogger(__name__)

# Every how many health ticks the slow-changing signals (NVLink states, lifetime ECC counts,
# retired pages, remapped rows) are re-read; in between the tick reuses them (most of its NVML
# calls). The Node is unaffected: discovery reads everything. At the default 1 s: every 10 s.
SLOW_SIGNALS_EVERY = 10
# How often the health tick asks the kubelet which GPUs are allocated. NFD's topology-updater
# re-reads pod-resources every 60 s; 10 s keeps the NodeResourceTopology's "available" within
# a few seconds of a pod starting at a fraction of the CPU of a 5 s poll (docs/performance.md).
DEFAULT_POD_RESOURCES_INTERVAL_S = 10.0
# NVML's answer when its user-space library and the loaded kernel driver differ in version
# (NVML_ERROR_LIB_RM_VERSION_MISMATCH, nvidia-smi's "Driver/library version mismatch").
LIBRARY_MISMATCH = "LibRmVersionMismatch"
# What run() returns when the agent must be restarted to go on.
EXIT_RESTART = 3


@dataclass(frozen=True)
class RunLoopConfig:
    interval_s: float = 60.0
    jitter: float = 0.1
    health_interval_s: float = 1.0
    xid_interval_s: float = 0.2  # event poll period where NVML cannot block on events
    event_wait_s: float = 1.0  # longest single wait in NVML for an event (stop latency)
    pod_resources_interval_s: float = DEFAULT_POD_RESOURCES_INTERVAL_S
    min_trigger_interval_s: float = 5.0
    dry_run: bool = False
    udev: bool = True
    upgrade_poll_interval_s: float = DEFAULT_UPGRADE_POLL_S

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"--interval {self.interval_s}: must be positive")
        if self.health_interval_s <= 0:
            raise ValueError(f"--health-interval {self.health_interval_s}: must be positive")
        if not 0 <= self.jitter <= 0.5:
            raise ValueError(f"--jitter {self.jitter}: must be between 0 and 0.5")
        if self.pod_resources_interval_s <= 0:
            raise ValueError(
                f"--pod-resources-interval {self.pod_resources_interval_s}: must be positive"
            )
        if self.min_trigger_interval_s < 0:
            raise ValueError(f"--min-trigger-interval {self.min_trigger_interval_s}: negative")
        if self.upgrade_poll_interval_s <= 0:
            raise ValueError(
                f"--driver-upgrade-poll-interval {self.upgrade_poll_interval_s}: must be positive"
            )


class Agent:
    """Discovery, health, metrics and publishing for one node, until :meth:`stop`.

    ``clock`` is the real one unless a test hands in a fake to move time by hand."""

    def __init__(
        self,
        discoverer: Discoverer,
        *,
        publisher: Publisher | None,
        nrt: NrtWriter | None = None,
        device_taints: DeviceTaintWriter | None = None,
        pod_resources: PodResourcesClient | None = None,
        config: RunLoopConfig | None = None,
        holder: SnapshotHolder | None = None,
        stats: AgentStats | None = None,
        load_sampler: LoadSampler | None = None,
        udev_monitor_factory: Callable[[], UdevMonitor] | None = open_udev_monitor,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        upgrade_state: Callable[[], str | None] | None = None,
    ) -> None:
        self.discoverer = discoverer
        self.publisher = publisher
        self.nrt = nrt
        self.device_taints = device_taints
        self.pod_resources = pod_resources
        self.config = config or RunLoopConfig()
        self.holder = holder or SnapshotHolder()
        self.stats = stats or AgentStats()
        self.load_sampler = load_sampler or LoadSampler(discoverer.sysfs.root)
        self.udev_monitor_factory = udev_monitor_factory if self.config.udev else None
        self.rng = rng or random.Random()
        self.clock: Clock = clock or SystemClock()
        self._stop = self.clock.event()
        self._wake = self.clock.event()
        self._trigger_lock = threading.Lock()
        self._trigger_reasons: list[str] = []
        self._cycle_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_cycle_result: CycleResult | None = None
        self._last_loop_beat = self.clock.monotonic()
        self._last_health_beat = self.clock.monotonic()
        self._xid_total = 0
        self._health_ticks = 0
        self._ecc_total = 0
        self._lost: frozenset[int] = frozenset()
        self._nvml_errors: dict[str, tuple[str, ...]] = {}
        self._counter_baseline: dict[str, int] = {}
        self._published_allocations: frozenset[str] | None = None
        self._pods_read_at = 0.0
        self.cycles = 0
        # The GPU Operator's driver upgrade (agent.driver_upgrade): where to read its state,
        # the state NVML is released for (None: NVML is the agent's), and whether NVML still
        # has to be opened again after one (the new driver may not be loaded at once).
        self.upgrade_state = upgrade_state
        self._released_for: str | None = None
        self._reopen_pending = False
        self._upgrade_checked_at: float | None = None
        self._upgrade_lock = threading.Lock()
        self._events_stop = self.clock.event()
        self._events_thread: threading.Thread | None = None
        # Set when the agent must be restarted to go on (run() returns it): after a driver
        # upgrade to another version, NVML's library in this container is the old driver's.
        self.exit_status = 0

    # -- triggers ---------------------------------------------------------------------------

    def trigger(self, reason: str) -> None:
        """Ask for a cycle now (rate-limited by ``min_trigger_interval_s``)."""
        with self._trigger_lock:
            self._trigger_reasons.append(reason)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._events_stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- probes -----------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        now = self.clock.monotonic()
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead and not self.stopping:
            return False, "stopped threads: " + ", ".join(dead)
        # The main loop wakes at least once per interval (plus jitter and one cycle's time).
        loop_limit = self.config.interval_s * (1 + self.config.jitter) * 3 + 60
        if now - self._last_loop_beat > loop_limit:
            return False, f"main loop silent for {now - self._last_loop_beat:.0f}s"
        health_limit = max(30.0, self.config.health_interval_s * 30)
        if self._threads and now - self._last_health_beat > health_limit:
            return False, f"health poll silent for {now - self._last_health_beat:.0f}s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        released_for = self._released_for
        if released_for is not None:
            # Ready: /metrics must stay scraped (and the pod in its Service) while it lasts.
            return True, f"driver upgrade in progress ({released_for}): NVML released"
        result = self._last_cycle_result
        if result is None:
            return False, "first discovery not finished"
        if not result.ok:
            message = result.node.message or result.node.status
            return False, f"last publish failed: {message}"
        return True, "ok"

    # -- one cycle --------------------------------------------------------------------------

    def _pods(self, previous: PodResourcesSnapshot | None = None) -> PodResourcesSnapshot:
        """The kubelet's view; with ``previous``, allocatable devices are carried over and only
        allocations are read (the poll between discoveries)."""
        if self.pod_resources is None:
            return unavailable("pod-resources disabled (--pod-resources-socket '')")
        return self.pod_resources.snapshot(previous)

    def run_cycle(self) -> CycleResult:
        """Discover, publish, refresh the metrics snapshot; what every trigger ends in."""
        with self._cycle_lock:
            if self._released_for is not None:
                message = (
                    f"driver upgrade in progress ({self._released_for}): NVML released, "
                    "the Node is kept as it is"
                )
                result = CycleResult(PublishResult("skipped", message=message))
                self._last_cycle_result = result
                self.cycles += 1
                return result
            if self._reopen_pending:
                self._open_nvml()
            pods = self._pods()
            self._pods_read_at = self.clock.monotonic()
            self.holder.update(pod_resources=pods)
            self._published_allocations = pods.allocated_device_ids() if pods.available else None
            discovered: list[NodeTopology] = []

            def discover() -> NodeTopology:
                started = self.clock.monotonic()
                try:
                    topology = self.discoverer.discover()
                except Exception:
                    self.stats.observe_discovery(self.clock.monotonic() - started, success=False)
                    raise
                self.stats.observe_discovery(
                    self.clock.monotonic() - started, success=is_successful_discovery(topology)
                )
                discovered.append(topology)
                return topology

            def available() -> Mapping[int, Mapping[str, int]]:
                topology = discovered[-1]
                # run_cycle only asks when it will publish an NRT; unknown -> allocatable.
                return available_gpus_by_numa_node(pods, topology) or {}

            if self.publisher is not None:
                result = run_cycle(
                    discover,
                    self.publisher,
                    nrt=self.nrt,
                    available=available if pods.available else None,
                    device_taints=self.device_taints,
                    dry_run=self.config.dry_run,
                )
                self._record_publish(result)
            else:
                try:
                    discover()
                    result = CycleResult(PublishResult("skipped", message="publishing disabled"))
                except Exception as error:
                    log.exception("discovery raised")
                    result = CycleResult(PublishResult("error", message=str(error)))
                else:
                    # Metrics-only: nothing to publish, the cycle itself succeeded.
                    result = CycleResult(PublishResult("unchanged", message="metrics only"))
            if discovered:
                topology = discovered[-1]
                self.holder.update(topology=topology)
                self._lost = frozenset(g.index for g in topology.gpus if g.health_signals.lost)
                self._nvml_errors = log_nvml_error_changes(self._nvml_errors, topology)
            self._last_cycle_result = result
            self.cycles += 1
            return result

    def _record_publish(self, result: CycleResult) -> None:
        assert self.publisher is not None
        sources = [self.publisher.counters]
        nrt_counters = getattr(self.nrt, "counters", None)
        if nrt_counters is not None and nrt_counters is not self.publisher.counters:
            sources.append(nrt_counters)
        taint_counters = getattr(self.device_taints, "counters", None)
        if taint_counters is not None and all(taint_counters is not c for c in sources):
            sources.append(taint_counters)
        current = {
            "success": sum(c.writes for c in sources),
            "conflict": sum(c.conflicts for c in sources),
            "error": sum(c.api_errors for c in sources),
        }
        for outcome, value in current.items():
            delta = value - self._counter_baseline.get(outcome, 0)
            if delta > 0:
                self.stats.record_api_write(outcome, delta)
        self._counter_baseline = current
        counters = self.publisher.counters
        self.stats.record_publish_checks(
            partial_discoveries=counters.partial_discoveries,
            foreign_owned_keys=counters.foreign_owned_keys,
            foreign_nrt=getattr(nrt_counters, "foreign_nrt", 0),
        )
        self.stats.record_label_conflicts(
            {
                key: ",".join(conflict.holders) or "unknown"
                for key, conflict in self.publisher.label_conflicts.items()
            }
        )
        if result.ok:
            self.stats.record_publish_success()
        for what, part in (
            ("Node", result.node),
            ("NodeResourceTopology", result.nrt),
            ("DeviceTaintRules", result.device_taints),
        ):
            if part is None:
                continue
            level = logging.INFO if part.ok else logging.ERROR
            if part.status != "unchanged" or not part.ok:
                detail = f" ({part.message})" if part.message else ""
                log.log(level, "%s: %s%s", what, part.status, detail)

    # -- the background work ----------------------------------------------------------------

    def health_tick(self) -> None:
        """Fast health signals and a load sample into the metrics snapshot; every
        ``pod_resources_interval_s`` also the kubelet's allocations (a change triggers a cycle,
        so the NodeResourceTopology's "available" follows pods)."""
        self.check_driver_upgrade()
        if self._released_for is not None:
            return  # no NVML to sample; the kubelet's allocations wait for the reopen
        if self.clock.monotonic() - self._pods_read_at >= self.config.pod_resources_interval_s:
            self._pods_read_at = self.clock.monotonic()
            pods = self._pods(self.holder.get().pod_resources)
            self.holder.update(pod_resources=pods)
            allocated = pods.allocated_device_ids() if pods.available else None
            if allocated != self._published_allocations:
                self._published_allocations = allocated
                self.trigger("GPU allocations changed")
        adapter = self.discoverer.adapter
        slow = self._health_ticks % SLOW_SIGNALS_EVERY == 0
        self._health_ticks += 1
        poll = adapter.health_poll(slow=slow) if adapter.status.available else HealthPoll()
        topology = self.holder.get().topology
        load = self.load_sampler.sample(
            adapter.module, topology, poll.signals, nvlink_states=poll.nvlink_states
        )
        self.holder.update(load=load)
        lost = frozenset(index for index, s in poll.signals.items() if s.lost)
        if lost - self._lost:
            self._lost = lost | self._lost
            self.trigger(f"GPU lost: {sorted(lost)}")

    def _event_totals(self) -> tuple[int, int]:
        """XID events and uncorrectable (double-bit) ECC events seen so far, all GPUs."""
        adapter = self.discoverer.adapter
        counts = adapter.drain_xid_events()
        xids = sum(event.count for events in counts.values() for event in events)
        ecc = sum(c.get("uncorrected", 0) for c in adapter.ecc_event_counts().values())
        return xids, ecc

    def xid_tick(self, wait_s: float = 0.0) -> bool:
        """Drain NVML's event set — first waiting up to ``wait_s`` for an event — and trigger a
        cycle for a new XID or uncorrectable ECC error, so the health taint follows as fast for
        either. (The adapter also calls :meth:`trigger` itself from whichever thread drained
        the event; the totals here catch up on anything drained before the listener was set.)
        True when the wait blocked as it should; False: pace the next call."""
        adapter = self.discoverer.adapter
        if not adapter.status.available:
            return False
        waited = adapter.wait_for_events(wait_s) if wait_s > 0 else False
        xids, ecc = self._event_totals()
        reasons = []
        if xids > self._xid_total:
            reasons.append("XID")
        if ecc > self._ecc_total:
            reasons.append("uncorrectable ECC error")
        self._xid_total, self._ecc_total = max(xids, self._xid_total), max(ecc, self._ecc_total)
        if reasons:
            self.trigger(" and ".join(reasons))
        return waited

    def _watch_events(self) -> None:
        """The event thread: asleep in NVML's event wait until an XID or ECC error arrives
        (woken at once, no polling); polls every ``xid_interval_s`` where NVML cannot wait."""
        stop = self._events_stop
        while not stop.is_set():
            try:
                blocked = self.xid_tick(wait_s=self.config.event_wait_s)
            except Exception:  # a bug in one tick must not end the event watch
                log.exception("event watch failed")
                blocked = False
            if not blocked:
                self.clock.wait(stop, self.config.xid_interval_s)

    def _every(self, name: str, period: float, work: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                work()
            except Exception:  # a bug in one tick must not end the agent's health reporting
                log.exception("%s failed", name)
            if name == "health":
                self._last_health_beat = self.clock.monotonic()
            self.clock.wait(self._stop, period)

    def _watch_udev(self) -> None:
        assert self.udev_monitor_factory is not None
        watch_udev(self.udev_monitor_factory, self.trigger, self._stop, self.config.interval_s)

    def _start(self, name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"gputopo-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _start_events(self) -> None:
        self._events_stop = self.clock.event()
        if self._stop.is_set():
            self._events_stop.set()
        self._events_thread = self._start("events", self._watch_events)

    def _stop_events(self) -> None:
        """End the event thread and wait for it to leave NVML's event wait (at most
        ``event_wait_s``): the event set must not be freed under a waiting thread."""
        self._events_stop.set()
        thread, self._events_thread = self._events_thread, None
        if thread is None:
            return
        thread.join(timeout=self.config.event_wait_s * 5 + 5)
        self._threads.remove(thread)  # stopped on purpose: not a dead thread for liveness
        if thread.is_alive():
            log.error("the event thread did not leave NVML's event wait; releasing NVML anyway")

    # -- the GPU Operator's driver upgrade --------------------------------------------------

    @property
    def released_for(self) -> str | None:
        """The upgrade state NVML is released for; None while the agent holds NVML."""
        return self._released_for

    def check_driver_upgrade(self, *, force: bool = False) -> None:
        """Read the upgrade state (every ``upgrade_poll_interval_s``, or now with ``force``);
        release NVML when an upgrade reaches the node, reopen it when the upgrade moves on."""
        if self.upgrade_state is None:
            return
        now = self.clock.monotonic()
        due = self._upgrade_checked_at is None or (
            now - self._upgrade_checked_at >= self.config.upgrade_poll_interval_s
        )
        if not (force or due):
            return
        self._upgrade_checked_at = now
        try:
            state = self.upgrade_state()
        except Exception as error:  # keep the last answer: no flapping on an API hiccup
            log.warning("could not read %s of this node: %s", UPGRADE_STATE_LABEL, error)
            return
        with self._upgrade_lock:
            if releases_nvml(state) and self._released_for is None:
                assert state is not None
                self._release_nvml(state)
            elif releases_nvml(state) and state != self._released_for:
                log.info("driver upgrade moved on to %s; NVML stays released", state)
                self._released_for = state
                self.stats.record_driver_upgrade(state)
            elif not releases_nvml(state) and self._released_for is not None:
                self._reopen_nvml(state)

    def _release_nvml(self, state: str) -> None:
        log.warning(
            "GPU driver upgrade on this node (%s=%s): releasing NVML until it is done; the "
            "Node's labels and taints stay as they are meanwhile",
            UPGRADE_STATE_LABEL,
            state,
        )
        self._stop_events()
        with self._cycle_lock:  # no discovery is reading NVML while it closes
            self._released_for = state
            self._reopen_pending = False
            self.discoverer.close()
        snapshot = self.holder.get()
        self.holder.set(replace(snapshot, load=None))  # no stale per-second samples
        self.stats.record_driver_upgrade(state)

    def _reopen_nvml(self, state: str | None) -> None:
        log.info(
            "GPU driver upgrade %s (%s=%s): opening NVML again and rediscovering",
            "finished" if state in (None, "upgrade-done") else "moved on",
            UPGRADE_STATE_LABEL,
            state or "(none)",
        )
        with self._cycle_lock:
            self._released_for = None
            self.discoverer.adapter.driver_reloaded()
            self._open_nvml()
        self.stats.record_driver_upgrade(None)
        if self._threads and not self._stop.is_set():
            self._start_events()
        self.trigger(f"GPU driver upgrade {state or 'ended'}")

    def _open_nvml(self) -> None:
        """Open NVML after an upgrade; until it opens (the new driver still loading), every
        cycle tries again and discovery reports NVML down, which publishes nothing.

        Another driver version than the container's NVML library (the NVIDIA container toolkit
        mounted the old driver's when the container started) cannot be opened from this
        process at all: the agent stops with :data:`EXIT_RESTART`, and the kubelet recreates
        the container with the new driver's library."""
        status = self.discoverer.open()
        self._reopen_pending = not status.available
        if status.available:
            self._xid_total, self._ecc_total = self._event_totals()
        elif (status.error or "").startswith(LIBRARY_MISMATCH):
            log.error(
                "NVML after the driver upgrade: %s — this container's NVML library is the old "
                "driver's; exiting so that the kubelet recreates it with the new one",
                status.error,
            )
            self.exit_status = EXIT_RESTART
            self.stop()
        else:
            log.warning("NVML not open yet after the driver upgrade: %s", status.error)

    def next_delay(self) -> float:
        spread = self.config.interval_s * self.config.jitter
        return self.config.interval_s + self.rng.uniform(-spread, spread)

    def run(self) -> int:
        """Until :meth:`stop`: cycles on schedule and on triggers. 0 on a clean stop."""
        self.check_driver_upgrade(force=True)  # started mid-upgrade: do not touch the driver
        self.run_cycle()
        if self.discoverer.adapter.status.available:
            self._xid_total, self._ecc_total = self._event_totals()
        self.discoverer.adapter.on_event = self.trigger
        self._start(
            "health", lambda: self._every("health", self.config.health_interval_s, self.health_tick)
        )
        if self._released_for is None:
            self._start_events()  # else when NVML is opened again
        if self.udev_monitor_factory is not None:
            self._start("udev", self._watch_udev)
        last_cycle = self.clock.monotonic()
        deadline = last_cycle + self.next_delay()
        while not self._stop.is_set():
            self._last_loop_beat = self.clock.monotonic()
            self.clock.wait(self._wake, max(0.0, deadline - self.clock.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            now = self.clock.monotonic()
            with self._trigger_lock:
                reasons, self._trigger_reasons = self._trigger_reasons, []
            if reasons and now - last_cycle < self.config.min_trigger_interval_s:
                # Too soon after the last cycle: keep the reasons, come back when allowed.
                with self._trigger_lock:
                    self._trigger_reasons = reasons + self._trigger_reasons
                deadline = min(deadline, last_cycle + self.config.min_trigger_interval_s)
                continue
            if not reasons and now < deadline:
                continue
            if reasons:
                log.info("rediscovering now: %s", "; ".join(dict.fromkeys(reasons)))
            self.run_cycle()
            last_cycle = self.clock.monotonic()
            deadline = last_cycle + self.next_delay()
        for thread in self._threads:
            thread.join(timeout=5)
        return self.exit_status


def log_nvml_error_changes(
    previous: Mapping[str, tuple[str, ...]], topology: NodeTopology
) -> dict[str, tuple[str, ...]]:
    """Log each GPU's failing NVML queries when they change (not every cycle), and when they
    clear; returns what to compare the next discovery with. GPUs are keyed by UUID (the index
    of a GPU can shift when another fails to probe), else by index."""
    current: dict[str, tuple[str, ...]] = {}
    for gpu in topology.gpus:
        key = gpu.uuid or f"index {gpu.index}"
        errors = tuple(count_nvml_errors(gpu.nvml_errors))
        if errors:
            current[key] = errors
        if errors == previous.get(key, ()):
            continue
        if errors:
            counts = count_nvml_errors(gpu.nvml_errors)
            log.warning(
                "GPU %d (%s): NVML queries failing: %s",
                gpu.index,
                key,
                ", ".join(f"{call} x{n}" if n > 1 else call for call, n in counts.items()),
            )
        else:
            log.info("GPU %d (%s): NVML queries no longer failing", gpu.index, key)
    return current
