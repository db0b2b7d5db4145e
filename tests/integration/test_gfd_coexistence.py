"""gputopo beside GPU Feature Discovery on a real kube-apiserver: no write war.

The agent's real cycle (mocked DGX H100 through the fake pynvml and a fake sysfs, the real
publisher and its own REST client) publishes to a Node; a foreign writer — its own field
manager, as GFD's labels arrive through nfd-master — keeps setting a different value for
``nvidia.com/gpu.product``. After the first conflict the agent writes nothing to the Node over
several cycles (its PATCH calls are counted and the Node's resourceVersion is compared), says so
in ``gputopo_agent_label_conflicts`` and records one Event on the Node.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.desired import PublishOptions
from gputopo.agent.publish.events import LABEL_CONFLICT_REASON, NodeEvents
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.runloop import serve
from gputopo.core.contract import Gfd
from gputopo.core.kube import KubeClient, load_kubeconfig
from tests.controlplane import ClusterObjects, ControlPlane
from tests.integration.test_publisher import (  # noqa: F401  (fixtures)
    agent_bound_to,
    agent_client,
    agent_rbac_and_policy,
    fast_backoff,
)
from tests.unit.agent.machines import dgx_h100

pytestmark = pytest.mark.integration

MERGE = "application/merge-patch+json"
GFD_MANAGER = "nfd-master"  # GFD's labels reach the Node through NFD's master
OURS = "NVIDIA-H100-80GB-HBM3"


class CountingClient(KubeClient):
    """The agent's client, counting the Node patches it sends."""

    patches = 0

    def patch_node(self, name: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches += 1
        return super().patch_node(name, body, **kwargs)


@dataclass
class Setup:
    agent: Agent
    api: CountingClient
    metrics_url: str


@pytest.fixture
def node_name(cluster_objects: ClusterObjects) -> str:
    """A Node registered as the kubelet does, with its hostname label: the API server tracks
    managedFields only on an object that has some (a Node created bare has none, and updates
    do not start them)."""
    return cluster_objects.create_kubelet_node(f"gfd-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def agent_for(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Any]:
    """``agent_for(node, mode)``: the agent's cycle publishing to ``node``, not yet run."""
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile("dgx-h100")
    build_sysfs(profile, tmp_path / "sys")
    opened: list[tuple[Discoverer, CountingClient, Any]] = []

    def make(node: str, mode: str) -> Setup:
        api = CountingClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
        discoverer = Discoverer(make_fake_pynvml(profile), tmp_path / "sys", node)
        discoverer.open()
        publisher = Publisher(
            api, node, PublishOptions(nvidia_labels=mode), events=NodeEvents(api, node)
        )
        agent = Agent(
            discoverer, publisher=publisher, config=RunLoopConfig(interval_s=3600, udev=False)
        )
        server = serve(agent, "127.0.0.1:0", registry_version="test")
        opened.append((discoverer, api, server))
        return Setup(agent, api, f"{server.url}/metrics")

    yield make
    for discoverer, api, server in opened:
        server.stop()
        discoverer.close()
        api.close()


def foreign_sets(admin: client.ApiClient, node: str, value: str) -> str:
    """GFD's writer sets its value; the Node's resourceVersion after it."""
    body = {"metadata": {"labels": {Gfd.GPU_PRODUCT: value}}}
    patched = client.CoreV1Api(admin).patch_node(
        node, body, field_manager=GFD_MANAGER, _content_type=MERGE
    )
    return str(patched.metadata.resource_version)


def node_state(admin: client.ApiClient, node: str) -> tuple[str, dict[str, str]]:
    read = client.CoreV1Api(admin).read_node(node)
    return str(read.metadata.resource_version), dict(read.metadata.labels or {})


def conflict_events(admin: client.ApiClient, node: str) -> list[Any]:
    events = client.CoreV1Api(admin).list_namespaced_event(
        "default", field_selector=f"involvedObject.name={node}"
    )
    return [e for e in events.items if e.reason == LABEL_CONFLICT_REASON]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.parametrize("mode", ["defer", "own"])
def test_no_write_war_with_a_foreign_writer_of_gpu_product(
    agent_for: Any, kube_admin: client.ApiClient, node_name: str, mode: str
) -> None:
    setup = agent_for(node_name, mode)
    agent, api = setup.agent, setup.api
    assert agent.run_cycle().node.status == "written"
    assert node_state(kube_admin, node_name)[1][Gfd.GPU_PRODUCT] == OURS
    assert agent.run_cycle().node.status == "unchanged"

    foreign_sets(kube_admin, node_name, "NVIDIA-H100-SXM5-80GB")  # the first conflict
    if mode == "own":  # own corrects one overwrite of a key it wrote; the next one stands
        assert agent.run_cycle().node.status == "written"
        assert node_state(kube_admin, node_name)[1][Gfd.GPU_PRODUCT] == OURS
        foreign_sets(kube_admin, node_name, "NVIDIA-H100-SXM5-80GB")
    patches = api.patches
    for cycle in range(5):
        version = foreign_sets(kube_admin, node_name, f"NVIDIA-H100-SXM5-80GB-{cycle % 2}")
        for _ in range(2):
            result = agent.run_cycle()
            assert result.node.status == "unchanged", [c.describe() for c in result.node.changes]
        after, labels = node_state(kube_admin, node_name)
        assert after == version  # nothing written since the foreign writer's change
        assert labels[Gfd.GPU_PRODUCT] == f"NVIDIA-H100-SXM5-80GB-{cycle % 2}"
    assert api.patches == patches  # zero PATCH requests by gputopo after the conflict

    text = scrape(setup.metrics_url)
    assert (
        f'gputopo_agent_label_conflicts{{holder="{GFD_MANAGER}",key="{Gfd.GPU_PRODUCT}"}} 1.0'
        in text
    )
    events = conflict_events(kube_admin, node_name)
    assert len(events) == 1, [e.message for e in events]
    assert events[0].type == "Warning"
    assert events[0].involved_object.kind == "Node"
    assert Gfd.GPU_PRODUCT in events[0].message

    # GFD goes away and takes its label along: the key is gputopo's to fill in again
    client.CoreV1Api(kube_admin).patch_node(
        node_name,
        {"metadata": {"labels": {Gfd.GPU_PRODUCT: None}}},
        field_manager=GFD_MANAGER,
        _content_type=MERGE,
    )
    assert agent.run_cycle().node.status == "written"
    assert node_state(kube_admin, node_name)[1][Gfd.GPU_PRODUCT] == OURS
    assert f'key="{Gfd.GPU_PRODUCT}"' not in scrape(setup.metrics_url)


def test_defer_never_touches_a_value_gfd_wrote_first_and_off_writes_none(
    agent_for: Any, kube_admin: client.ApiClient, node_name: str
) -> None:
    foreign_sets(kube_admin, node_name, "NVIDIA-H100-From-GFD")
    setup = agent_for(node_name, "defer")
    assert setup.agent.run_cycle().node.status == "written"  # everything else
    _, labels = node_state(kube_admin, node_name)
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-From-GFD"
    assert labels[Gfd.GPU_COUNT] == "8"
    assert len(conflict_events(kube_admin, node_name)) == 1

    off = agent_for(node_name, "off")
    for _ in range(3):  # the removal hysteresis: 3 successful discoveries without the key
        off.agent.run_cycle()
    _, labels = node_state(kube_admin, node_name)
    assert labels[Gfd.GPU_PRODUCT] == "NVIDIA-H100-From-GFD"  # GFD's stays
    gputopo_nvidia = [k for k in labels if k.startswith("nvidia.com/") and k != Gfd.GPU_PRODUCT]
    assert gputopo_nvidia == []
    assert labels["gputopo.io/gpu.present"] == "true"


def test_as_the_agents_service_account_under_the_shipped_rbac_and_policy(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    kube_admin: client.ApiClient,
    node_name: str,
) -> None:
    """The DaemonSet's identity may record the conflict Event (RBAC: events create) and every
    write of the coexistence path passes the admission policy, own's one correction included."""
    with agent_bound_to(control_plane, kube_admin, node_name) as identity:
        api = agent_client(identity)
        for mode in ("defer", "own"):
            events = NodeEvents(api, node_name)
            publisher = Publisher(
                api,
                node_name,
                PublishOptions(nvidia_labels=mode),
                backoff=fast_backoff(),
                events=events,
            )
            result = publisher.publish(dgx_h100())
            assert result.ok, result.message
            foreign_sets(kube_admin, node_name, f"NVIDIA-H100-SXM5-80GB-{mode}")
            result = publisher.publish(dgx_h100())
            assert result.status == ("written" if mode == "own" else "unchanged"), result.message
            if mode == "defer":
                assert events.created == 1  # allowed: the Event exists
                assert list(publisher.label_conflicts) == [Gfd.GPU_PRODUCT]
                # GFD goes away, so own starts from a key gputopo writes itself
                client.CoreV1Api(kube_admin).patch_node(
                    node_name,
                    {"metadata": {"labels": {Gfd.GPU_PRODUCT: None}}},
                    field_manager=GFD_MANAGER,
                    _content_type=MERGE,
                )
        api.close()
    assert node_state(kube_admin, node_name)[1][Gfd.GPU_PRODUCT] == OURS
