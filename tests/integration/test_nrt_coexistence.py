"""NFD's topology-updater and gputopo's agent on one node, on a real kube-apiserver: the NRT
NFD created is never written by the agent, which writes its own once NFD's is gone."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from kubernetes import client

from gputopo.agent.publish.nrt import (
    FIELD_MANAGER,
    GROUP,
    MANAGED_BY,
    PLURAL,
    VERSION,
    NrtPublisher,
)
from tests.integration.test_publisher import agent_client, fast_backoff
from tests.unit.agent.machines import dgx_h100

pytestmark = pytest.mark.integration


def test_the_agent_never_writes_nfds_nrt_and_takes_over_when_it_is_gone(
    kube_admin: client.ApiClient, gputopo_crds: list[str]
) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    name = f"nfd-{uuid.uuid4().hex[:8]}"
    nfd = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeResourceTopology",
        "metadata": {"name": name},
        "attributes": [{"name": "topologyManagerPolicy", "value": "single-numa-node"}],
        "zones": [{"name": "node-0", "type": "Node", "resources": []}],
    }
    created = custom.create_cluster_custom_object(
        GROUP, VERSION, PLURAL, nfd, field_manager="nfd-topology-updater"
    )
    publisher = NrtPublisher(agent_client(kube_admin), name, backoff=fast_backoff())
    try:
        for _ in range(2):
            result = publisher.publish(dgx_h100())
            assert result.status == "unchanged" and "nfd-topology-updater" in result.message
        stored = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        assert publisher.counters.foreign_nrt == 1 and publisher.counters.writes == 0

        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert publisher.publish(dgx_h100()).status == "written"
        ours = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert ours["metadata"]["labels"][MANAGED_BY] == FIELD_MANAGER
        assert publisher.counters.foreign_nrt == 0
        assert publisher.publish(dgx_h100()).status == "unchanged"
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
