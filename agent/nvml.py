"""The NVML adapter: the only module that touches ``pynvml``.

``pynvml`` (from the ``nvidia-ml-py`` distribution) is imported lazily in :func:`load_pynvml`, and
any module object with the same call surface can be injected instead (``--mock`` passes the fake
from ``mocks/``). NVML failing to load or initialise is a normal state, reported as
``NvmlStatus(available=False, error=...)``. Every per-GPU query may fail: the field becomes
``None`` and the rest of the GPU is still read; ``GPU_IS_LOST`` additionally marks the GPU lost.

The adapter stays open across discovery cycles (the run loop discovers every 60 s and polls health
every second), keeps the event set registered at :meth:`NvmlAdapter.open` (XIDs, and single- and
double-bit ECC errors where the GPU supports them), and accumulates XID and ECC event counts per
GPU each time :meth:`NvmlAdapter.drain_xid_events` is called.

XID counts never decrease (they feed a Prometheus counter), but an XID stops counting for health
once it has not recurred for :attr:`XidDecay.window_s` — except the XIDs that need a GPU reset
(:data:`RESET_REQUIRED_XIDS`), which count until the GPU is re-enumerated (a different UUID at
its index) or the agent restarts. docs/health.md has the rule.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
import time
import uuid as uuid_module
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from gputopo.agent.sysfs import normalize_bus_id
from gputopo.agent.topology import (
    ComputeCapability,
    ComputeInstance,
    DriverInfo,
    EccCounts,
    FabricInfo,
    GpuInstance,
    HealthSignals,
    MemoryRepair,
    MigInfo,
    NvlinkRemote,
    NvmlStatus,
    P2PLevel,
    PcieInfo,
    XidEvent,
)

# NVML_DEVICE_ARCH_* values to GPU Feature Discovery's family names.
ARCHITECTURE_FAMILIES: dict[int, str] = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada-lovelace",
    9: "hopper",
    10: "blackwell",
}

# NVML_TOPOLOGY_* common-ancestor levels.
P2P_LEVELS: dict[int, P2PLevel] = {
    0: P2PLevel.INTERNAL,
    10: P2PLevel.SINGLE,
    20: P2PLevel.MULTIPLE,
    30: P2PLevel.HOSTBRIDGE,
    40: P2PLevel.NODE,
    50: P2PLevel.SYSTEM,
}

# nvmlDeviceGetNvLinkVersion returns the nvmlNvlinkVersion_t enum, not the generation (an A100
# reports 5, "NVLink 3.1"): NVML_NVLINK_VERSION_1_0 = 1, 2_0 = 2, 2_2 = 3, 3_0 = 4, 3_1 = 5,
# 4_0 = 6, 5_0 = 7, 6_0 = 8. The model stores the generation.
NVLINK_VERSION_TO_GENERATION: dict[int, int] = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 5, 8: 6}

# Per-direction bandwidth of one NVLink, GB/s, by generation (NVIDIA's published numbers: P100
# NVLink1 20 GB/s; V100 NVLink2, A100 NVLink3 and H100 NVLink4 25 GB/s; Blackwell NVLink5 50).
NVLINK_BANDWIDTH_GBPS: dict[int, float] = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}

# nvmlClocksEventReason* bits to names (the same bits as the deprecated ThrottleReason names).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

# NVML return codes this module reacts to (stable across NVML versions).
_NOT_SUPPORTED = 3
_INVALID_ARGUMENT = 2
_NOT_FOUND = 6
_TIMEOUT = 10
_GPU_IS_LOST = 15
# nvmlEventType* bits (pynvml's nvmlEventTypeSingleBitEccError, ...DoubleBitEccError,
# ...XidCriticalError). ECC events carry no data; an XID event's data is the XID code.
_SINGLE_BIT_ECC_EVENT = 0x1
_DOUBLE_BIT_ECC_EVENT = 0x2
_XID_CRITICAL_ERROR_EVENT = 0x8
_WATCHED_EVENTS = _XID_CRITICAL_ERROR_EVENT | _SINGLE_BIT_ECC_EVENT | _DOUBLE_BIT_ECC_EVENT
_MIG_ENABLE = 1
_GI_PROFILE_COUNT_FALLBACK = 0x12
# GPU-instance profile indices that carry media extensions ("+me"), as go-nvlib names them.
_MEDIA_EXTENSION_PROFILES = (0x7, 0x8)  # 1_SLICE_REV1, 2_SLICE_REV1
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


class NvmlLoadError(Exception):
    """The pynvml module itself could not be imported."""


def load_pynvml() -> ModuleType:
    """Import the real ``pynvml`` lazily, so a machine without it still runs the agent."""
    try:
        import pynvml
    except ImportError as error:
        raise NvmlLoadError(f"pynvml is not importable: {error}") from None
    module: ModuleType = pynvml
    return module


def family_from_compute_capability(capability: ComputeCapability) -> str | None:
    """GFD's rule: the architecture family follows from the CUDA compute capability."""
    major, minor = capability.major, capability.minor
    families = {3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper", 10: "blackwell"}
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    if major == 12:
        return "blackwell"
    return families.get(major)


def mig_memory_gb(device_memory_bytes: int, mig_memory_mib: int) -> int:
    """go-nvlib's rounding: the slice's share of the GPU in eighths, times the GPU size in GB."""
    one_mib = 1024 * 1024
    one_gib = 1024 * 1024 * 1024
    fraction = (mig_memory_mib * one_mib) / device_memory_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = (device_memory_bytes + one_gib - 1) // one_gib
    return round(fraction * total_gb)


def mig_profile_name(
    gpu_slices: int, memory_gb: int, compute_slices: int | None = None, media: bool = False
) -> str:
    """ "3g.40gb", "1c.3g.40gb" when the compute instance is smaller, "+me" for media engines."""
    suffix = "+me" if media else ""
    if compute_slices is None or compute_slices == gpu_slices:
        return f"{gpu_slices}g.{memory_gb}gb{suffix}"
    return f"{compute_slices}c.{gpu_slices}g.{memory_gb}gb{suffix}"


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in CLOCK_EVENT_REASONS if mask & bit)


def cpus_from_affinity(words: Any) -> tuple[int, ...]:
    """nvmlDeviceGetCpuAffinity's 64-bit words to a CPU list (bit b of word w is CPU 64*w+b)."""
    cpus = []
    for word_index, word in enumerate(words):
        value = int(word)
        bit = 0
        while value:
            if value & 1:
                cpus.append(word_index * 64 + bit)
            value >>= 1
            bit += 1
    return tuple(cpus)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def error_name(error: BaseException) -> str:
    """ "NVMLError_LibraryNotFound" -> "LibraryNotFound"; other exceptions keep their class name."""
    name = type(error).__name__
    return name.removeprefix("NVMLError_") if name != "NVMLError" else f"NVMLError({_code(error)})"


def _code(error: BaseException) -> int | None:
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class NvmlLink:
    """One NVLink as NVML reports it; the peer GPU index is resolved by discovery."""

    link: int
    active: bool | None
    version: int | None = None  # NVLink generation (decoded from NVML's version enum)
    remote: NvlinkRemote = NvlinkRemote.UNKNOWN
    remote_type_known: bool = False  # False when NVML could not say GPU or NVSwitch
    remote_pci_bus_id: str | None = None
    bandwidth_gbps: float | None = None


@dataclass(frozen=True)
class NvmlGpu:
    """Everything NVML said about one GPU; ``None`` is unknown."""

    index: int
    pci_bus_id: str | None = None
    uuid: str | None = None
    name: str | None = None
    memory_mib: int | None = None
    compute_capability: ComputeCapability | None = None
    architecture: str | None = None
    pcie: PcieInfo = field(default_factory=PcieInfo)
    numa_node: int | None = None
    cpu_affinity: tuple[int, ...] = ()
    nvlinks: tuple[NvmlLink, ...] = ()
    p2p: dict[int, P2PLevel] = field(default_factory=dict)
    mig: MigInfo = field(default_factory=MigInfo)
    fabric: FabricInfo | None = None
    signals: HealthSignals = field(default_factory=HealthSignals)
    errors: tuple[str, ...] = ()  # "<query>: <error>" for every failed query, for diagnostics


@dataclass(frozen=True)
class HealthPoll:
    """One fast poll: the health signals and each GPU's NVLink up/down states. The load sampler
    takes the states from here, so the once-a-second tick reads every link's state once."""

    signals: dict[int, HealthSignals] = field(default_factory=dict)
    nvlink_states: dict[int, tuple[bool, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class NvmlSnapshot:
    status: NvmlStatus
    driver: DriverInfo = field(default_factory=DriverInfo)
    gpus: tuple[NvmlGpu, ...] = ()
    handle_errors: tuple[tuple[int, str], ...] = ()  # (index, error) where no handle was had


class _GpuQuery:
    """Calls NVML for one GPU; a failure yields None, and GPU_IS_LOST marks the GPU lost."""

    def __init__(self, module: Any, handle: Any) -> None:
        self.module = module
        self.handle = handle
        self.lost = False
        self.errors: list[str] = []
        self.last_code: int | None = None

    def call(self, name: str, *args: Any) -> Any:
        self.last_code = None
        function: Callable[..., Any] | None = getattr(self.module, name, None)
        if function is None:
            self.last_code = _NOT_SUPPORTED
            return None
        try:
            return function(*args)
        except self.module.NVMLError as error:
            code = _code(error)
            self.last_code = code
            if code == _GPU_IS_LOST:
                self.lost = True
            if code not in (_NOT_SUPPORTED, _NOT_FOUND):
                self.errors.append(f"{name}: {error_name(error)}")
            return None

    def device(self, name: str, *args: Any) -> Any:
        """A query on this GPU; once the GPU is lost, further queries are not attempted."""
        if self.lost:
            return None
        return self.call(name, self.handle, *args)


class NvmlAdapter:
    """An open NVML session. ``open()`` once, ``snapshot()`` per discovery, ``close()`` at exit."""

    def __init__(
        self,
        module: ModuleType | Any | None = None,
        *,
        xid_decay: XidDecay | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._injected = module
        self.xid_decay = xid_decay or XidDecay()
        self._clock = clock
        self._module: Any = None
        self._status = NvmlStatus(available=False, error="NVML not opened")
        self._event_set: Any = None
        self._lock = threading.Lock()
        self._xid_counts: dict[int, Counter[int]] = {}
        self._xid_last_seen: dict[tuple[int, int], float] = {}  # (GPU, code) -> clock()
        self._ecc_events: dict[int, Counter[str]] = {}  # GPU -> "corrected"/"uncorrected"
        self._uuids: dict[int, str] = {}  # GPU index -> UUID, to notice re-enumeration
        # Told "XID" or "uncorrectable ECC error" whenever a drain records a new one, from
        # whichever thread drained it (the run loop's trigger).
        self.on_event: Callable[[str], None] | None = None
        self._handle_keys: dict[Any, int] = {}
        # NVLinks per GPU index, learnt by discovery (a GPU's link count does not change while
        # the driver is loaded): the health poll then asks only for links that exist.
        self._link_counts: dict[int, int] = {}
        # GPU index -> (NVLink states, signals) of the last full health poll (health_poll).
        self._slow_signals: dict[int, tuple[tuple[bool, ...], HealthSignals]] = {}

    @property
    def status(self) -> NvmlStatus:
        return self._status

    @property
    def module(self) -> Any:
        return self._module

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> NvmlStatus:
        """Load and initialise NVML and register for XID events; failures become the status."""
        if self._status.available:
            return self._status
        try:
            module = self._injected if self._injected is not None else load_pynvml()
        except NvmlLoadError as error:
            self._status = NvmlStatus(available=False, error=str(error))
            return self._status
        try:
            module.nvmlInit()
        except module.NVMLError as error:
            self._status = NvmlStatus(available=False, error=f"{error_name(error)}: {error}")
            return self._status
        self._module = module
        self._status = NvmlStatus(available=True)
        self._register_events()
        return self._status

    def close(self) -> None:
        if not self._status.available:
            return
        module = self._module
        if self._event_set is not None:
            with contextlib.suppress(module.NVMLError):
                module.nvmlEventSetFree(self._event_set)
            self._event_set = None
        with contextlib.suppress(module.NVMLError):
            module.nvmlShutdown()
        self._status = NvmlStatus(available=False, error="NVML closed")

    def __enter__(self) -> NvmlAdapter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- XID events -----------------------------------------------------------------------------

    def _register_events(self) -> None:
        """XID and ECC events on every GPU, as far as each supports them. NVML refuses the
        whole registration (NOT_SUPPORTED) when one asked-for type is unsupported, so a GPU
        whose supported types are unknown is retried with XIDs alone."""
        module = self._module
        try:
            self._event_set = module.nvmlEventSetCreate()
        except (module.NVMLError, AttributeError):
            self._event_set = None
            return
        for index, handle in self._handles():
            query = _GpuQuery(module, handle)
            supported = query.device("nvmlDeviceGetSupportedEventTypes")
            wanted = _WATCHED_EVENTS if supported is None else _WATCHED_EVENTS & int(supported)
            if not wanted:
                continue
            query.call("nvmlDeviceRegisterEvents", handle, wanted, self._event_set)
            if query.last_code == _NOT_SUPPORTED and wanted != _XID_CRITICAL_ERROR_EVENT:
                wanted &= _XID_CRITICAL_ERROR_EVENT
                if wanted:
                    query.call("nvmlDeviceRegisterEvents", handle, wanted, self._event_set)
            self._handle_keys[_handle_key(handle)] = index

    def drain_xid_events(self) -> dict[int, tuple[XidEvent, ...]]:
        """Read every pending event without waiting and add it to the per-GPU counts (XIDs by
        code; ECC errors by corrected/uncorrected, see :meth:`ecc_event_counts`).

        Returns the accumulated XID counts per GPU index (since ``open()``), sorted by code.
        Safe to call from a separate event thread and from discovery.
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

    def wait_for_events(self, timeout_s: float) -> bool:
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
            return _code(error) == _TIMEOUT
        self._notify(self._record_event(data))
        self.drain_xid_events()
        return True

    def _record_event(self, data: Any) -> tuple[str, ...]:
        """Count one event; the trigger reason it gives (none for a corrected ECC error)."""
        event_type = int(data.eventType)
        if not event_type & _WATCHED_EVENTS:
            return ()
        index = self._event_gpu_index(data.device)
        if index is None:
            return ()
        with self._lock:
            if event_type & _XID_CRITICAL_ERROR_EVENT:
                code = int(data.eventData)
                self._xid_counts.setdefault(index, Counter())[code] += 1
                self._xid_last_seen[(index, code)] = self._clock()
                return ("XID",)
            if event_type & _DOUBLE_BIT_ECC_EVENT:
                self._ecc_events.setdefault(index, Counter())["uncorrected"] += 1
                return ("uncorrectable ECC error",)
            self._ecc_events.setdefault(index, Counter())["corrected"] += 1
            return ()

    def _notify(self, reasons: set[str] | tuple[str, ...]) -> None:
        if reasons and self.on_event is not None:
            self.on_event(" and ".join(sorted(reasons)))

    def ecc_event_counts(self) -> dict[int, dict[str, int]]:
        """ECC error events per GPU index since ``open()``: ``corrected`` (single-bit) and
        ``uncorrected`` (double-bit) counts."""
        with self._lock:
            return {index: dict(counts) for index, counts in self._ecc_events.items()}

    def stale_xids(self) -> dict[int, tuple[int, ...]]:
        """Per GPU, the XID codes that no longer count for health (:class:`XidDecay`)."""
        window = self.xid_decay.window_s
        if window <= 0:
            return {}
        cutoff = self._clock() - window
        stale: dict[int, list[int]] = {}
        with self._lock:
            for (index, code), seen in sorted(self._xid_last_seen.items()):
                if seen <= cutoff and code not in self.xid_decay.reset_required:
                    stale.setdefault(index, []).append(code)
        return {index: tuple(codes) for index, codes in stale.items()}

    def _forget_if_reenumerated(self, index: int, uuid: str | None) -> None:
        """A different GPU at ``index`` (hotplug, re-enumeration): its XIDs, sticky ones
        included, and ECC events belonged to the GPU that was there before."""
        if uuid is None:
            return
        previous = self._uuids.get(index)
        self._uuids[index] = uuid
        if previous is None or previous == uuid:
            return
        with self._lock:
            self._xid_counts.pop(index, None)
            self._ecc_events.pop(index, None)
            for key in [key for key in self._xid_last_seen if key[0] == index]:
                del self._xid_last_seen[key]

    def xid_counts(self) -> dict[int, tuple[XidEvent, ...]]:
        with self._lock:
            return {
                index: tuple(XidEvent(code=c, count=n) for c, n in sorted(counts.items()))
                for index, counts in self._xid_counts.items()
            }

    def _event_gpu_index(self, device: Any) -> int | None:
        index = self._handle_keys.get(_handle_key(device))
        if index is not None:
            return index
        try:
            return int(self._module.nvmlDeviceGetIndex(device))
        except self._module.NVMLError:
            return None

    # -- snapshot -------------------------------------------------------------------------------

    def _handles(self) -> Iterator[tuple[int, Any]]:
        module = self._module
        try:
            count = int(module.nvmlDeviceGetCount())
        except module.NVMLError:
            return
        for index in range(count):
            try:
                yield index, module.nvmlDeviceGetHandleByIndex(index)
            except module.NVMLError:
                continue

    def driver_info(self) -> DriverInfo:
        if not self._status.available:
            return DriverInfo()
        query = _GpuQuery(self._module, None)
        driver = query.call("nvmlSystemGetDriverVersion")
        cuda = query.call("nvmlSystemGetCudaDriverVersion_v2")
        if cuda is None:
            cuda = query.call("nvmlSystemGetCudaDriverVersion")
        nvml_version = query.call("nvmlSystemGetNVMLVersion")
        cuda_text = None
        if cuda is not None:
            cuda_int = int(cuda)
            cuda_text = f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}"
        return DriverInfo(
            driver_version=_text(driver) if driver is not None else None,
            cuda_driver_version=cuda_text,
            nvml_version=_text(nvml_version) if nvml_version is not None else None,
        )

    def snapshot(self, *, cpu_set_words: int = 16, with_p2p: bool = True) -> NvmlSnapshot:
        """Read every GPU. Never raises for NVML errors; unavailable NVML gives no GPUs."""
        if not self._status.available:
            return NvmlSnapshot(status=self._status)
        module = self._module
        self.drain_xid_events()
        handles: list[tuple[int, Any]] = []
        handle_errors: list[tuple[int, str]] = []
        try:
            count = int(module.nvmlDeviceGetCount())
        except module.NVMLError as error:
            return NvmlSnapshot(
                status=NvmlStatus(available=False, error=f"{error_name(error)}: {error}"),
                driver=self.driver_info(),
            )
        for index in range(count):
            try:
                handles.append((index, module.nvmlDeviceGetHandleByIndex(index)))
            except module.NVMLError as error:
                handle_errors.append((index, error_name(error)))
        gpus = [self._read_gpu(index, handle, cpu_set_words) for index, handle in handles]
        if with_p2p:
            gpus = self._with_p2p(gpus, handles)
        return NvmlSnapshot(
            status=self._status,
            driver=self.driver_info(),
            gpus=tuple(gpus),
            handle_errors=tuple(handle_errors),
        )

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
        if not self._status.available:
            return HealthPoll()
        xids = self.drain_xid_events()
        stale = self.stale_xids()
        ecc_events = self.ecc_event_counts()
        signals = {}
        link_states = {}
        for index, handle in self._handles():
            query = _GpuQuery(self._module, handle)
            cached = None if slow else self._slow_signals.get(index)
            states = cached[0] if cached is not None else self._nvlink_states(index, query)
            signals[index] = self._read_signals(
                query,
                xids.get(index, ()),
                nvlinks_down=links_down(states),
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

    def _with_p2p(self, gpus: list[NvmlGpu], handles: list[tuple[int, Any]]) -> list[NvmlGpu]:
        levels: dict[int, dict[int, P2PLevel]] = {index: {} for index, _ in handles}
        lost = {gpu.index for gpu in gpus if gpu.signals.lost}
        for position, (index_a, handle_a) in enumerate(handles):
            if index_a in lost:
                continue
            for index_b, handle_b in handles[position + 1 :]:
                if index_b in lost:
                    continue
                query = _GpuQuery(self._module, handle_a)
                level = query.device("nvmlDeviceGetTopologyCommonAncestor", handle_b)
                if level is None or int(level) not in P2P_LEVELS:
                    continue
                levels[index_a][index_b] = P2P_LEVELS[int(level)]
                levels[index_b][index_a] = P2P_LEVELS[int(level)]
        return [_replace_p2p(gpu, levels.get(gpu.index, {})) for gpu in gpus]

    # -- one GPU --------------------------------------------------------------------------------

    def _read_gpu(self, index: int, handle: Any, cpu_set_words: int) -> NvmlGpu:
        query = _GpuQuery(self._module, handle)
        pci = query.device("nvmlDeviceGetPciInfo")
        bus_id = None
        if pci is not None:
            raw = getattr(pci, "busId", None) or getattr(pci, "busIdLegacy", None)
            if raw:
                bus_id = normalize_bus_id(_text(raw))
        uuid = query.device("nvmlDeviceGetUUID")
        name = query.device("nvmlDeviceGetName")
        memory = query.device("nvmlDeviceGetMemoryInfo")
        memory_bytes = int(memory.total) if memory is not None else None
        capability = None
        cc = query.device("nvmlDeviceGetCudaComputeCapability")
        if cc is not None:
            capability = ComputeCapability(int(cc[0]), int(cc[1]))
        architecture = None
        if capability is not None:
            architecture = family_from_compute_capability(capability)
        if architecture is None:
            arch = query.device("nvmlDeviceGetArchitecture")
            if arch is not None:
                architecture = ARCHITECTURE_FAMILIES.get(int(arch))
        pcie = PcieInfo(
            gen_current=_positive(query.device("nvmlDeviceGetCurrPcieLinkGeneration")),
            gen_max=_positive(query.device("nvmlDeviceGetMaxPcieLinkGeneration")),
            width_current=_positive(query.device("nvmlDeviceGetCurrPcieLinkWidth")),
            width_max=_positive(query.device("nvmlDeviceGetMaxPcieLinkWidth")),
        )
        numa = query.device("nvmlDeviceGetNumaNodeId")
        affinity = query.device("nvmlDeviceGetCpuAffinity", cpu_set_words)
        nvlinks = self._read_nvlinks(query)
        if not query.lost:
            self._link_counts[index] = len(nvlinks)
        mig = self._read_mig(query, memory_bytes)
        fabric = self._read_fabric(query)
        self._forget_if_reenumerated(index, _text(uuid) if uuid is not None else None)
        signals = self._read_signals(
            query,
            self.xid_counts().get(index, ()),
            nvlinks_down=nvlinks_down(nvlinks),
            stale_xids=self.stale_xids().get(index, ()),
            uncorrected_ecc_events=self.ecc_event_counts().get(index, {}).get("uncorrected", 0),
        )
        return NvmlGpu(
            index=index,
            pci_bus_id=bus_id,
            uuid=_text(uuid) if uuid is not None else None,
            name=_text(name) if name is not None else None,
            memory_mib=memory_bytes // (1024 * 1024) if memory_bytes is not None else None,
            compute_capability=capability,
            architecture=architecture,
            pcie=pcie,
            numa_node=int(numa) if numa is not None and int(numa) >= 0 else None,
            cpu_affinity=cpus_from_affinity(affinity) if affinity is not None else (),
            nvlinks=nvlinks,
            mig=mig,
            fabric=fabric,
            signals=signals,
            errors=tuple(query.errors),
        )

    def _nvlink_states(self, index: int, query: _GpuQuery) -> tuple[bool, ...]:
        """Only whether each link is up: what the once-a-second poll needs. Past the last
        link NVML answers an error; once the link count is known it is not asked again."""
        known = self._link_counts.get(index)
        limit = (
            known if known is not None else int(getattr(self._module, "NVML_NVLINK_MAX_LINKS", 18))
        )
        states = []
        for link in range(limit):
            state = query.device("nvmlDeviceGetNvLinkState", link)
            if state is None:
                break
            states.append(bool(int(state)))
        if known is None and not query.lost:
            self._link_counts[index] = len(states)
        return tuple(states)

    def _read_nvlinks(self, query: _GpuQuery) -> tuple[NvmlLink, ...]:
        max_links = int(getattr(self._module, "NVML_NVLINK_MAX_LINKS", 18))
        links = []
        for link in range(max_links):
            state = query.device("nvmlDeviceGetNvLinkState", link)
            if state is None:
                # NOT_SUPPORTED / INVALID_ARGUMENT: no NVLink, or past the GPU's last link.
                break
            active = bool(int(state))
            version = query.device("nvmlDeviceGetNvLinkVersion", link)
            generation = (
                NVLINK_VERSION_TO_GENERATION.get(int(version)) if version is not None else None
            )
            remote = NvlinkRemote.UNKNOWN
            remote_known = False
            remote_bus_id = None
            if active:
                remote_type = query.device("nvmlDeviceGetNvLinkRemoteDeviceType", link)
                if remote_type is not None:
                    remote_known = True
                    remote = {0: NvlinkRemote.GPU, 2: NvlinkRemote.NVSWITCH}.get(
                        int(remote_type), NvlinkRemote.UNKNOWN
                    )
                remote_pci = query.device("nvmlDeviceGetNvLinkRemotePciInfo", link)
                if remote_pci is not None:
                    raw = getattr(remote_pci, "busId", None) or getattr(
                        remote_pci, "busIdLegacy", None
                    )
                    if raw:
                        remote_bus_id = normalize_bus_id(_text(raw))
            links.append(
                NvmlLink(
                    link=link,
                    active=active,
                    version=generation,
                    remote=remote,
                    remote_type_known=remote_known,
                    remote_pci_bus_id=remote_bus_id,
                    bandwidth_gbps=NVLINK_BANDWIDTH_GBPS.get(generation)
                    if generation is not None
                    else None,
                )
            )
        return tuple(links)

    def _gi_profiles(self, query: _GpuQuery) -> dict[int, tuple[int, Any]]:
        """GPU-instance profile id -> (profile index, profile info), like GFD scans them."""
        profiles: dict[int, tuple[int, Any]] = {}
        count = int(
            getattr(self._module, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GI_PROFILE_COUNT_FALLBACK)
        )
        for profile_index in range(count):
            info = query.device("nvmlDeviceGetGpuInstanceProfileInfo", profile_index)
            if info is None:
                if query.lost:
                    break
                continue
            profiles.setdefault(int(info.id), (profile_index, info))
        return profiles

    def _read_mig(self, query: _GpuQuery, memory_bytes: int | None) -> MigInfo:
        modes = query.device("nvmlDeviceGetMigMode")
        if modes is None:
            capable = False if query.last_code == _NOT_SUPPORTED else None
            return MigInfo(capable=capable)
        current, pending = int(modes[0]), int(modes[1])
        enabled = current == _MIG_ENABLE
        info = MigInfo(capable=True, enabled=enabled, pending=pending == _MIG_ENABLE)
        if not enabled:
            return info
        max_count = query.device("nvmlDeviceGetMaxMigDeviceCount")
        if max_count is None:
            return info
        # MIG devices (one per compute instance), grouped by their GPU instance: GFD's walk.
        by_gi: dict[int, list[tuple[int, Any, str | None]]] = {}
        for mig_index in range(int(max_count)):
            mig = query.device("nvmlDeviceGetMigDeviceHandleByIndex", mig_index)
            if mig is None:
                continue
            gi_id = query.call("nvmlDeviceGetGpuInstanceId", mig)
            ci_id = query.call("nvmlDeviceGetComputeInstanceId", mig)
            attributes = query.call("nvmlDeviceGetAttributes", mig)
            mig_uuid = query.call("nvmlDeviceGetUUID", mig)
            if gi_id is None or ci_id is None:
                continue
            by_gi.setdefault(int(gi_id), []).append(
                (int(ci_id), attributes, _text(mig_uuid) if mig_uuid is not None else None)
            )
        profiles = self._gi_profiles(query) if by_gi else {}
        instances = []
        for gi_id in sorted(by_gi):
            instances.append(self._gpu_instance(query, gi_id, by_gi[gi_id], profiles, memory_bytes))
        return MigInfo(
            capable=True,
            enabled=True,
            pending=pending == _MIG_ENABLE,
            instances=tuple(instances),
        )

    def _gpu_instance(
        self,
        query: _GpuQuery,
        gi_id: int,
        devices: list[tuple[int, Any, str | None]],
        profiles: dict[int, tuple[int, Any]],
        memory_bytes: int | None,
    ) -> GpuInstance:
        gi_handle = query.device("nvmlDeviceGetGpuInstanceById", gi_id)
        gi_info = query.call("nvmlGpuInstanceGetInfo", gi_handle) if gi_handle is not None else None
        profile_id = int(gi_info.profileId) if gi_info is not None else None
        placement_start = placement_size = None
        if gi_info is not None:
            placement_start = int(gi_info.placement.start)
            placement_size = int(gi_info.placement.size)
        profile_index, profile = (
            profiles.get(profile_id, (None, None)) if profile_id is not None else (None, None)
        )
        first_attributes = next((a for _, a, _ in devices if a is not None), None)
        slices = _attr_int(profile, "sliceCount") or _attr_int(
            first_attributes, "gpuInstanceSliceCount"
        )
        memory_mib = _attr_int(profile, "memorySizeMB") or _attr_int(
            first_attributes, "memorySizeMB"
        )
        name = "unknown"
        if slices is not None and memory_mib is not None and memory_bytes:
            name = mig_profile_name(
                slices,
                mig_memory_gb(memory_bytes, memory_mib),
                media=profile_index in _MEDIA_EXTENSION_PROFILES,
            )
        compute_instances = []
        for ci_id, attributes, mig_uuid in sorted(devices, key=lambda d: d[0]):
            ci_slices = _attr_int(attributes, "computeInstanceSliceCount")
            ci_name = name
            if name != "unknown" and ci_slices is not None and slices is not None:
                ci_name = mig_profile_name(
                    slices,
                    mig_memory_gb(memory_bytes or 1, memory_mib or 0),
                    compute_slices=ci_slices,
                    media=profile_index in _MEDIA_EXTENSION_PROFILES,
                )
            compute_instances.append(
                ComputeInstance(
                    id=ci_id,
                    profile=ci_name,
                    slices=ci_slices,
                    multiprocessors=_attr_int(attributes, "multiprocessorCount"),
                    uuid=mig_uuid,
                )
            )
        return GpuInstance(
            id=gi_id,
            profile=name,
            profile_id=profile_id,
            placement_start=placement_start,
            placement_size=placement_size,
            slices=slices,
            memory_mib=memory_mib,
            multiprocessors=_attr_int(profile, "multiprocessorCount"),
            copy_engines=_attr_int(profile, "copyEngineCount"),
            decoders=_attr_int(profile, "decoderCount"),
            encoders=_attr_int(profile, "encoderCount"),
            jpegs=_attr_int(profile, "jpegCount"),
            ofas=_attr_int(profile, "ofaCount"),
            compute_instances=tuple(compute_instances),
        )

    def _read_fabric(self, query: _GpuQuery) -> FabricInfo | None:
        structure = getattr(self._module, "c_nvmlGpuFabricInfo_t", None)
        if structure is None or query.lost:
            return None
        info = structure()
        # The real binding hands the argument straight to C, so it takes a pointer.
        query.device("nvmlDeviceGetGpuFabricInfo", ctypes.byref(info))
        if query.last_code is not None:
            return None
        state_code = int(getattr(info, "state", 0))
        state = {1: "not_started", 2: "in_progress", 3: "completed"}.get(state_code)
        if state is None:
            return None  # NVML_GPU_FABRIC_STATE_NOT_SUPPORTED: no multi-node fabric
        raw_uuid = bytes(bytearray(getattr(info, "clusterUuid", b"")))
        cluster_uuid = None
        if len(raw_uuid) == 16 and any(raw_uuid):
            cluster_uuid = str(uuid_module.UUID(bytes=raw_uuid))
        clique = int(getattr(info, "cliqueId", 0)) if state == "completed" else None
        return FabricInfo(cluster_uuid=cluster_uuid, clique_id=clique, state=state)

    def _read_memory_repair(self, query: _GpuQuery) -> MemoryRepair:
        single_bit = query.device("nvmlDeviceGetRetiredPages", 0)
        double_bit = query.device("nvmlDeviceGetRetiredPages", 1)
        retired_pending = query.device("nvmlDeviceGetRetiredPagesPendingStatus")
        remapped = query.device("nvmlDeviceGetRemappedRows")
        return MemoryRepair(
            retired_pages_single_bit=len(single_bit) if single_bit is not None else None,
            retired_pages_double_bit=len(double_bit) if double_bit is not None else None,
            retired_pages_pending=bool(int(retired_pending))
            if retired_pending is not None
            else None,
            remapped_rows_correctable=int(remapped[0]) if remapped is not None else None,
            remapped_rows_uncorrectable=int(remapped[1]) if remapped is not None else None,
            remapped_rows_pending=bool(int(remapped[2])) if remapped is not None else None,
            remapped_rows_failure=bool(int(remapped[3])) if remapped is not None else None,
        )

    def _read_signals(
        self,
        query: _GpuQuery,
        xids: tuple[XidEvent, ...],
        *,
        nvlinks_down: int,
        stale_xids: tuple[int, ...] = (),
        uncorrected_ecc_events: int = 0,
        slow: HealthSignals | None = None,
    ) -> HealthSignals:
        """``uncorrected_ecc_events``: double-bit ECC events seen since ``open()``; the volatile
        uncorrected count is at least that, even if the counter query fails or lags.
        ``slow``: signals whose lifetime ECC counts and memory repair state are taken as they
        are instead of being asked for again."""
        module = self._module
        corrected = int(getattr(module, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0))
        uncorrected = int(getattr(module, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1))
        volatile = int(getattr(module, "NVML_VOLATILE_ECC", 0))
        aggregate = int(getattr(module, "NVML_AGGREGATE_ECC", 1))
        volatile_uncorrected = _int(
            query.device("nvmlDeviceGetTotalEccErrors", uncorrected, volatile)
        )
        if uncorrected_ecc_events:
            volatile_uncorrected = max(volatile_uncorrected or 0, uncorrected_ecc_events)
        volatile_corrected = _int(query.device("nvmlDeviceGetTotalEccErrors", corrected, volatile))
        if slow is not None:
            ecc = replace(
                slow.ecc,
                volatile_corrected=volatile_corrected,
                volatile_uncorrected=volatile_uncorrected,
            )
            repair = slow.memory_repair
        else:
            ecc = EccCounts(
                volatile_corrected=volatile_corrected,
                volatile_uncorrected=volatile_uncorrected,
                aggregate_corrected=_int(
                    query.device("nvmlDeviceGetTotalEccErrors", corrected, aggregate)
                ),
                aggregate_uncorrected=_int(
                    query.device("nvmlDeviceGetTotalEccErrors", uncorrected, aggregate)
                ),
            )
            repair = self._read_memory_repair(query)
        reasons = query.device("nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None and query.last_code == _NOT_SUPPORTED:
            reasons = query.device("nvmlDeviceGetCurrentClocksThrottleReasons")
        temperature = query.device(
            "nvmlDeviceGetTemperature", int(getattr(module, "NVML_TEMPERATURE_GPU", 0))
        )
        power = query.device("nvmlDeviceGetPowerUsage")
        limit = query.device("nvmlDeviceGetEnforcedPowerLimit")
        return HealthSignals(
            lost=query.lost,
            xid_events=xids,
            stale_xids=stale_xids,
            ecc=ecc,
            memory_repair=repair,
            throttle_reasons=decode_clock_event_reasons(int(reasons))
            if reasons is not None
            else None,
            temperature_c=_int(temperature),
            power_w=int(power) / 1000.0 if power is not None else None,
            power_limit_w=int(limit) / 1000.0 if limit is not None else None,
            nvlinks_down=nvlinks_down,
        )


def nvlinks_down(links: tuple[NvmlLink, ...]) -> int:
    """Inactive links on a GPU that has at least one active link (a partly broken fabric).

    A GPU whose links are all inactive is a GPU without a bridge (e.g. a PCIe card) unless its
    peers say otherwise; discovery makes that call, because it sees the whole node.
    """
    if not any(link.active for link in links):
        return 0
    return sum(1 for link in links if link.active is False)


def links_down(states: tuple[bool, ...]) -> int:
    """:func:`nvlinks_down` for the health poll's bare up/down states."""
    return states.count(False) if True in states else 0


def _replace_p2p(gpu: NvmlGpu, levels: dict[int, P2PLevel]) -> NvmlGpu:
    return replace(gpu, p2p=dict(sorted(levels.items())))


def _handle_key(handle: Any) -> Any:
    """A hashable identity for an NVML handle: ctypes pointers compare by address, not object."""
    if isinstance(handle, ctypes._Pointer):
        return ("ptr", ctypes.cast(handle, ctypes.c_void_p).value)
    try:
        hash(handle)
    except TypeError:
        return ("id", id(handle))
    return handle


def _attr_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    attribute = getattr(value, name, None)
    return int(attribute) if attribute is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _positive(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    return number if number > 0 else None
