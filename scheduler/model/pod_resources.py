"""What a pod asks of a node: its resource requests and its host ports.

Requests follow kube-scheduler's `resourcehelper.PodRequests` (containers default requests to
limits, KEP-753 sidecars, pod overhead, pod-level resources); `hostNetwork` ports become host
ports, as the API server defaults them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

from gputopo.scheduler.model.reader import FieldReader, JsonObject
from gputopo.scheduler.quantity import CPU, MEMORY

# kube-scheduler's defaults for containers that request nothing (used by scores only).
DEFAULT_MILLI_CPU_REQUEST: Final = 100
DEFAULT_MEMORY_REQUEST: Final = 200 * 1024 * 1024


class HostPort:
    __slots__ = ("ip", "port", "protocol")

    def __init__(self, protocol: str, ip: str, port: int) -> None:
        self.protocol = protocol
        self.ip = ip
        self.port = port


def _add_into(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, 0) + amount


def _max_into(total: dict[str, int], other: Mapping[str, int]) -> None:
    for name, amount in other.items():
        if amount > total.get(name, 0):
            total[name] = amount


def _pod_requests(
    containers: Sequence[tuple[dict[str, int], bool]],
    init_containers: Sequence[tuple[dict[str, int], bool]],
    overhead: Mapping[str, int],
) -> dict[str, int]:
    """`resourcehelper.PodRequests`: max(init, sum(app)) with KEP-753 sidecars, plus overhead."""
    requests: dict[str, int] = {}
    for container_requests, _ in containers:
        _add_into(requests, container_requests)
    restartable: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for container_requests, is_sidecar in init_containers:
        if is_sidecar:
            _add_into(requests, container_requests)
            _add_into(restartable, container_requests)
            effective = dict(restartable)
        else:
            effective = dict(container_requests)
            _add_into(effective, restartable)
        _max_into(init_max, effective)
    _max_into(requests, init_max)
    _add_into(requests, overhead)
    return requests


def _with_nonzero_defaults(requests: dict[str, int]) -> dict[str, int]:
    out = dict(requests)
    out.setdefault(CPU, DEFAULT_MILLI_CPU_REQUEST)
    out.setdefault(MEMORY, DEFAULT_MEMORY_REQUEST)
    return out


def _container_ports(
    where: FieldReader, container: JsonObject, path: str, host_network: bool
) -> list[HostPort]:
    out: list[HostPort] = []
    ports = where.sequence(container, "ports", f"{path}.ports")
    for i in range(len(ports)):
        port = where.object_at(ports, i, f"{path}.ports")
        host_port = where.integer(port, "hostPort", f"{path}.ports[{i}].hostPort") or 0
        if host_network and not host_port:
            host_port = (
                where.integer(port, "containerPort", f"{path}.ports[{i}].containerPort") or 0
            )
        if host_port <= 0:
            continue
        protocol = where.string(port, "protocol", f"{path}.ports[{i}].protocol") or "TCP"
        ip = where.string(port, "hostIP", f"{path}.ports[{i}].hostIP") or "0.0.0.0"
        out.append(HostPort(protocol, ip, host_port))
    return out


class PodResources(NamedTuple):
    """A pod's requests (zero amounts dropped), the non-zero defaults scores use, its host ports."""

    requests: dict[str, int]
    nonzero_cpu: int
    nonzero_memory: int
    host_ports: tuple[HostPort, ...]


def parse_pod_resources(where: FieldReader, spec: JsonObject) -> PodResources:
    """Containers, then init containers, then overhead, then pod-level `spec.resources`."""
    host_network = spec.get("hostNetwork") is True
    app, app_nonzero, host_ports = _containers(where, spec, "containers", host_network)
    init, init_nonzero, _ = _containers(where, spec, "initContainers", host_network)
    overhead = where.resources(spec, "overhead", "spec.overhead")
    requests = _pod_requests(app, init, overhead)
    nonzero = _pod_requests(app_nonzero, init_nonzero, overhead)
    pod_level = where.mapping(spec, "resources", "spec.resources")
    if pod_level:
        for name, amount in _requests_or_limits(where, pod_level, "spec.resources").items():
            requests[name] = amount + overhead.get(name, 0)
            nonzero[name] = amount + overhead.get(name, 0)
    return PodResources(
        {name: amount for name, amount in requests.items() if amount},
        nonzero.get(CPU, 0),
        nonzero.get(MEMORY, 0),
        tuple(host_ports),
    )


_Requests = list[tuple[dict[str, int], bool]]


def _containers(
    where: FieldReader, spec: JsonObject, field: str, host_network: bool
) -> tuple[_Requests, _Requests, list[HostPort]]:
    """One container list's (requests, is-sidecar) pairs, as read and with non-zero defaults.

    Only app containers' ports are host ports; only init containers may be sidecars
    (`restartPolicy: Always`).
    """
    requests_of: _Requests = []
    nonzero_of: _Requests = []
    host_ports: list[HostPort] = []
    containers = where.sequence(spec, field, f"spec.{field}")
    for i in range(len(containers)):
        path = f"spec.{field}[{i}]"
        container = where.object_at(containers, i, f"spec.{field}")
        resources = where.mapping(container, "resources", f"{path}.resources")
        requests = _requests_or_limits(where, resources, f"{path}.resources")
        restart = where.string(container, "restartPolicy", f"{path}.restartPolicy")
        if restart and (field == "containers" or restart != "Always"):
            raise where.error(f"{path}.restartPolicy", f"unsupported value {restart!r}")
        sidecar = restart == "Always"
        requests_of.append((requests, sidecar))
        nonzero_of.append((_with_nonzero_defaults(requests), sidecar))
        if field == "containers":
            host_ports.extend(_container_ports(where, container, path, host_network))
    return requests_of, nonzero_of, host_ports


def _requests_or_limits(where: FieldReader, resources: JsonObject, path: str) -> dict[str, int]:
    """`requests`, with `limits` standing in for a resource that has no request (API defaulting)."""
    requests = where.resources(resources, "requests", f"{path}.requests")
    for name, amount in where.resources(resources, "limits", f"{path}.limits").items():
        requests.setdefault(name, amount)
    return requests
