"""The one object the rest of the agent holds for NVML: a session, its event set, and the reads.

The adapter stays open across discovery cycles (the run loop discovers every 60 s and polls health
every second) and keeps what one read learns for the next: the event set's counts, each GPU's
NVLink count, and the slow-changing health signals of the last full poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any

from gputopo.agent.nvml.events import NvmlEvents, XidDecay
from gputopo.agent.nvml.reads import (
    NvmlGpu,
    NvmlSnapshot,
    read_driver_info,
    read_gpu,
    with_p2p_levels,
)
from gputopo.agent.nvml.session import LOST_AT_HANDLE, GpuQuery, NvmlSession, error_name
from gputopo.agent.nvml.signals import (
    HealthPoll,
    links_down,
    read_nvlink_states,
    read_signals,
)
from gputopo.agent.topology import DriverInfo, HealthSignals, NvlinkRemote, NvmlStatus, XidEvent

# nvmlIntNvLinkDeviceType_t NVML_NVLINK_DEVICE_TYPE_SWITCH.
_NVLINK_DEVICE_TYPE_SWITCH = 2


class NvmlAdapter:
    """An open NVML session. ``open()`` once, ``snapshot()`` per discovery, ``close()`` at exit."""

    def __init__(
        self,
        module: ModuleType | Any | None = None,
        *,
        xid_decay: XidDecay | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = NvmlSession(module)
        self._events = NvmlEvents(xid_decay or XidDecay(), clock)
        # NVLinks per GPU index, learnt by discovery (a GPU's link count does not change while
        # the driver is loaded): the health poll then asks only for links that exist.
        self._link_counts: dict[int, int] = {}
        # GPU index -> (NVLink states, signals) of the last full health poll (health_poll).
        self._slow_signals: dict[int, tuple[tuple[bool, ...], HealthSignals]] = {}
        # GPU index -> the link numbers that count as down when inactive (signals.links_down):
        # each link seen active since the agent started, and every link of a GPU wired to
        # NVSwitches. Reset when another GPU (UUID) is found at the index.
        self._expected_links: dict[int, set[int]] = {}
        self._uuid_at: dict[int, str | None] = {}

    @property
    def status(self) -> NvmlStatus:
        return self._session.status

    @property
    def module(self) -> Any:
        return self._session.module

    @property
    def xid_decay(self) -> XidDecay:
        return self._events.xid_decay

    @xid_decay.setter
    def xid_decay(self, decay: XidDecay) -> None:
        self._events.xid_decay = decay

    @property
    def on_event(self) -> Callable[[str], None] | None:
        """Told "XID" or "uncorrectable ECC error" whenever a drain records a new one, from
        whichever thread drained it (the run loop's trigger)."""
        return self._events.on_event

    @on_event.setter
    def on_event(self, callback: Callable[[str], None] | None) -> None:
        self._events.on_event = callback

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> NvmlStatus:
        """Load and initialise NVML and register for XID events; failures become the status."""
        if self._session.status.available:
            return self._session.status
        status = self._session.open()
        if status.available:
            self._events.register(self._session.module, self._session.handles())
        return status

    def close(self) -> None:
        if not self._session.status.available:
            return
        self._events.free()
        self._session.close()

    def driver_reloaded(self) -> None:
        """Say the driver was replaced while NVML was closed (a GPU Operator upgrade): the GPUs
        were reset, so the XIDs and ECC events of before no longer count for health."""
        self._events.driver_reloaded()
        self._slow_signals.clear()

    def __enter__(self) -> NvmlAdapter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- XID and ECC events (see events.NvmlEvents) ----------------------------------------------

    def drain_xid_events(self) -> dict[int, tuple[XidEvent, ...]]:
        """Pending events added to the per-GPU counts; the XID counts per GPU since ``open()``.
        Safe to call from a separate event thread and from discovery."""
        return self._events.drain()

    def wait_for_events(self, timeout_s: float) -> bool:
        """Sleep in NVML up to ``timeout_s`` for the next event (:meth:`NvmlEvents.wait`)."""
        return self._events.wait(timeout_s)

    def ecc_event_counts(self) -> dict[int, dict[str, int]]:
        return self._events.ecc_event_counts()

    def stale_xids(self) -> dict[int, tuple[int, ...]]:
        return self._events.stale_xids()

    def xid_counts(self) -> dict[int, tuple[XidEvent, ...]]:
        return self._events.xid_counts()

    # -- reads ----------------------------------------------------------------------------------

    def driver_info(self) -> DriverInfo:
        if not self._session.status.available:
            return DriverInfo()
        return read_driver_info(self._session.module)

    def snapshot(self, *, cpu_set_words: int = 16, with_p2p: bool = True) -> NvmlSnapshot:
        """Read every GPU. Never raises for NVML errors; unavailable NVML gives no GPUs.

        A GPU whose handle fails with GPU_IS_LOST or UNKNOWN (:data:`LOST_AT_HANDLE`) is in the
        snapshot as lost at its index, with nothing else known: on real machines that is where
        a GPU that fell off the bus fails. Other handle failures stay ``handle_errors``."""
        if not self._session.status.available:
            return NvmlSnapshot(status=self._session.status)
        module = self._session.module
        self.drain_xid_events()
        try:
            int(module.nvmlDeviceGetCount())
        except module.NVMLError as error:
            return NvmlSnapshot(
                status=NvmlStatus(available=False, error=f"{error_name(error)}: {error}"),
                driver=self.driver_info(),
            )
        handles, failures = self._session.enumerate()
        read = {index: self._read_gpu(index, handle, cpu_set_words) for index, handle in handles}
        handle_errors: list[tuple[int, str]] = []
        for index, code, name in failures:
            if code in LOST_AT_HANDLE:
                read[index] = self._lost_gpu(index, name)
            else:
                handle_errors.append((index, name))
        gpus = [read[index] for index in sorted(read)]
        if with_p2p:
            gpus = with_p2p_levels(module, gpus, handles)
        return NvmlSnapshot(
            status=self._session.status,
            driver=self.driver_info(),
            gpus=tuple(gpus),
            handle_errors=tuple(handle_errors),
        )

    def _read_gpu(self, index: int, handle: Any, cpu_set_words: int) -> NvmlGpu:
        """The GPU's static facts, then its health signals on the same query (its XIDs and
        ECC events are those of its UUID, wherever it was enumerated before)."""
        query = GpuQuery(self._session.module, handle)
        gpu = read_gpu(query, index, cpu_set_words, self._link_counts)
        self._events.bind(index, gpu.uuid)
        if gpu.uuid is not None and self._uuid_at.get(index, gpu.uuid) != gpu.uuid:
            self._expected_links.pop(index, None)
        self._uuid_at[index] = gpu.uuid
        expected = self._expected_links.setdefault(index, set())
        if any(link.active and link.remote is NvlinkRemote.NVSWITCH for link in gpu.nvlinks):
            expected.update(link.link for link in gpu.nvlinks)
        xids = self._events.xid_counts().get(index, ())
        stale = self._events.stale_xids().get(index, ())
        ecc_events = self._events.ecc_event_counts().get(index, {})
        signals = read_signals(
            query,
            xids,
            nvlinks_down=self._links_down(index, [link.active for link in gpu.nvlinks]),
            stale_xids=stale,
            uncorrected_ecc_events=ecc_events.get("uncorrected", 0),
        )
        return replace(gpu, signals=signals, errors=tuple(query.errors))

    def _lost_signals(self, index: int) -> HealthSignals:
        """A GPU without a handle: lost, with the XIDs its board had counted here."""
        self._events.bind(index, None)
        return HealthSignals(
            lost=True,
            xid_events=self._events.xid_counts().get(index, ()),
            stale_xids=self._events.stale_xids().get(index, ()),
        )

    def _lost_gpu(self, index: int, error: str) -> NvmlGpu:
        return NvmlGpu(
            index=index,
            signals=self._lost_signals(index),
            errors=(f"nvmlDeviceGetHandleByIndex: {error}",),
        )

    # -- health ---------------------------------------------------------------------------------

    def health_signals(self) -> dict[int, HealthSignals]:
        """Only the fast-changing health signals, for the once-a-second poller."""
        return self.health_poll().signals

    def health_poll(self, *, slow: bool = True) -> HealthPoll:
        """The fast health signals plus the NVLink states they were computed from.

        ``slow=False`` re-reads only what changes from second to second (volatile ECC counts,
        clocks, temperature, power, lost) and takes the slow-changing rest — NVLink states,
        lifetime ECC counts, retired pages and remapped rows — from the last poll that read
        them: they are most of the NVML calls, and what the Node shows comes from discovery,
        which reads everything. A GPU without such a poll yet is read in full.
        """
        if not self._session.status.available:
            return HealthPoll()
        xids = self.drain_xid_events()
        stale = self.stale_xids()
        ecc_events = self.ecc_event_counts()
        signals = {}
        link_states = {}
        handles, failures = self._session.enumerate()
        for index, code, _ in failures:
            if code in LOST_AT_HANDLE:
                self._slow_signals.pop(index, None)
                signals[index] = self._lost_signals(index)
        for index, handle in handles:
            query = GpuQuery(self._session.module, handle)
            cached = None if slow else self._slow_signals.get(index)
            states = cached[0] if cached is not None else self._nvlink_states(index, query)
            signals[index] = read_signals(
                query,
                xids.get(index, ()),
                nvlinks_down=self._links_down(index, states, query),
                stale_xids=stale.get(index, ()),
                uncorrected_ecc_events=ecc_events.get(index, {}).get("uncorrected", 0),
                slow=cached[1] if cached is not None else None,
            )
            if query.lost:
                self._slow_signals.pop(index, None)
                continue
            link_states[index] = states
            if cached is None:
                self._slow_signals[index] = (states, signals[index])
        return HealthPoll(signals, link_states)

    def _links_down(
        self, index: int, states: Sequence[bool | None], query: GpuQuery | None = None
    ) -> int:
        """Links down on the GPU at ``index`` (:func:`links_down`), learning from ``states``
        which links were up. A GPU the adapter has not read yet (a health poll before the first
        discovery) is asked once, through ``query``, whether its links reach NVSwitches."""
        expected = self._expected_links.get(index)
        if expected is None:
            expected = self._expected_links[index] = set()
            first_up = next((link for link, active in enumerate(states) if active), None)
            if query is not None and first_up is not None:
                remote = query.device("nvmlDeviceGetNvLinkRemoteDeviceType", first_up)
                if remote is not None and int(remote) == _NVLINK_DEVICE_TYPE_SWITCH:
                    expected.update(range(len(states)))
        expected.update(link for link, active in enumerate(states) if active)
        return links_down(states, expected)

    def _nvlink_states(self, index: int, query: GpuQuery) -> tuple[bool, ...]:
        """The link states, learning the GPU's link count if discovery has not yet."""
        known = self._link_counts.get(index)
        states = read_nvlink_states(query, known)
        if known is None and not query.lost:
            self._link_counts[index] = len(states)
        return states
