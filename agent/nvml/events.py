"""NVML's event set: XID and ECC error events, counted per GPU, and when an XID stops counting.

The event set is registered once when the session opens (XIDs, and single- and double-bit ECC
errors where the GPU supports them) and stays registered across discovery cycles; each
:meth:`NvmlEvents.drain` adds what is pending to the per-GPU counts. The run loop's event thread
sleeps in :meth:`NvmlEvents.wait` (``nvmlEventSetWait``, in the driver) between events.

XID counts never decrease (they feed a Prometheus counter), but an XID stops counting for health
once it has not recurred for :attr:`XidDecay.window_s` — except the XIDs that need a GPU reset
(:data:`RESET_REQUIRED_XIDS`), which count until the agent restarts. docs/health.md has the rule.

Counts are kept per GPU *UUID*, not per NVML index: indices shift when a GPU fails to probe or
the session is reopened after a GPU fell off the bus, and the XIDs belong to the board. The
public views are per current index (:meth:`NvmlEvents.bind` says which UUID is at which index);
a board that moved takes its counts along, and a new board at an index starts clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gputopo.agent.nvml.session import NOT_SUPPORTED, TIMEOUT, GpuQuery, error_code, text
from gputopo.agent.topology import XidEvent

# nvmlEventType* bits (pynvml's nvmlEventTypeSingleBitEccError, ...DoubleBitEccError,
# ...XidCriticalError). ECC events carry no data; an XID event's data is the XID code.
_SINGLE_BIT_ECC_EVENT = 0x1
_DOUBLE_BIT_ECC_EVENT = 0x2
_XID_CRITICAL_ERROR_EVENT = 0x8
_WATCHED_EVENTS = _XID_CRITICAL_ERROR_EVENT | _SINGLE_BIT_ECC_EVENT | _DOUBLE_BIT_ECC_EVENT
_MAX_EVENTS_PER_DRAIN = 4096


# XIDs whose resolution in NVIDIA's XID catalogue is a GPU reset (or more): double-bit ECC (48),
# page retirement / row remapping recorded or failed (63, 64: "reset GPU to activate"), fallen
# off the bus (79), contained and uncontained ECC errors (94, 95). Waiting does not heal them.
RESET_REQUIRED_XIDS: frozenset[int] = frozenset({48, 63, 64, 79, 94, 95})
DEFAULT_XID_WINDOW_S = 3600.0


@dataclass(frozen=True)
class XidDecay:
    """When an XID stops counting for health: ``window_s`` after it last occurred (0: never),
    unless its code is in ``reset_required``."""

    window_s: float = DEFAULT_XID_WINDOW_S
    reset_required: frozenset[int] = RESET_REQUIRED_XIDS

    def __post_init__(self) -> None:
        if self.window_s < 0 or math.isnan(self.window_s):
            raise ValueError(f"--xid-window {self.window_s}: must be 0 (never) or positive")


class NvmlEvents:
    """The event set and what it has counted since it was registered. Drains may come from the
    run loop's event thread and from discovery at once: the counts are kept under a lock."""

    def __init__(self, xid_decay: XidDecay, clock: Callable[[], float]) -> None:
        self.xid_decay = xid_decay
        self._clock = clock
        self._module: Any = None
        self._event_set: Any = None
        self._lock = threading.Lock()
        # Keyed by GPU: its UUID, or "index:<n>" for a GPU whose UUID NVML did not give.
        self._xid_counts: dict[str, Counter[int]] = {}
        self._xid_last_seen: dict[tuple[str, int], float] = {}  # (GPU, code) -> clock()
        self._ecc_events: dict[str, Counter[str]] = {}  # GPU -> "corrected"/"uncorrected"
        self._key_at: dict[int, str] = {}  # current NVML index -> GPU key (see bind)
        # Told "XID" or "uncorrectable ECC error" whenever a drain records a new one, from
        # whichever thread drained it (the run loop's trigger).
        self.on_event: Callable[[str], None] | None = None
        self._handle_keys: dict[Any, str] = {}  # handle identity -> GPU key
        # When the driver was last reloaded under the agent (a GPU Operator upgrade): every XID
        # seen before then is stale, whatever its code — the reload reset the GPUs.
        self._driver_reloaded_at: float | None = None

    def driver_reloaded(self) -> None:
        """The kernel driver was unloaded and loaded again since the last session (which resets
        every GPU): XIDs seen before now stop counting for health (their counts stay, they are
        a Prometheus counter), and the double-bit ECC events of the old session are dropped, as
        the driver's volatile ECC counters restart at load."""
        with self._lock:
            self._driver_reloaded_at = self._clock()
            self._ecc_events.clear()

    def register(self, module: Any, handles: Iterable[tuple[int, Any]]) -> None:
        """XID and ECC events on every GPU, as far as each supports them. NVML refuses the
        whole registration (NOT_SUPPORTED) when one asked-for type is unsupported, so a GPU
        whose supported types are unknown is retried with XIDs alone."""
        self._module = module
        self._handle_keys.clear()
        try:
            self._event_set = module.nvmlEventSetCreate()
        except (module.NVMLError, AttributeError):
            self._event_set = None
            return
        for index, handle in handles:
            query = GpuQuery(module, handle)
            uuid = query.device("nvmlDeviceGetUUID")
            key = self.bind(index, text(uuid) if uuid is not None else None)
            supported = query.device("nvmlDeviceGetSupportedEventTypes")
            wanted = _WATCHED_EVENTS if supported is None else _WATCHED_EVENTS & int(supported)
            if not wanted:
                continue
            query.call("nvmlDeviceRegisterEvents", handle, wanted, self._event_set)
            if query.last_code == NOT_SUPPORTED and wanted != _XID_CRITICAL_ERROR_EVENT:
                wanted &= _XID_CRITICAL_ERROR_EVENT
                if wanted:
                    query.call("nvmlDeviceRegisterEvents", handle, wanted, self._event_set)
            self._handle_keys[_handle_key(handle)] = key

    def free(self) -> None:
        """Give the event set back (before ``nvmlShutdown``)."""
        if self._event_set is not None:
            with contextlib.suppress(self._module.NVMLError):
                self._module.nvmlEventSetFree(self._event_set)
            self._event_set = None

    def drain(self) -> dict[int, tuple[XidEvent, ...]]:
        """Read every pending event without waiting and add it to the per-GPU counts (XIDs by
        code; ECC errors by corrected/uncorrected, see :meth:`ecc_event_counts`).

        Returns the accumulated XID counts per GPU index (since registration), sorted by code.
        """
        module = self._module
        if self._event_set is not None and module is not None:
            reasons: set[str] = set()
            for _ in range(_MAX_EVENTS_PER_DRAIN):
                try:
                    data = module.nvmlEventSetWait(self._event_set, 0)
                except module.NVMLError:
                    break  # TIMEOUT: nothing pending (anything else: try again next time)
                reasons.update(self._record_event(data))
            self._notify(reasons)
        return self.xid_counts()

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for the next event — NVML waits in the driver, costing
        no CPU — then drain whatever else is pending. False when there is nothing to wait on
        (no event set) or the wait failed other than by timing out, so that the caller paces
        itself instead of spinning."""
        module = self._module
        if self._event_set is None or module is None:
            return False
        try:
            data = module.nvmlEventSetWait(self._event_set, max(1, int(timeout_s * 1000)))
        except module.NVMLError as error:
            return error_code(error) == TIMEOUT
        self._notify(self._record_event(data))
        self.drain()
        return True

    def _record_event(self, data: Any) -> tuple[str, ...]:
        """Count one event; the trigger reason it gives (none for a corrected ECC error)."""
        event_type = int(data.eventType)
        if not event_type & _WATCHED_EVENTS:
            return ()
        key = self._event_gpu_key(data.device)
        if key is None:
            return ()
        with self._lock:
            if event_type & _XID_CRITICAL_ERROR_EVENT:
                code = int(data.eventData)
                self._xid_counts.setdefault(key, Counter())[code] += 1
                self._xid_last_seen[(key, code)] = self._clock()
                return ("XID",)
            if event_type & _DOUBLE_BIT_ECC_EVENT:
                self._ecc_events.setdefault(key, Counter())["uncorrected"] += 1
                return ("uncorrectable ECC error",)
            self._ecc_events.setdefault(key, Counter())["corrected"] += 1
            return ()

    def _notify(self, reasons: set[str] | tuple[str, ...]) -> None:
        if reasons and self.on_event is not None:
            self.on_event(" and ".join(sorted(reasons)))

    def ecc_event_counts(self) -> dict[int, dict[str, int]]:
        """ECC error events per GPU index since registration: ``corrected`` (single-bit) and
        ``uncorrected`` (double-bit) counts."""
        with self._lock:
            return {
                index: dict(self._ecc_events[key])
                for index, key in sorted(self._key_at.items())
                if key in self._ecc_events
            }

    def stale_xids(self) -> dict[int, tuple[int, ...]]:
        """Per GPU, the XID codes that no longer count for health (:class:`XidDecay`)."""
        window = self.xid_decay.window_s
        reloaded = self._driver_reloaded_at
        if window <= 0 and reloaded is None:
            return {}
        cutoff = self._clock() - window if window > 0 else None
        stale: dict[int, list[int]] = {}
        with self._lock:
            index_of = {key: index for index, key in self._key_at.items()}
            for (key, code), seen in sorted(self._xid_last_seen.items()):
                index = index_of.get(key)
                if index is None:
                    continue
                before_reload = reloaded is not None and seen <= reloaded
                decayed = (
                    cutoff is not None
                    and seen <= cutoff
                    and code not in self.xid_decay.reset_required
                )
                if before_reload or decayed:
                    stale.setdefault(index, []).append(code)
        return {index: tuple(codes) for index, codes in sorted(stale.items())}

    def bind(self, index: int, uuid: str | None) -> str:
        """The GPU with ``uuid`` is now at NVML ``index``; its key. A GPU whose UUID is
        unknown (its handle or UUID query failed) keeps the key last bound at its index, so a
        GPU lost mid-session keeps its counts where it was."""
        with self._lock:
            if uuid is None:
                return self._key_at.setdefault(index, f"index:{index}")
            for other, key in list(self._key_at.items()):
                if key == uuid and other != index:
                    del self._key_at[other]  # the board moved: its old index is not it
            self._key_at[index] = uuid
            return uuid

    def xid_counts(self) -> dict[int, tuple[XidEvent, ...]]:
        """XID counts per current NVML index (of the GPU bound there, see :meth:`bind`)."""
        with self._lock:
            return {
                index: tuple(
                    XidEvent(code=c, count=n) for c, n in sorted(self._xid_counts[key].items())
                )
                for index, key in sorted(self._key_at.items())
                if key in self._xid_counts
            }

    def _event_gpu_key(self, device: Any) -> str | None:
        key = self._handle_keys.get(_handle_key(device))
        if key is not None:
            return key
        try:
            uuid = self._module.nvmlDeviceGetUUID(device)
        except self._module.NVMLError:
            return None
        return text(uuid)


def _handle_key(handle: Any) -> Any:
    """A hashable identity for an NVML handle: ctypes pointers compare by address, not object."""
    if isinstance(handle, ctypes._Pointer):
        return ("ptr", ctypes.cast(handle, ctypes.c_void_p).value)
    try:
        hash(handle)
    except TypeError:
        return ("id", id(handle))
    return handle
