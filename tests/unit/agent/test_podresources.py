"""The pod-resources client against a real gRPC server on a unix socket (a fake kubelet)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import grpc
import pytest

from gputopo.agent.podresources import (
    DeviceAllocation,
    PodResourcesClient,
    PodResourcesError,
    base_device_id,
)

from .fake_kubelet import FakeKubeletState, fake_kubelet, short_socket_dir

# A DGX H100's eight GPUs: 0-3 on NUMA node 0, 4-7 on NUMA node 1.
UUIDS = [f"GPU-1d0c{index:04x}-55e2-4b8f-9c1a-7f3e00000{index:03d}" for index in range(8)]
MIG_UUID = "MIG-8e1b3b5f-2c4d-5e6f-a1b2-c3d4e5f60708"


@pytest.fixture
def socket_path() -> Iterator[str]:
    with short_socket_dir() as directory:
        yield os.path.join(directory, "kubelet.sock")


@pytest.fixture
def kubelet(socket_path: str) -> Iterator[FakeKubeletState]:
    state = FakeKubeletState()
    state.allocatable["nvidia.com/gpu"] = [
        (uuid, 0 if i < 4 else 1) for i, uuid in enumerate(UUIDS)
    ]
    state.allocatable["example.com/nic"] = [("nic0", 0)]
    with fake_kubelet(socket_path, state):
        yield state


def test_list_maps_gpu_uuids_to_pod_namespace_container(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(UUIDS[0], 0), (UUIDS[1], 0)])
    kubelet.allocate("ml", "trainer-0", "sidecar", "example.com/nic", [("nic0", 0)])
    kubelet.allocate("web", "infer-1", "server", "nvidia.com/gpu", [(UUIDS[5], 1)])
    with PodResourcesClient(socket_path) as client:
        allocations = client.list_allocations()
    assert sorted(allocations, key=lambda a: a.device_id) == [
        DeviceAllocation(UUIDS[0], "nvidia.com/gpu", "trainer-0", "ml", "main", (0,)),
        DeviceAllocation(UUIDS[1], "nvidia.com/gpu", "trainer-0", "ml", "main", (0,)),
        DeviceAllocation(UUIDS[5], "nvidia.com/gpu", "infer-1", "web", "server", (1,)),
    ]


def test_poll_with_a_previous_snapshot_reads_only_allocations(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    with PodResourcesClient(socket_path) as client:
        full = client.snapshot()
        assert (kubelet.list_calls, kubelet.allocatable_calls) == (1, 1)
        kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(UUIDS[2], 0)])
        polled = client.snapshot(full)
    assert (kubelet.list_calls, kubelet.allocatable_calls) == (2, 1)
    assert polled.available and polled.allocatable == full.allocatable
    assert polled.allocated_device_ids() == {UUIDS[2]}


def test_a_client_that_does_not_keep_the_channel_open_reconnects_each_time(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    client = PodResourcesClient(socket_path, keep_open=False)
    first = client.snapshot()
    assert client._channel is None  # closed after the snapshot
    kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(UUIDS[1], 0)])
    second = client.snapshot(first)
    assert client._channel is None
    assert second.allocated_device_ids() == {UUIDS[1]}
    assert (kubelet.list_calls, kubelet.allocatable_calls) == (2, 1)


def test_poll_after_an_unknown_allocatable_asks_for_it_again(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocatable_status = grpc.StatusCode.UNIMPLEMENTED
    with PodResourcesClient(socket_path) as client:
        first = client.snapshot()
        assert first.allocatable is None
        kubelet.allocatable_status = None
        second = client.snapshot(first)
    assert kubelet.allocatable_calls == 2
    assert second.allocatable is not None and len(second.allocatable) == 8


def test_allocatable_gpus_grouped_by_numa_node_ignores_other_resources(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(UUIDS[0], 0)])
    with PodResourcesClient(socket_path) as client:
        snapshot = client.snapshot()
    assert snapshot.available and snapshot.error is None
    assert snapshot.allocatable_by_numa_node() == {
        0: tuple(sorted(UUIDS[:4])),
        1: tuple(sorted(UUIDS[4:])),
    }
    assert snapshot.free_by_numa_node()[0] == tuple(sorted(UUIDS[1:4]))
    assert [a.pod for a in snapshot.allocations_for(UUIDS[0])] == ["trainer-0"]
    assert snapshot.allocations_for(UUIDS[7]) == ()


def test_mig_devices_under_mixed_strategy_resource_names(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocate("ml", "notebook", "jupyter", "nvidia.com/mig-1g.10gb", [(MIG_UUID, 0)])
    with PodResourcesClient(socket_path) as client:
        snapshot = client.snapshot()
    (allocation,) = snapshot.allocations_for(MIG_UUID)
    assert allocation.resource_name == "nvidia.com/mig-1g.10gb"
    assert (allocation.namespace, allocation.pod, allocation.container) == (
        "ml",
        "notebook",
        "jupyter",
    )


def test_time_sliced_replicas_resolve_to_the_gpu_uuid(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocate("a", "p1", "c", "nvidia.com/gpu", [(UUIDS[2] + "::0", 0)])
    kubelet.allocate("b", "p2", "c", "nvidia.com/gpu", [(UUIDS[2] + "::3", 0)])
    with PodResourcesClient(socket_path) as client:
        snapshot = client.snapshot()
    assert base_device_id(UUIDS[2] + "::3") == UUIDS[2]
    assert sorted(a.pod for a in snapshot.allocations_for(UUIDS[2])) == ["p1", "p2"]


def test_unimplemented_get_allocatable_keeps_allocations(
    socket_path: str, kubelet: FakeKubeletState
) -> None:
    kubelet.allocatable_status = grpc.StatusCode.UNIMPLEMENTED
    kubelet.allocate("ml", "trainer-0", "main", "nvidia.com/gpu", [(UUIDS[0], 0)])
    with PodResourcesClient(socket_path) as client:
        snapshot = client.snapshot()
        with pytest.raises(PodResourcesError, match=r"GetAllocatableResources.*UNIMPLEMENTED"):
            client.allocatable()
    assert snapshot.available
    assert snapshot.allocatable is None
    assert "UNIMPLEMENTED" in (snapshot.error or "")
    assert len(snapshot.allocations) == 1


def test_missing_socket_is_reported_once_not_every_cycle(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gputopo.agent.podresources")
    with PodResourcesClient(socket_path) as client:
        snapshots = [client.snapshot() for _ in range(5)]
    assert all(not s.available for s in snapshots)
    assert snapshots[0].error == f"kubelet pod-resources socket {socket_path} not found"
    assert snapshots[0].allocations_for(UUIDS[0]) == ()
    messages = [r.getMessage() for r in caplog.records if "not found" in r.getMessage()]
    assert len(messages) == 1


def test_kubelet_appearing_later_is_picked_up_by_the_same_client(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gputopo.agent.podresources")
    with PodResourcesClient(socket_path) as client:
        assert not client.snapshot().available
        state = FakeKubeletState()
        state.allocate("ml", "late", "main", "nvidia.com/gpu", [(UUIDS[3], 0)])
        with fake_kubelet(socket_path, state):
            snapshot = client.snapshot()
            client.snapshot()
        assert not client.snapshot().available
    assert snapshot.available
    assert [a.pod for a in snapshot.allocations_for(UUIDS[3])] == ["late"]
    text = [r.getMessage() for r in caplog.records]
    assert sum("not found" in m for m in text) == 2  # before the kubelet came, after it left
    assert sum("reading GPU allocations" in m for m in text) == 1


def test_socket_path_that_is_not_a_socket_is_unavailable(tmp_path: os.PathLike[str]) -> None:
    regular = os.path.join(tmp_path, "kubelet.sock")
    with open(regular, "w") as handle:
        handle.write("not a socket")
    snapshot = PodResourcesClient(regular).snapshot()
    assert not snapshot.available


def test_stale_socket_without_a_kubelet_is_unavailable_and_logged_once(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()  # the file stays, nobody listens: what a crashed kubelet leaves behind
    caplog.set_level(logging.INFO, logger="gputopo.agent.podresources")
    with PodResourcesClient(socket_path, timeout_s=2) as client:
        snapshots = [client.snapshot() for _ in range(3)]
    assert all(not s.available for s in snapshots)
    assert "List" in (snapshots[0].error or "") and "UNAVAILABLE" in (snapshots[0].error or "")
    assert sum("UNAVAILABLE" in r.getMessage() for r in caplog.records) == 1
