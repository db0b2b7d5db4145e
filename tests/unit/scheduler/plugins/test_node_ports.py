"""NodePorts against kube-scheduler's semantics and reason string."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.scheduler.sched_builders import cluster, node, pod, reasons, schedule


def _port(port: int, protocol: str = "TCP", ip: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": port, "hostPort": port, "protocol": protocol}
    if ip:
        out["hostIP"] = ip
    return out


PORT_REASON = "node(s) didn't have free ports for the requested pod ports"


@pytest.mark.parametrize(
    ("existing", "wanted", "conflict"),
    [
        (_port(9400), _port(9400), True),
        (_port(9400), _port(9401), False),
        (_port(9400, "TCP"), _port(9400, "UDP"), False),
        (_port(9400, ip="10.0.0.1"), _port(9400, ip="10.0.0.2"), False),
        (_port(9400, ip="10.0.0.1"), _port(9400, ip="10.0.0.1"), True),
        (_port(9400, ip="10.0.0.1"), _port(9400), True),  # wanted 0.0.0.0 conflicts with any IP
        (_port(9400), _port(9400, ip="10.0.0.1"), True),  # existing 0.0.0.0 conflicts too
    ],
)
def test_host_port_conflicts(
    existing: dict[str, Any], wanted: dict[str, Any], conflict: bool
) -> None:
    snapshot = cluster([node("a")], [pod("old", node_name="a", ports=[existing])])
    result = schedule(pod("p", ports=[wanted]), snapshot)
    if conflict:
        assert result.message == f"0/1 nodes are available: 1 {PORT_REASON}."
    else:
        assert result.node == "a"


def test_host_network_container_ports_are_host_ports() -> None:
    snapshot = cluster([node("a")], [pod("old", node_name="a", ports=[_port(9400)])])
    wanted = pod("p", hostNetwork=True, ports=[{"containerPort": 9400}])
    assert reasons(schedule(wanted, snapshot)) == {"a": (PORT_REASON,)}
