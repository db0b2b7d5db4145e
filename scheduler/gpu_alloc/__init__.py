"""Which GPUs and MIG devices on each node are free, and which ones a new pod would get.

The kubelet, not the scheduler, picks the concrete devices: it asks the NVIDIA device plugin's
`GetPreferredAllocation`, which returns the set with the best aggregate NVLink score. The
scheduler predicts that choice so it can score nodes by what the pod will really get:

* **Layout** — a node's GPUs, their NUMA node and NVLink domain, MIG devices and health, from
  the agent's ``gputopo.io/topology`` annotation. Without the annotation (an older agent, or a
  node described only by labels) a layout is inferred from labels: ``nvidia.com/gpu``
  allocatable GPUs, ``gputopo.io/gpu.nvlink-domain-size`` consecutive GPUs per domain,
  ``gputopo.io/gpu.numa-max`` consecutive GPUs per NUMA node, and GPUs beyond
  ``gputopo.io/gpu.healthy`` counted as failed.
* **Bookkeeping** — every pod the scheduler knows on the node (bound or assumed) holds the GPUs
  the preferred allocation gives it, in the order the pods arrived; a deleted pod frees them.
* **NodeResourceTopology** — the agent's per-NUMA ``available`` count of ``nvidia.com/gpu``
  reveals GPUs held by pods the scheduler does not know (other schedulers, static pods). It is
  used only while *fresh*: observed after the last change the scheduler saw in that node's GPU
  pods (an NRT older than our own last bind cannot know about it) **and**, when
  ``nrt_max_age_s`` is set, at most that long ago. The agent writes its NRT only when it
  changes, so by default a watched NRT has no age limit: an unchanged object is current. A
  fresh NRT can only lower a zone's free count below the bookkeeping's, never raise it: a pod
  the scheduler knows stays counted until its deletion is watched, because NRT lags the
  kubelet's admission. A stale NRT is ignored; bookkeeping alone decides.

Failed GPUs (annotation ``health: failed``) are never free, and neither are their MIG devices.

Preferred allocation of `k` GPUs among the free ones, best first: one NVLink domain and one NUMA
node ("aligned"), else one NVLink domain, else one NUMA node, else spread over the fewest groups;
within a level, best fit — the group with the fewest free GPUs that still holds `k` — so large
groups stay whole for large pods. Ties go to the lowest GPU index.

Per-node results are cached and recomputed only for nodes whose object, pod count or GPU/MIG
requests changed since the last look (a cheap vector comparison), so a scheduling cycle touches
in Python only the nodes the previous binds changed.
"""

from __future__ import annotations

from gputopo.scheduler.gpu_alloc.allocator import (
    GpuAllocator,
    NodeGpuState,
)
from gputopo.scheduler.gpu_alloc.layout import (
    DEFAULT_NRT_MAX_AGE_S,
    GPU_RESOURCE,
    LEVEL_ALIGNED,
    LEVEL_NUMA,
    LEVEL_NVLINK,
    LEVEL_SPREAD,
    MEMO_LIMIT,
    MIG_RESOURCE_PREFIX,
    NO_FIT,
    NRT_GPU_ZONE_PREFIX,
    GpuSlot,
    MigSlot,
    NodeGpuLayout,
    layout_of,
    mig_resource,
    pod_gpu_count,
    pod_mig_requests,
)
from gputopo.scheduler.gpu_alloc.nrt import (
    NrtReport,
    parse_nrt,
)
from gputopo.scheduler.gpu_alloc.preferred import (
    GpuChoice,
    preferred_allocation,
)

__all__ = [
    "DEFAULT_NRT_MAX_AGE_S",
    "GPU_RESOURCE",
    "LEVEL_ALIGNED",
    "LEVEL_NUMA",
    "LEVEL_NVLINK",
    "LEVEL_SPREAD",
    "MEMO_LIMIT",
    "MIG_RESOURCE_PREFIX",
    "NO_FIT",
    "NRT_GPU_ZONE_PREFIX",
    "GpuAllocator",
    "GpuChoice",
    "GpuSlot",
    "MigSlot",
    "NodeGpuLayout",
    "NodeGpuState",
    "NrtReport",
    "layout_of",
    "mig_resource",
    "parse_nrt",
    "pod_gpu_count",
    "pod_mig_requests",
    "preferred_allocation",
]
