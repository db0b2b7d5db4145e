"""The agent's NVML layer: the only code that calls ``pynvml``.

One concern a room, bottom to top:

- ``session``: loading ``pynvml`` (or the injected fake), ``nvmlInit``/``nvmlShutdown``, and
  NVML's errors mapped to "unknown" (:class:`~gputopo.agent.nvml.session.GpuQuery`);
- ``events``: the XID/ECC event set, the per-GPU counts, and when an XID stops counting;
- ``reads`` (and ``mig``): what a GPU *is*, read once per discovery;
- ``signals``: its health signals, read by discovery and by the once-a-second health poll;
- ``adapter``: :class:`NvmlAdapter`, the one object the rest of the agent holds;
- ``sampling``: per-second GPU load for the metrics endpoint, through the adapter's module.

Everything above this layer sees the typed topology model and the names exported here.
"""

from gputopo.agent.nvml.adapter import NvmlAdapter
from gputopo.agent.nvml.events import DEFAULT_XID_WINDOW_S, RESET_REQUIRED_XIDS, XidDecay
from gputopo.agent.nvml.reads import NvmlGpu, NvmlLink, NvmlSnapshot
from gputopo.agent.nvml.sampling import (
    NVLINK_ERROR_COUNTERS,
    GpuLoad,
    MigDeviceLoad,
    NvlinkSample,
    sample_gpus,
)
from gputopo.agent.nvml.signals import CLOCK_EVENT_REASONS, HealthPoll

__all__ = [
    "CLOCK_EVENT_REASONS",
    "DEFAULT_XID_WINDOW_S",
    "NVLINK_ERROR_COUNTERS",
    "RESET_REQUIRED_XIDS",
    "GpuLoad",
    "HealthPoll",
    "MigDeviceLoad",
    "NvlinkSample",
    "NvmlAdapter",
    "NvmlGpu",
    "NvmlLink",
    "NvmlSnapshot",
    "XidDecay",
    "sample_gpus",
]
