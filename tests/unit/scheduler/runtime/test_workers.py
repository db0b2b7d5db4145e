"""The runtime's fire-and-forget pools: every task runs, failures are logged, shutdown drains."""

from __future__ import annotations

import logging
import threading

import pytest

from gputopo.scheduler.runtime.workers import WorkerPool


def test_every_submitted_task_runs_before_shutdown_returns() -> None:
    pool = WorkerPool("test", 4)
    done: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with lock:
            done.append(index)

    for index in range(200):
        pool.submit(work, index)
    pool.shutdown(wait=True)
    assert sorted(done) == list(range(200))


def test_a_failing_task_is_logged_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    pool = WorkerPool("test", 1)
    done: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="gputopo.scheduler.runtime"):
        pool.submit(fail)
        pool.submit(done.append, "after")
        pool.shutdown(wait=True)
    assert done == ["after"]
    assert "background task failed" in caplog.text and "boom" in caplog.text


def test_submit_after_shutdown_is_refused() -> None:
    pool = WorkerPool("test", 2)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="test pool is shut down"):
        pool.submit(print)


def test_an_unused_pool_starts_no_threads() -> None:
    before = threading.active_count()
    pool = WorkerPool("idle", 8)
    assert threading.active_count() == before
    pool.shutdown(wait=True)


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="bind workers: 0: expected at least 1"):
        WorkerPool("bind", 0)
