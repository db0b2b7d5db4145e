"""The event recorder: what it sends, and what it remembers to make a series of repeats."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gputopo.scheduler.runtime import events
from gputopo.scheduler.runtime.events import EventRecorder


class RecordingApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        with self.lock:
            self.requests.append((method, path, body))
        return {}


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "train", "name": name, "uid": f"uid-{name}"}}


def _recorder(api: RecordingApi) -> EventRecorder:
    return EventRecorder(
        api,  # type: ignore[arg-type]
        controller="gputopo-scheduler",
        instance="test",
        workers=1,
    )


def test_scheduled_events_are_sent_but_not_remembered() -> None:
    api = RecordingApi()
    recorder = _recorder(api)
    for name in ("llama-0", "llama-1"):
        recorder.scheduled(_pod(name), "dgx-a")
    recorder.close()
    assert [(method, body["reason"]) for method, _, body in api.requests] == [
        ("POST", "Scheduled"),
        ("POST", "Scheduled"),
    ]
    assert api.requests[0][2]["note"] == "Successfully assigned train/llama-0 to dgx-a"
    assert recorder._recorded == {}  # a pod is bound once: nothing kept per bound pod


def test_a_repeated_failure_counts_in_the_first_events_series() -> None:
    api = RecordingApi()
    recorder = _recorder(api)
    for _ in range(2):
        recorder.failed_scheduling(_pod("llama-0"), "0/2 nodes are available")
    recorder.close()
    event_writes = [(method, body) for method, path, body in api.requests if "/events" in path]
    assert [method for method, _ in event_writes] == ["POST", "PATCH"]
    assert event_writes[1][1]["series"]["count"] == 2


def test_the_expiry_scan_waits_until_the_remembered_events_have_doubled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "REMEMBERED_EVENTS", 2)
    recorder = _recorder(RecordingApi())
    recorder._expire_above = 2
    scans: list[int] = []
    monkeypatch.setattr(
        recorder, "_expire_locked", lambda now: scans.append(len(recorder._recorded))
    )
    for index in range(7):  # all within the series window: nothing expires
        recorder.preempted(_pod(f"victim-{index}"), _pod("llama-0"), "dgx-a")
    recorder.close()
    assert scans == [3, 7]  # not one scan per event once above the limit
