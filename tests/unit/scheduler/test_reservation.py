"""GPU reservations: which node a large waiting pod holds, when it holds none, and expiry."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gputopo.scheduler import gpu_alloc
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.reservation import Reservations, choose_node, reservation_message
from gputopo.scheduler.scheduling_profile import default_profile, parse_profile
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod


def _snapshot(nodes: list[Any], bound: list[Any]) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for node in nodes:
        snapshot.add_node(node)
    for pod in bound:
        snapshot.add_pod(pod)
    return snapshot


def _held(node: str, *gpus: int) -> list[Any]:
    return [gpu_pod(f"{node}-p{i}", gpus=count, node_name=node) for i, count in enumerate(gpus)]


def _choose(snapshot: ClusterSnapshot, gpus: int = 8, taken: tuple[str, ...] = ()) -> str | None:
    choice = choose_node(parse_pod(gpu_pod("big", gpus=gpus)), snapshot, default_profile(), taken)
    return choice.node if choice is not None else None


def test_the_node_with_fewest_gpus_held_is_reserved() -> None:
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-b"), gpu_node("dgx-c")],
        _held("dgx-a", 2, 2, 2) + _held("dgx-b", 4) + _held("dgx-c", 2, 4),
    )
    assert _choose(snapshot) == "dgx-b"  # 4 held, against 6 and 6


def test_ties_go_to_the_node_name() -> None:
    snapshot = _snapshot(
        [gpu_node("dgx-b"), gpu_node("dgx-a")], _held("dgx-b", 4) + _held("dgx-a", 4)
    )
    assert _choose(snapshot) == "dgx-a"


def test_taken_nodes_are_not_reserved_twice() -> None:
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-b")], _held("dgx-a", 2) + _held("dgx-b", 4)
    )
    assert _choose(snapshot, taken=("dgx-a",)) == "dgx-b"
    assert _choose(snapshot, taken=("dgx-a", "dgx-b")) is None


def test_small_pods_reserve_nothing() -> None:
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-b")], _held("dgx-a", 4, 2) + _held("dgx-b", 4, 1)
    )
    assert _choose(snapshot, gpus=4) is None  # below reservation.minGpus (8)
    off = dataclasses.replace(default_profile(), reservation_min_gpus=0)
    assert choose_node(parse_pod(gpu_pod("big", gpus=4)), snapshot, off) is None
    low = dataclasses.replace(default_profile(), reservation_min_gpus=4)
    choice = choose_node(parse_pod(gpu_pod("big", gpus=4)), snapshot, low)
    assert choice is not None and (choice.node, choice.held_gpus) == ("dgx-b", 5)


def test_a_full_cluster_reserves_nothing() -> None:
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-b")], _held("dgx-a", 4, 2) + _held("dgx-b", 4)
    )
    assert _choose(snapshot) is None  # 6 GPUs free in all: it waits for capacity, not luck


def test_a_pod_that_fits_now_reserves_nothing() -> None:
    snapshot = _snapshot([gpu_node("dgx-a"), gpu_node("dgx-b")], _held("dgx-a", 4))
    assert _choose(snapshot) is None


def test_nodes_the_pod_could_never_use_are_passed_over() -> None:
    taint = [{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]
    snapshot = _snapshot(
        [
            gpu_node("dgx-tainted", taints=taint),  # fewest held, but not tolerated
            gpu_node("l4-quad", gpus=4),  # too small even when empty
            gpu_node("dgx-cpu-full", cpu="8"),  # a CPU-only pod that stays fills its CPUs
            gpu_node("dgx-ok"),
        ],
        _held("dgx-tainted", 1)
        + _held("l4-quad", 1)
        + _held("dgx-cpu-full", 1)
        + [gpu_pod("cpu-hog", cpu="7500m", node_name="dgx-cpu-full")]
        + _held("dgx-ok", 2, 2, 2),
    )
    assert _choose(snapshot) == "dgx-ok"


def test_choosing_leaves_the_snapshot_and_the_gpu_bookkeeping_as_they_were() -> None:
    # Devices held after a pod left the node: recomputing from scratch would move them.
    snapshot = _snapshot([gpu_node("dgx-a"), gpu_node("dgx-b")], _held("dgx-a", 2, 2, 2))
    allocator = gpu_alloc.GpuAllocator.of(snapshot)
    slot = snapshot.slot_of("dgx-a")
    assert slot is not None
    allocator.state(slot)
    snapshot.remove_pod("default/dgx-a-p0")
    snapshot.add_pod(gpu_pod("late", gpus=1, node_name="dgx-a"))
    snapshot.add_pod(gpu_pod("dgx-b-p0", gpus=2, node_name="dgx-b"))
    before = dict(allocator.state(slot).pod_gpus)  # type: ignore[union-attr]
    assert before["default/late"][0] == (0,)
    assert _choose(snapshot, taken=("dgx-b",)) == "dgx-a"
    assert allocator.state(slot).pod_gpus == before  # type: ignore[union-attr]
    assert int(allocator.free_total[slot]) == 3
    assert {key for key, _ in snapshot.node_pods[slot].items()} == set(before)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _book(clock: _Clock, ttl_s: int = 60) -> tuple[Reservations, ClusterSnapshot]:
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-b"), gpu_node("dgx-c")],
        _held("dgx-a", 2) + _held("dgx-b", 4) + _held("dgx-c", 4),
    )
    profile = dataclasses.replace(default_profile(), reservation_ttl_s=ttl_s)
    return Reservations(snapshot, profile, clock), snapshot


def test_a_reservation_is_kept_until_it_expires_then_waits_out_a_cooldown() -> None:
    clock = _Clock()
    book, _ = _book(clock, ttl_s=60)
    pod = gpu_pod("big", gpus=8)
    assert book.reserve(pod, taken=()) == "dgx-a"
    clock.now += 59
    assert book.reserve(pod, taken=("dgx-a",)) == "dgx-a"  # its own: kept, not re-chosen
    assert book.expire(lambda key: True) == []
    clock.now += 1
    assert book.reserve(pod, taken=()) is None  # ran out
    assert book.expire(lambda key: True) == [("default/big", "dgx-a")]
    assert book.node_of("default/big") is None
    clock.now += 59
    assert book.reserve(pod, taken=()) is None  # cooldown: as long as the hold lasted
    clock.now += 1
    assert book.expire(lambda key: True) == []
    assert book.reserve(pod, taken=()) == "dgx-a"


def test_reservations_of_pods_no_longer_pending_are_dropped_without_a_clear() -> None:
    clock = _Clock()
    book, _ = _book(clock)
    assert book.reserve(gpu_pod("big", gpus=8), taken=()) == "dgx-a"
    clock.now += 3600
    assert book.expire(lambda key: False) == []  # bound or deleted: nothing left to clear
    assert book.node_of("default/big") is None


def test_a_reservation_on_a_deleted_node_moves() -> None:
    clock = _Clock()
    book, snapshot = _book(clock)
    pod = gpu_pod("big", gpus=8)
    assert book.reserve(pod, taken=()) == "dgx-a"
    snapshot.remove_node("dgx-a")
    assert book.reserve(pod, taken=()) == "dgx-b"


def test_released_reservations_are_forgotten() -> None:
    clock = _Clock()
    book, _ = _book(clock)
    assert book.reserve(gpu_pod("big", gpus=8), taken=()) == "dgx-a"
    book.release("default/big")
    assert book.node_of("default/big") is None


def test_reservation_message_follows_the_fit_error() -> None:
    assert reservation_message("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.", "n") == (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. "
        "reservation: nominated node n reserved until its GPUs free up."
    )


def test_profile_reservation_defaults_and_validation() -> None:
    profile = default_profile()
    assert (profile.reservation_min_gpus, profile.reservation_ttl_s) == (8, 300)
    custom = parse_profile({"reservation": {"minGpus": 4, "ttlSeconds": 30}}, "p.yaml")
    assert (custom.reservation_min_gpus, custom.reservation_ttl_s) == (4, 30)
    with pytest.raises(SchedulerInputError, match=r"^profile p.yaml: reservation.minGpus: "):
        parse_profile({"reservation": {"minGpus": "eight"}}, "p.yaml")
    with pytest.raises(SchedulerInputError, match=r"^profile p.yaml: reservation.ttlSeconds: "):
        parse_profile({"reservation": {"ttlSeconds": 0}}, "p.yaml")
    with pytest.raises(SchedulerInputError, match=r"reservation.ttl: unknown field"):
        parse_profile({"reservation": {"ttl": 30}}, "p.yaml")


def test_free_gpus_on_nodes_the_pod_cannot_use_do_not_count() -> None:
    taint = [{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]
    snapshot = _snapshot(
        [gpu_node("dgx-a"), gpu_node("dgx-tainted", taints=taint)], _held("dgx-a", 4)
    )
    assert _choose(snapshot) is None  # 12 free, but only dgx-a's 4 are usable


def test_one_reservation_per_node_even_before_the_nomination_is_watched() -> None:
    clock = _Clock()
    book, _ = _book(clock)
    assert book.reserve(gpu_pod("big", gpus=8), taken=()) == "dgx-a"
    assert book.reserve(gpu_pod("bigger", gpus=8), taken=()) == "dgx-b"  # dgx-a is held
    assert book.held() == {"default/big": "dgx-a", "default/bigger": "dgx-b"}
