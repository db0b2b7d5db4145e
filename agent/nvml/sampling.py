"""Per-second GPU load through NVML: utilisation, memory in use, NVLink states and error counters,
and MIG device memory, for the metrics endpoint only — nothing here is ever written to the
Kubernetes API.

It samples only what the adapter's health poll does not: temperature, power, throttle reasons,
ECC and XID counts arrive as the adapter's :class:`~gputopo.agent.topology.HealthSignals` and are
carried along unchanged, so one :class:`GpuLoad` holds everything the metrics endpoint shows for
a GPU. ``gputopo.agent.usage`` adds the node's CPUs and NUMA memory.

Every query may fail on some GPU; the field is then ``None`` (unknown) and the rest is sampled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gputopo.agent.nvml.session import FUNCTION_NOT_FOUND, GPU_IS_LOST, text
from gputopo.agent.topology import HealthSignals

log = logging.getLogger(__name__)

# nvmlNvLinkErrorCounter_t: NVML_NVLINK_ERROR_DL_* values and the names the metrics use.
NVLINK_ERROR_COUNTERS: tuple[tuple[int, str], ...] = (
    (0, "replay"),
    (1, "recovery"),
    (2, "crc_flit"),
    (3, "crc_data"),
)
_DEFAULT_MAX_LINKS = 18
_ERROR_COUNTER = "nvmlDeviceGetNvLinkErrorCounter"
# nvmlDeviceGetMemoryInfo with nvmlMemory_v2 calls the C symbol nvmlDeviceGetMemoryInfo_v2
# (R510 on); the name under which its absence is remembered.
_MEMORY_V2 = "nvmlDeviceGetMemoryInfo_v2"


@dataclass(frozen=True)
class NvlinkSample:
    link: int
    active: bool | None
    errors: Mapping[str, int] = field(default_factory=dict)  # counter name -> count since reset


@dataclass(frozen=True)
class MigDeviceLoad:
    uuid: str
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class GpuLoad:
    """One GPU at one moment. ``None`` is unknown, never zero."""

    index: int
    uuid: str | None = None  # to match the discovered GPU even if indices moved (hotplug)
    utilization_ratio: float | None = None  # share of the last sample period a kernel ran
    memory_utilization_ratio: float | None = None  # share of it the memory was read or written
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    nvlinks: tuple[NvlinkSample, ...] = ()
    mig_devices: tuple[MigDeviceLoad, ...] = ()
    signals: HealthSignals | None = None  # from the adapter's health poll
    lost: bool = False


class _Query:
    """NVML calls for one GPU: an NVML error yields None; GPU_IS_LOST stops further calls.

    Leaner than :class:`~gputopo.agent.nvml.session.GpuQuery`, because it runs every second: no
    error list for diagnostics, and no call at all on a lost GPU (not even on its MIG handles).
    A function the driver's library does not have (FUNCTION_NOT_FOUND) is added to ``absent``
    and not called again: the sampler runs every second, and an older driver would otherwise
    answer the same error for every GPU, link and counter each time.
    """

    def __init__(self, module: Any, handle: Any, absent: set[str] | None = None) -> None:
        self.module = module
        self.handle = handle
        self.lost = False
        self.absent = absent if absent is not None else set()

    def call(self, name: str, *args: Any, symbol: str | None = None) -> Any:
        """``symbol``: the C function behind ``name`` with these arguments, remembered as
        absent instead of ``name`` (one pynvml function may call several)."""
        symbol = symbol or name
        if self.lost or symbol in self.absent:
            return None
        function: Callable[..., Any] | None = getattr(self.module, name, None)
        if function is None:
            return None
        try:
            return function(*args)
        except self.module.NVMLError as error:
            code = getattr(error, "value", None)
            if code == GPU_IS_LOST:
                self.lost = True
            elif code == FUNCTION_NOT_FOUND:
                self.absent.add(symbol)
            return None

    def device(self, name: str, *args: Any) -> Any:
        return self.call(name, self.handle, *args)


def _memory(query: _Query, handle: Any) -> Any:
    """The memory info whose ``used`` is what work has allocated: v2, where the driver's
    reserved memory is apart (v1 counts it as used: ~900 MB on an idle A100). A driver before
    R510 (FUNCTION_NOT_FOUND) or a binding without ``nvmlMemory_v2`` gives v1."""
    version = getattr(query.module, "nvmlMemory_v2", None)
    if version is not None:
        memory = query.call("nvmlDeviceGetMemoryInfo", handle, version, symbol=_MEMORY_V2)
        if memory is not None or query.lost:
            return memory
    return query.call("nvmlDeviceGetMemoryInfo", handle)


def _ratio(percent: Any) -> float | None:
    if percent is None:
        return None
    return max(0.0, min(1.0, float(percent) / 100.0))


def _sample_nvlinks(
    query: _Query,
    max_links: int,
    states: Sequence[bool] | None = None,
    previous: tuple[NvlinkSample, ...] = (),
) -> tuple[NvlinkSample, ...]:
    """Each link's state and error counters. ``states``: the link states the health poll has
    just read (not read again); without them they are asked for here. ``previous``: the last
    sample of this GPU, returned as it is when nothing changed (the usual second)."""
    if states is None:
        read = []
        for link in range(max_links):
            state = query.device("nvmlDeviceGetNvLinkState", link)
            if state is None:
                break  # no NVLink, or past the GPU's last link
            read.append(bool(int(state)))
        states = read
    if _ERROR_COUNTER in query.absent:  # an old driver: no counters to ask for, every second
        if len(previous) == len(states) and all(
            sample.active == active and not sample.errors
            for sample, active in zip(previous, states, strict=True)
        ):
            return previous
        return tuple(NvlinkSample(link=n, active=active) for n, active in enumerate(states))
    links = []
    for link, active in enumerate(states):
        errors: dict[str, int] = {}
        for counter, name in NVLINK_ERROR_COUNTERS:
            value = query.device(_ERROR_COUNTER, link, counter)
            if value is not None:
                errors[name] = int(value)
        links.append(NvlinkSample(link=link, active=active, errors=errors))
    result = tuple(links)
    return previous if result == previous else result


def _sample_mig(query: _Query) -> tuple[MigDeviceLoad, ...]:
    mode = query.device("nvmlDeviceGetMigMode")
    if mode is None or int(mode[0]) != 1:
        return ()
    max_count = query.device("nvmlDeviceGetMaxMigDeviceCount")
    devices = []
    for mig_index in range(int(max_count or 0)):
        mig = query.device("nvmlDeviceGetMigDeviceHandleByIndex", mig_index)
        if mig is None:
            continue
        uuid = query.call("nvmlDeviceGetUUID", mig)
        if uuid is None:
            continue
        memory = _memory(query, mig)
        devices.append(
            MigDeviceLoad(
                uuid=text(uuid),
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
            )
        )
    return tuple(devices)


def sample_gpus(
    module: Any,
    signals: Mapping[int, HealthSignals] | None = None,
    absent: set[str] | None = None,
    nvlink_states: Mapping[int, Sequence[bool]] | None = None,
    previous: Mapping[int, GpuLoad] | None = None,
) -> dict[int, GpuLoad]:
    """Sample every GPU NVML can see, through ``module`` (the adapter's pynvml-like object).

    ``signals`` are the adapter's latest health signals per GPU index, attached as they are;
    ``nvlink_states`` the link states its health poll read (a GPU missing there is asked);
    ``previous`` the last sample's GPUs, whose unchanged NVLink samples are reused.
    ``absent``: NVML functions known to be missing from this library (updated here); pass the
    same set on every call with the same ``module``. An unavailable NVML (``module`` None)
    gives no GPUs.
    """
    absent = absent if absent is not None else set()
    if module is None:
        return {}
    signals = signals or {}
    try:
        count = int(module.nvmlDeviceGetCount())
    except module.NVMLError as error:
        log.debug("nvmlDeviceGetCount failed while sampling load: %s", error)
        return {}
    max_links = int(getattr(module, "NVML_NVLINK_MAX_LINKS", _DEFAULT_MAX_LINKS))
    result: dict[int, GpuLoad] = {}
    for index in range(count):
        try:
            handle = module.nvmlDeviceGetHandleByIndex(index)
        except module.NVMLError as error:
            lost = getattr(error, "value", None) == GPU_IS_LOST
            result[index] = GpuLoad(index=index, signals=signals.get(index), lost=lost)
            continue
        query = _Query(module, handle, absent)
        uuid = query.device("nvmlDeviceGetUUID")
        utilization = query.device("nvmlDeviceGetUtilizationRates")
        memory = _memory(query, handle)
        before = (previous or {}).get(index)
        nvlinks = _sample_nvlinks(
            query,
            max_links,
            (nvlink_states or {}).get(index),
            before.nvlinks if before is not None else (),
        )
        mig_devices = _sample_mig(query)
        gpu_signals = signals.get(index)
        result[index] = GpuLoad(
            index=index,
            uuid=text(uuid) if uuid is not None else None,
            utilization_ratio=_ratio(getattr(utilization, "gpu", None)),
            memory_utilization_ratio=_ratio(getattr(utilization, "memory", None)),
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            nvlinks=nvlinks,
            mig_devices=mig_devices,
            signals=gpu_signals,
            lost=query.lost or bool(gpu_signals and gpu_signals.lost),
        )
    return result
