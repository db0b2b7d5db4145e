"""The contract between the node agent and the scheduler: every key, value format and schema.

This is the one module both sides read. It names every label, taint and annotation the agent
publishes, the format of their values, and how to parse the ``gputopo.io/topology`` annotation
back into typed values. It imports nothing from the agent's runtime (no NVML, no Kubernetes
client, not even the topology model), so the scheduler can depend on it alone.

The annotation's dataclasses are its schema: :mod:`gputopo.core.decode` reads the JSON back
through them, and the CPU lists in it use the cpulist grammar of :mod:`gputopo.core.grammar`.

The prefix (``gputopo.io`` by default) is configurable; build a :class:`Contract` with another
prefix and every gputopo key moves with it. GPU Feature Discovery compatible keys always live
under ``nvidia.com`` because existing manifests select on them.

One file although over 500 lines: it is the single place that names every key the agent may
write (and the admission policy mirrors), so a reader checks the whole contract in one read.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.core.decode import DecodeError, decode, wire, wire_keys
from gputopo.core.documents import DocumentError, load_json
from gputopo.core.grammar import format_cpulist, parse_cpulist

DEFAULT_PREFIX: Final = "gputopo.io"
NVIDIA_PREFIX: Final = "nvidia.com"

# --- value formats -------------------------------------------------------------------------------

TRUE: Final = "true"
FALSE: Final = "false"
SLA_MIN: Final = 0
SLA_MAX: Final = 1000

INTERCONNECT_VALUES: Final = ("nvswitch", "nvlink", "pcie", "none")
HEALTH_VALUES: Final = ("ok", "degraded", "failed")
MIG_STRATEGIES: Final = ("none", "single", "mixed")
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DEFAULT_SLA_TAINT_EFFECT: Final = "PreferNoSchedule"
DEFAULT_HEALTH_TAINT_EFFECT: Final = "NoSchedule"

# Kubernetes' limit on the sum of all annotation keys and values on one object
# (apimachinery's TotalAnnotationSizeLimitB).
ANNOTATIONS_TOTAL_LIMIT_BYTES: Final = 256 * 1024

# --- GPU Feature Discovery compatible keys (nvidia.com/*) ----------------------------------------


class Gfd:
    """GFD's exact label keys (NVIDIA/k8s-device-plugin ``internal/lm``)."""

    GPU_PRODUCT: Final = "nvidia.com/gpu.product"
    GPU_COUNT: Final = "nvidia.com/gpu.count"
    GPU_MEMORY: Final = "nvidia.com/gpu.memory"  # MiB
    GPU_FAMILY: Final = "nvidia.com/gpu.family"
    GPU_COMPUTE_MAJOR: Final = "nvidia.com/gpu.compute.major"
    GPU_COMPUTE_MINOR: Final = "nvidia.com/gpu.compute.minor"
    GPU_REPLICAS: Final = "nvidia.com/gpu.replicas"
    GPU_SHARING_STRATEGY: Final = "nvidia.com/gpu.sharing-strategy"
    GPU_MACHINE: Final = "nvidia.com/gpu.machine"
    GPU_MODE: Final = "nvidia.com/gpu.mode"
    GPU_CLIQUE: Final = "nvidia.com/gpu.clique"
    MIG_CAPABLE: Final = "nvidia.com/mig.capable"
    MIG_STRATEGY: Final = "nvidia.com/mig.strategy"
    MPS_CAPABLE: Final = "nvidia.com/mps.capable"
    CUDA_DRIVER_VERSION_MAJOR: Final = "nvidia.com/cuda.driver-version.major"
    CUDA_DRIVER_VERSION_MINOR: Final = "nvidia.com/cuda.driver-version.minor"
    CUDA_DRIVER_VERSION_REVISION: Final = "nvidia.com/cuda.driver-version.revision"
    CUDA_DRIVER_VERSION_FULL: Final = "nvidia.com/cuda.driver-version.full"
    CUDA_RUNTIME_VERSION_MAJOR: Final = "nvidia.com/cuda.runtime-version.major"
    CUDA_RUNTIME_VERSION_MINOR: Final = "nvidia.com/cuda.runtime-version.minor"
    CUDA_RUNTIME_VERSION_FULL: Final = "nvidia.com/cuda.runtime-version.full"
    # GFD still emits these deprecated spellings; existing manifests select on them.
    CUDA_DRIVER_MAJOR: Final = "nvidia.com/cuda.driver.major"
    CUDA_DRIVER_MINOR: Final = "nvidia.com/cuda.driver.minor"
    CUDA_DRIVER_REV: Final = "nvidia.com/cuda.driver.rev"
    CUDA_RUNTIME_MAJOR: Final = "nvidia.com/cuda.runtime.major"
    CUDA_RUNTIME_MINOR: Final = "nvidia.com/cuda.runtime.minor"

    # MIG attribute suffixes, appended to ``nvidia.com/gpu`` (single) or
    # ``nvidia.com/mig-<profile>`` (mixed).
    MIG_ATTRIBUTES: Final = (
        "memory",
        "multiprocessors",
        "slices.gi",
        "slices.ci",
        "engines.copy",
        "engines.decoder",
        "engines.encoder",
        "engines.jpeg",
        "engines.ofa",
    )

    @staticmethod
    def mig_resource(profile: str) -> str:
        """``nvidia.com/mig-<profile>`` with ``+`` (e.g. ``1g.10gb+me``) turned into ``.``."""
        return f"{NVIDIA_PREFIX}/mig-{profile.replace('+', '.')}"


# The exact ``nvidia.com/*`` label keys gputopo may write, and nothing else under that prefix:
# GPU Operator controls (``nvidia.com/mig.config``, ``nvidia.com/gpu.deploy.*``) and any other
# writer's keys are outside it. The agent owns only keys in this set or under its own prefix,
# and the admission policy (daemonset/admission) allows exactly the same set.

# What a full-GPU or MIG resource label carries after ``nvidia.com/gpu.`` or
# ``nvidia.com/mig-<profile>.`` (GFD's resource labeler).
RESOURCE_SUFFIXES: Final = ("product", "count", "replicas", "sharing-strategy", *Gfd.MIG_ATTRIBUTES)

GFD_LABEL_KEYS: Final = frozenset(
    value
    for name, value in vars(Gfd).items()
    if name.isupper() and isinstance(value, str) and value.startswith(f"{NVIDIA_PREFIX}/")
) | frozenset(f"{NVIDIA_PREFIX}/gpu.{suffix}" for suffix in RESOURCE_SUFFIXES)

# ``nvidia.com/mig-<profile>.<suffix>``: a MIG profile as agent.nvml.mig names it
# ("3g.40gb", "1c.3g.40gb", "1g.10gb+me" written "1g.10gb.me"), then one resource suffix.
# RE2 syntax, so the admission policy's CEL ``matches()`` uses the very same text.
MIG_PROFILE_PATTERN: Final = r"([1-9][0-9]*c\.)?[1-9][0-9]*g\.[1-9][0-9]*gb(\.me|\.me\.all|\.gfx)?"
MIG_LABEL_PATTERN: Final = (
    r"^nvidia\.com/mig-"
    + MIG_PROFILE_PATTERN
    + r"\.("
    + "|".join(suffix.replace(".", r"\.") for suffix in RESOURCE_SUFFIXES)
    + r")$"
)
_MIG_LABEL: Final = re.compile(MIG_LABEL_PATTERN)


def is_gfd_label_key(key: str) -> bool:
    """Whether ``key`` is one of the ``nvidia.com/*`` labels gputopo itself may publish."""
    return key in GFD_LABEL_KEYS or _MIG_LABEL.fullmatch(key) is not None


# --- gputopo keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """Every gputopo key under one (configurable) prefix."""

    prefix: str = DEFAULT_PREFIX

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    # labels
    @property
    def gpu_present(self) -> str:
        return self.key("gpu.present")  # true|false

    @property
    def gpu_interconnect(self) -> str:
        return self.key("gpu.interconnect")  # nvswitch|nvlink|pcie

    @property
    def gpu_nvlink_domain_size(self) -> str:
        return self.key("gpu.nvlink-domain-size")  # int, 1 without NVLink

    @property
    def gpu_nvlink_domains(self) -> str:
        return self.key("gpu.nvlink-domains")  # int, groups of >= 2 GPUs

    @property
    def numa_nodes(self) -> str:
        return self.key("numa.nodes")  # int

    @property
    def gpu_numa_max(self) -> str:
        return self.key("gpu.numa-max")  # int, most GPUs on one NUMA node

    @property
    def gpu_aligned_max(self) -> str:
        return self.key("gpu.aligned-max")  # int, most GPUs in one NVLink domain AND NUMA node

    @property
    def gpu_pcie_gen(self) -> str:
        return self.key("gpu.pcie-gen")  # int, lowest max PCIe generation among GPUs

    @property
    def gpu_rdma(self) -> str:
        return self.key("gpu.rdma")  # true|false, a GPU-local RDMA NIC exists

    @property
    def gpu_health(self) -> str:
        return self.key("gpu.health")  # ok|degraded|failed

    @property
    def gpu_healthy(self) -> str:
        return self.key("gpu.healthy")  # int, GPUs whose health is ok

    @property
    def gpu_heterogeneous(self) -> str:
        return self.key("gpu.heterogeneous")  # "true" only when GPU models differ

    @property
    def gpu_model(self) -> str:
        return self.key("gpu.model")  # short model of the primary GPUs: H100, A100, L4, RTX-4090

    @property
    def gpu_models(self) -> str:
        return self.key("gpu.models")  # int, distinct GPU models on the node

    @property
    def sla(self) -> str:
        return self.key("sla")  # int 0..1000, also the SLA taint's key

    # taints
    @property
    def sla_taint(self) -> str:
        return self.key("sla")

    @property
    def health_taint(self) -> str:
        return self.key("gpu-health")  # value "failed"

    # annotations
    @property
    def topology_annotation(self) -> str:
        return self.key("topology")

    @property
    def owned_labels_annotation(self) -> str:
        return self.key("owned-labels")  # comma-separated sorted label keys

    @property
    def owned_taints_annotation(self) -> str:
        return self.key("owned-taints")  # comma-separated sorted "key:Effect"

    @property
    def pending_removal_annotation(self) -> str:
        # JSON {"label:<key>"|"taint:<key>:<Effect>": misses, "value:<key>=<value>": sightings}
        return self.key("pending-removal")

    @property
    def sla_state_annotation(self) -> str:
        return self.key("sla-state")  # JSON of the SLA hysteresis state

    def owned_prefixes(self) -> tuple[str, ...]:
        """Key prefixes the agent writes under: its own (any key) and ``nvidia.com`` (only the
        keys :func:`is_gfd_label_key` accepts; see :meth:`may_own_label`)."""
        return (f"{self.prefix}/", f"{NVIDIA_PREFIX}/")

    def may_own_label(self, key: str) -> bool:
        """A label key the agent would publish itself: under its prefix or in the GFD set.

        Anything else named in the ownership annotation is forged or stale and is ignored.
        """
        return key.startswith(f"{self.prefix}/") or is_gfd_label_key(key)

    def health_label_keys(self) -> frozenset[str]:
        """Labels that follow GPU health: published from every discovery, even a partial one."""
        return frozenset((self.gpu_health, self.gpu_healthy, self.sla))

    def topology_label_keys(self) -> frozenset[str]:
        """Labels that define the machine's shape: a new value is published only after it was
        seen in as many consecutive complete discoveries as a removal needs."""
        return frozenset(
            (
                self.gpu_interconnect,
                self.gpu_nvlink_domain_size,
                self.gpu_nvlink_domains,
                self.numa_nodes,
                self.gpu_numa_max,
                self.gpu_aligned_max,
                self.gpu_pcie_gen,
                self.gpu_rdma,
            )
        )

    def taint_keys(self) -> frozenset[str]:
        """The only taint keys the agent writes (any effect)."""
        return frozenset((self.sla_taint, self.health_taint))

    def may_own_taint(self, identity: str) -> bool:
        """A ``key:Effect`` the agent would write itself; anything else is not its taint."""
        key, sep, effect = identity.rpartition(":")
        return bool(sep) and effect in TAINT_EFFECTS and key in self.taint_keys()


DEFAULT_CONTRACT: Final = Contract()


# --- ownership annotation values -----------------------------------------------------------------


def format_key_list(keys: Sequence[str] | set[str] | frozenset[str]) -> str:
    return ",".join(sorted(set(keys)))


def parse_key_list(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def taint_identity(key: str, effect: str) -> str:
    """Kubernetes identifies a taint by key and effect; ownership records both."""
    return f"{key}:{effect}"


def split_taint_identity(identity: str) -> tuple[str, str]:
    key, sep, effect = identity.rpartition(":")
    if not sep or effect not in TAINT_EFFECTS:
        raise ContractError(f"owned taint {identity!r} is not '<key>:<effect>'")
    return key, effect


# --- the topology annotation ---------------------------------------------------------------------

TOPOLOGY_ANNOTATION_VERSION: Final = 1


class ContractError(ValueError):
    """A value on a Node does not follow the contract (bad annotation JSON, unknown version)."""


@dataclass(frozen=True)
class AnnotatedComputeInstance:
    id: int
    profile: str


@dataclass(frozen=True)
class AnnotatedMigInstance:
    """One MIG GPU instance: its profile, placement and compute instances."""

    id: int
    profile: str
    placement_start: int | None = None
    placement_size: int | None = None
    memory_mib: int | None = None
    compute_instances: tuple[AnnotatedComputeInstance, ...] = ()


@dataclass(frozen=True)
class AnnotatedGpu:
    index: int
    uuid: str | None
    model: str | None
    memory_mib: int | None
    numa_node: int | None
    nvlink_domain: int | None
    pci_bus_id: str
    pci_path: tuple[str, ...] = ()
    pcie_switch: str | None = None
    mig_enabled: bool = False
    mig: tuple[AnnotatedMigInstance, ...] = ()
    # "failed" or None: only a failure changes the annotation (not degraded, not counters)
    health: str | None = field(default=None, metadata=wire(choices=HEALTH_VALUES))


@dataclass(frozen=True)
class AnnotatedNvlinkDomain:
    id: int
    gpus: tuple[int, ...]
    via: str  # nvswitch|nvlink


def _cpulist_field(value: Any) -> tuple[int, ...]:
    """The annotation carries a NUMA node's CPUs as a compact cpulist string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a cpulist string like '0-55,112-167', got {value!r}")
    return parse_cpulist(value)


@dataclass(frozen=True)
class AnnotatedNumaNode:
    id: int
    cpus: tuple[int, ...] = field(metadata=wire(parse=_cpulist_field))
    distances: tuple[int, ...]
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class AnnotatedRdmaNic:
    name: str
    pci_bus_id: str
    numa_node: int | None
    pcie_switch: str | None
    local_gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class TopologyAnnotation:
    """What the scheduler needs beyond labels: the node's static GPU/NUMA/fabric layout.

    Only slowly changing facts: no counters, temperatures or degraded states, so the annotation
    changes only when hardware or MIG layout changes or a GPU fails. A failed GPU is marked
    (``"health": "failed"``) because the scheduler must never hand it out.
    """

    interconnect: str
    gpus: tuple[AnnotatedGpu, ...] = ()
    nvlink_domains: tuple[AnnotatedNvlinkDomain, ...] = ()
    numa_nodes: tuple[AnnotatedNumaNode, ...] = ()
    rdma_nics: tuple[AnnotatedRdmaNic, ...] = ()
    version: int = field(default=TOPOLOGY_ANNOTATION_VERSION, metadata=wire(key="v"))
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields of a newer writer, kept

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same topology always serialises to the same bytes."""
        document: dict[str, Any] = {
            "v": self.version,
            "interconnect": self.interconnect,
            "gpus": [_gpu_doc(gpu) for gpu in self.gpus],
            "nvlink_domains": [
                {"id": d.id, "gpus": list(d.gpus), "via": d.via} for d in self.nvlink_domains
            ],
            "numa_nodes": [
                {
                    "id": n.id,
                    "cpus": format_cpulist(n.cpus),
                    "distances": list(n.distances),
                    "gpus": list(n.gpus),
                }
                for n in self.numa_nodes
            ],
            "rdma_nics": [
                _drop_none(
                    {
                        "name": nic.name,
                        "pci_bus_id": nic.pci_bus_id,
                        "numa_node": nic.numa_node,
                        "pcie_switch": nic.pcie_switch,
                        "local_gpus": list(nic.local_gpus),
                    }
                )
                for nic in self.rdma_nics
            ],
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True)

    def gpus_by_numa_node(self) -> dict[int | None, tuple[int, ...]]:
        grouped: dict[int | None, list[int]] = {}
        for gpu in self.gpus:
            grouped.setdefault(gpu.numa_node, []).append(gpu.index)
        return {numa: tuple(indices) for numa, indices in grouped.items()}


_ANNOTATION_KEYS: Final = wire_keys(TopologyAnnotation) - {"extra"}


def _drop_none(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None and v != [] and v is not False}


def _gpu_doc(gpu: AnnotatedGpu) -> dict[str, Any]:
    return _drop_none(
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "model": gpu.model,
            "memory_mib": gpu.memory_mib,
            "numa_node": gpu.numa_node,
            "nvlink_domain": gpu.nvlink_domain,
            "pci_bus_id": gpu.pci_bus_id,
            "pci_path": list(gpu.pci_path),
            "pcie_switch": gpu.pcie_switch,
            "mig_enabled": gpu.mig_enabled,
            "health": gpu.health,
            "mig": [
                _drop_none(
                    {
                        "id": gi.id,
                        "profile": gi.profile,
                        "placement_start": gi.placement_start,
                        "placement_size": gi.placement_size,
                        "memory_mib": gi.memory_mib,
                        "compute_instances": [
                            {"id": ci.id, "profile": ci.profile} for ci in gi.compute_instances
                        ],
                    }
                )
                for gi in gpu.mig
            ],
        }
    )


def parse_topology_annotation(text: str) -> TopologyAnnotation:
    """Parse the ``<prefix>/topology`` annotation; refuses a newer version instead of guessing.

    Read through :func:`gputopo.core.documents.load_json`, so a garbage, deeply nested or
    huge-numbered annotation is a ContractError like any other, never a RecursionError."""
    try:
        document = load_json(text, source="topology annotation")
    except DocumentError as error:
        raise ContractError(str(error)) from None
    if not isinstance(document, dict):
        raise ContractError("topology annotation must be a JSON object")
    version = document.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ContractError(f"topology annotation has no integer version 'v' (got {version!r})")
    if version < 1 or version > TOPOLOGY_ANNOTATION_VERSION:
        raise ContractError(
            f"topology annotation version {version} is not supported "
            f"(this build reads 1..{TOPOLOGY_ANNOTATION_VERSION})"
        )
    body = {key: value for key, value in document.items() if key in _ANNOTATION_KEYS}
    try:
        annotation = decode(TopologyAnnotation, body, "topology")
    except DecodeError as error:
        raise ContractError(str(error)) from None
    extra = {key: value for key, value in document.items() if key not in _ANNOTATION_KEYS}
    return dataclasses.replace(annotation, extra=extra)


# --- SLA taint helpers for the scheduler ---------------------------------------------------------


def parse_sla(value: str | None) -> int | None:
    """The SLA label/taint value as an int in 0..1000, or None when absent or malformed."""
    if value is None or not value.isdigit():
        return None
    score = int(value)
    return score if SLA_MIN <= score <= SLA_MAX else None
