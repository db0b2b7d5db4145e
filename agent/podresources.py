"""Which GPUs the kubelet has handed to which pods: a client for its pod-resources API v1.

The kubelet serves ``PodResourcesLister`` over a unix socket (by default
``/var/lib/kubelet/pod-resources/kubelet.sock``). ``List`` says which device IDs each container
holds; ``GetAllocatableResources`` says which device IDs the kubelet may hand out and on which
NUMA node each sits (the device plugin's topology hint). For ``nvidia.com/gpu`` the device IDs are
GPU UUIDs, or MIG device UUIDs when the device plugin exposes MIG slices (the ``single`` strategy
under ``nvidia.com/gpu``, the ``mixed`` strategy under ``nvidia.com/mig-<profile>``).

A node without a kubelet socket (the agent run outside Kubernetes, a demo, a kubelet that has not
started yet) is normal: :meth:`PodResourcesClient.snapshot` then returns an unavailable snapshot
and logs why once, not every cycle, and logs again only when the state changes.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gputopo.agent.topology import NodeTopology

if TYPE_CHECKING:
    from gputopo.agent.podresources_pb import api_pb2

# grpc and the generated messages (about 15 MiB of the agent's memory) are imported by the
# client on first use, so an agent without a kubelet socket (--pod-resources-socket '',
# demos on --mock) never loads them.

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
# Device-plugin resources that name NVIDIA GPUs or MIG slices.
GPU_RESOURCE_NAMES = ("nvidia.com/gpu",)
GPU_RESOURCE_PREFIXES = ("nvidia.com/mig-",)
# The kubelet's own limit for pod-resources responses (pkg/kubelet/apis/podresources).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class PodResourcesError(RuntimeError):
    """The kubelet's pod-resources socket could not be read (names the socket and the RPC)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code  # the gRPC status code name, e.g. "UNAVAILABLE"


@dataclass(frozen=True)
class DeviceAllocation:
    """One device handed to one container."""

    device_id: str  # GPU UUID or MIG device UUID (or an index, if the plugin uses that strategy)
    resource_name: str  # "nvidia.com/gpu" or "nvidia.com/mig-1g.10gb"
    pod: str
    namespace: str
    container: str
    numa_nodes: tuple[int, ...] = ()


@dataclass(frozen=True)
class AllocatableDevice:
    """One device the kubelet may hand out, with the NUMA nodes its plugin reported."""

    device_id: str
    resource_name: str
    numa_nodes: tuple[int, ...] = ()


@dataclass(frozen=True)
class PodResourcesSnapshot:
    """The GPU part of the kubelet's view at one moment; ``available`` False means unknown."""

    available: bool
    error: str | None = None  # why the snapshot is unavailable or incomplete
    allocations: tuple[DeviceAllocation, ...] = ()
    allocatable: tuple[AllocatableDevice, ...] | None = None  # None: GetAllocatable failed
    socket_path: str = DEFAULT_SOCKET
    _by_device: dict[str, tuple[DeviceAllocation, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        grouped: dict[str, list[DeviceAllocation]] = {}
        for allocation in self.allocations:
            grouped.setdefault(base_device_id(allocation.device_id), []).append(allocation)
        self._by_device.update({key: tuple(value) for key, value in grouped.items()})

    def allocations_for(self, device_id: str | None) -> tuple[DeviceAllocation, ...]:
        """The containers holding ``device_id`` (a GPU or MIG UUID): none, one, or several
        when the device plugin shares the GPU (time-slicing replicas ``<uuid>::<n>``)."""
        if device_id is None:
            return ()
        return self._by_device.get(device_id, ())

    def allocated_device_ids(self) -> frozenset[str]:
        """Base device IDs (replica suffixes removed) that at least one container holds."""
        return frozenset(self._by_device)

    def allocatable_by_numa_node(self) -> dict[int | None, tuple[str, ...]]:
        """Allocatable device IDs per NUMA node (``None``: the plugin gave no topology hint).

        A device whose hint names several NUMA nodes is listed under each of them.
        """
        grouped: dict[int | None, set[str]] = {}
        for device in self.allocatable or ():
            for numa_node in device.numa_nodes or (None,):
                grouped.setdefault(numa_node, set()).add(base_device_id(device.device_id))
        return {numa: tuple(sorted(ids)) for numa, ids in sorted(grouped.items(), key=_numa_key)}

    def free_by_numa_node(self) -> dict[int | None, tuple[str, ...]]:
        """Allocatable device IDs that no container holds, per NUMA node."""
        taken = self.allocated_device_ids()
        return {
            numa: tuple(device_id for device_id in ids if device_id not in taken)
            for numa, ids in self.allocatable_by_numa_node().items()
        }


def _numa_key(item: tuple[int | None, Any]) -> tuple[int, int]:
    numa = item[0]
    return (1, 0) if numa is None else (0, numa)


def base_device_id(device_id: str) -> str:
    """The GPU or MIG UUID behind a device ID: the NVIDIA device plugin names time-sliced
    replicas ``<uuid>::<replica>``."""
    return device_id.split("::", 1)[0]


def is_gpu_resource(resource_name: str) -> bool:
    return resource_name in GPU_RESOURCE_NAMES or resource_name.startswith(GPU_RESOURCE_PREFIXES)


def _numa_nodes(topology: api_pb2.TopologyInfo) -> tuple[int, ...]:
    return tuple(sorted({node.ID for node in topology.nodes}))


def allocations_from_response(
    response: api_pb2.ListPodResourcesResponse,
) -> tuple[DeviceAllocation, ...]:
    """The GPU devices in a ``List`` response, one entry per (container, device ID)."""
    allocations: list[DeviceAllocation] = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name):
                    continue
                numa_nodes = _numa_nodes(devices.topology)
                for device_id in devices.device_ids:
                    allocations.append(
                        DeviceAllocation(
                            device_id=device_id,
                            resource_name=devices.resource_name,
                            pod=pod.name,
                            namespace=pod.namespace,
                            container=container.name,
                            numa_nodes=numa_nodes,
                        )
                    )
    return tuple(allocations)


def allocatable_from_response(
    response: api_pb2.AllocatableResourcesResponse,
) -> tuple[AllocatableDevice, ...]:
    """The GPU devices in a ``GetAllocatableResources`` response."""
    allocatable: list[AllocatableDevice] = []
    for devices in response.devices:
        if not is_gpu_resource(devices.resource_name):
            continue
        numa_nodes = _numa_nodes(devices.topology)
        for device_id in devices.device_ids:
            allocatable.append(
                AllocatableDevice(
                    device_id=device_id,
                    resource_name=devices.resource_name,
                    numa_nodes=numa_nodes,
                )
            )
    return tuple(allocatable)


class PodResourcesClient:
    """A gRPC client for the kubelet's pod-resources socket; one channel, reused every cycle.

    :meth:`list_allocations` and :meth:`allocatable` raise :class:`PodResourcesError`;
    :meth:`snapshot` never raises and is what the run loop calls.
    """

    def __init__(
        self, socket_path: str = DEFAULT_SOCKET, *, timeout_s: float = 5.0, keep_open: bool = True
    ) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        # False: a channel per snapshot, closed after it. Between the run loop's polls gRPC
        # then has no channel and stops its own threads (docs/performance.md).
        self.keep_open = keep_open
        self._channel: Any = None
        self._stub: Any = None
        self._last_state: str | None = None  # the last state logged, to log changes only
        self._lock = threading.Lock()  # the run loop reads from two threads

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None

    def socket_present(self) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(self.socket_path).st_mode)
        except OSError:
            return False

    def _lister(self) -> Any:
        if self._stub is None:
            # An absolute path after "unix:" is gRPC's unix-socket target form.
            import grpc

            from gputopo.agent.podresources_pb import api_pb2_grpc

            target = "unix:" + os.path.abspath(self.socket_path)
            self._channel = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_http_proxy", 0),
                ],
            )
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def _call(self, method: str, request: Any) -> Any:
        import grpc

        try:
            return getattr(self._lister(), method)(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            name = code.name if code is not None else "UNKNOWN"
            raise PodResourcesError(
                f"kubelet pod-resources {method} on {self.socket_path} failed: "
                f"{name}: {error.details()}",
                name,
            ) from None

    def list_allocations(self) -> tuple[DeviceAllocation, ...]:
        """GPU and MIG devices held by containers (``List``)."""
        from gputopo.agent.podresources_pb import api_pb2

        response = self._call("List", api_pb2.ListPodResourcesRequest())
        return allocations_from_response(response)

    def allocatable(self) -> tuple[AllocatableDevice, ...]:
        """GPU and MIG devices the kubelet may hand out (``GetAllocatableResources``)."""
        from gputopo.agent.podresources_pb import api_pb2

        response = self._call("GetAllocatableResources", api_pb2.AllocatableResourcesRequest())
        return allocatable_from_response(response)

    def snapshot(self, previous: PodResourcesSnapshot | None = None) -> PodResourcesSnapshot:
        """Both calls, never raising: an unreachable kubelet gives an unavailable snapshot.

        ``List`` failing makes the snapshot unavailable; ``GetAllocatableResources`` failing
        alone (an old kubelet or a disabled feature gate) keeps the allocations and leaves
        ``allocatable`` unknown. With a ``previous`` snapshot whose allocatable devices are
        known, only ``List`` is called and those are kept: what the kubelet may hand out
        changes with device plugins, not with pods, and the discovery cycle re-reads it.
        """
        with self._lock:
            try:
                return self._snapshot(previous)
            finally:
                if not self.keep_open:
                    self.close()

    def _snapshot(self, previous: PodResourcesSnapshot | None) -> PodResourcesSnapshot:
        if not self.socket_present():
            error = f"kubelet pod-resources socket {self.socket_path} not found"
            self._log_state("missing", logging.INFO, "%s; GPU allocations are unknown", error)
            return PodResourcesSnapshot(available=False, error=error, socket_path=self.socket_path)
        try:
            allocations = self.list_allocations()
        except PodResourcesError as exc:
            self._log_state(f"list-failed:{exc.code}", logging.WARNING, "%s", exc)
            return PodResourcesSnapshot(
                available=False, error=str(exc), socket_path=self.socket_path
            )
        allocatable: tuple[AllocatableDevice, ...] | None
        error_text: str | None = None
        if previous is not None and previous.available and previous.allocatable is not None:
            return PodResourcesSnapshot(
                available=True,
                allocations=allocations,
                allocatable=previous.allocatable,
                socket_path=self.socket_path,
            )
        try:
            allocatable = self.allocatable()
        except PodResourcesError as exc:
            allocatable = None
            error_text = str(exc)
            self._log_state(f"allocatable-failed:{exc.code}", logging.WARNING, "%s", exc)
        else:
            self._log_state("ok", logging.INFO, "reading GPU allocations from %s", self.socket_path)
        return PodResourcesSnapshot(
            available=True,
            error=error_text,
            allocations=allocations,
            allocatable=allocatable,
            socket_path=self.socket_path,
        )

    def _log_state(self, state: str, level: int, message: str, *args: object) -> None:
        if state != self._last_state:
            log.log(level, message, *args)
            self._last_state = state


def unavailable(reason: str, socket_path: str = DEFAULT_SOCKET) -> PodResourcesSnapshot:
    """A snapshot for when pod-resources is switched off or not wanted (e.g. ``--mock``)."""
    return PodResourcesSnapshot(available=False, error=reason, socket_path=socket_path)


def available_gpus_by_numa_node(
    snapshot: PodResourcesSnapshot, topology: NodeTopology
) -> dict[int, dict[str, int]] | None:
    """Free ``nvidia.com/gpu`` per NUMA node, for the NodeResourceTopology's ``available``.

    A GPU is free when no container holds it or any of its MIG devices. ``None`` when the
    kubelet could not be read: unknown, which is not the same as "all free".
    """
    if not snapshot.available:
        return None
    taken = snapshot.allocated_device_ids()
    free: dict[int, dict[str, int]] = {
        numa.id: {"nvidia.com/gpu": 0} for numa in topology.numa_nodes
    }
    for gpu in topology.gpus:
        if gpu.numa_node is None:
            continue
        mig_uuids = {
            compute.uuid
            for instance in gpu.mig.instances
            for compute in instance.compute_instances
            if compute.uuid
        }
        if gpu.uuid in taken or mig_uuids & taken:
            continue
        counts = free.setdefault(gpu.numa_node, {"nvidia.com/gpu": 0})
        counts["nvidia.com/gpu"] += 1
    return free
