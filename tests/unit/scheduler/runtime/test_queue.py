"""The scheduling queue: priority order, backoff, parking and moving unschedulable pods."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.runtime.queue import SchedulingQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pod(name: str, priority: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulerName": "gputopo-scheduler", "containers": []}
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"namespace": "team-a", "name": name}, "spec": spec}


def spec_priority(pod: dict[str, Any]) -> int:
    return int(pod["spec"].get("priority", 0))


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def queue(clock: FakeClock) -> SchedulingQueue:
    return SchedulingQueue(priority_of=spec_priority, clock=clock)


def popped_name(queue: SchedulingQueue) -> str | None:
    item = queue.pop(timeout_s=0)
    return None if item is None else str(item[0].pod["metadata"]["name"])


def test_higher_priority_pops_first_then_oldest(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add(make_pod("old-low", 0))
    clock.now += 1
    queue.add(make_pod("new-high", 1000))
    clock.now += 1
    queue.add(make_pod("newer-low", 0))
    assert [popped_name(queue) for _ in range(3)] == ["new-high", "old-low", "newer-low"]
    assert popped_name(queue) is None


def test_adding_a_queued_pod_twice_keeps_one_entry(queue: SchedulingQueue) -> None:
    queue.add(make_pod("train-0"))
    queue.add(make_pod("train-0"))
    assert popped_name(queue) == "train-0"
    assert popped_name(queue) is None


def test_backoff_doubles_from_one_second_to_ten_second_cap(queue: SchedulingQueue) -> None:
    assert [queue.backoff_duration(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_unschedulable_pod_waits_for_a_cluster_event(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(make_pod("needs-gpu"))
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.requeue_unschedulable(queued, cycle)
    clock.now += 60
    assert popped_name(queue) is None
    assert queue.depth().unschedulable == 1
    queue.move_all_to_active_or_backoff()
    assert popped_name(queue) == "needs-gpu"


def test_moved_pod_still_in_backoff_waits_for_it(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add(make_pod("needs-gpu"))
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.requeue_unschedulable(queued, cycle)
    queue.move_all_to_active_or_backoff()
    assert queue.depth().backoff == 1
    assert popped_name(queue) is None
    clock.now += 1.0
    assert popped_name(queue) == "needs-gpu"


def test_event_during_the_attempt_is_not_lost(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add(make_pod("needs-gpu"))
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.move_all_to_active_or_backoff()  # a node was added while filters ran
    queue.requeue_unschedulable(queued, cycle)
    assert queue.depth().unschedulable == 0
    clock.now += 1.0
    assert popped_name(queue) == "needs-gpu"


def test_unschedulable_pod_is_retried_after_five_minutes_anyway(
    queue: SchedulingQueue, clock: FakeClock
) -> None:
    queue.add(make_pod("needs-gpu"))
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.requeue_unschedulable(queued, cycle)
    clock.now += 299
    assert popped_name(queue) is None
    clock.now += 1
    assert popped_name(queue) == "needs-gpu"


def test_bind_error_backs_off_exponentially(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add(make_pod("flaky"))
    for attempt, wait in enumerate([1.0, 2.0, 4.0], start=1):
        queued, _ = queue.pop(timeout_s=0) or pytest.fail("empty queue")
        assert queued.attempts == attempt
        queue.requeue_error(queued)
        clock.now += wait - 0.01
        assert popped_name(queue) is None
        clock.now += 0.01
        if attempt < 3:
            continue
        assert popped_name(queue) == "flaky"


def test_pod_deleted_during_its_attempt_is_not_requeued(queue: SchedulingQueue) -> None:
    queue.add(make_pod("short-lived"))
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.delete("team-a/short-lived")
    queue.requeue_unschedulable(queued, cycle)
    queue.move_all_to_active_or_backoff()
    assert queue.depth() == queue.depth().__class__(0, 0, 0, 0)


def test_spec_change_retries_an_unschedulable_pod(queue: SchedulingQueue, clock: FakeClock) -> None:
    pod = make_pod("picky")
    queue.add(pod)
    queued, cycle = queue.pop(timeout_s=0) or pytest.fail("empty queue")
    queue.requeue_unschedulable(queued, cycle)
    changed = make_pod("picky")
    changed["spec"]["tolerations"] = [{"key": "gputopo.io/sla", "operator": "Exists"}]
    clock.now += 1
    queue.update(changed)
    assert popped_name(queue) == "picky"


def test_pop_blocks_until_close(queue: SchedulingQueue) -> None:
    queue.close()
    assert queue.pop() is None
