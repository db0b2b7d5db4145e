"""The reflector's answers to what a watch can say: 410 Gone relists, other errors back off."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gputopo.scheduler.runtime.informer import Reflector, strip_managed_fields
from gputopo.scheduler.runtime.kube import JsonDict


def _node(name: str, version: str) -> JsonDict:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ScriptedApi:
    """Lists from ``lists`` in turn; each watch plays the next script, then blocks."""

    def __init__(self, lists: list[list[JsonDict]], watches: list[list[JsonDict]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_versions: list[str] = []
        self.idle = threading.Event()

    def request(self, method: str, path: str, **_: Any) -> JsonDict:
        items = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        version = max((int(i["metadata"]["resourceVersion"]) for i in items), default=1)
        return {"items": items, "metadata": {"resourceVersion": str(version)}}

    def stream_lines(
        self,
        path: str,
        query: Mapping[str, str | int | bool],
        timeout_s: float,
        on_open: Callable[[Any], None] | None = None,
    ) -> Iterator[JsonDict]:
        self.watch_versions.append(str(query["resourceVersion"]))
        if not self.watches:
            self.idle.set()
            threading.Event().wait(0.05)
            return
        yield from self.watches.pop(0)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_add(self, kind: str, obj: JsonDict) -> None:
        self.seen.append(("add", obj["metadata"]["name"]))

    def on_update(self, kind: str, old: JsonDict, new: JsonDict) -> None:
        self.seen.append(("update", new["metadata"]["name"]))

    def on_delete(self, kind: str, obj: JsonDict) -> None:
        self.seen.append(("delete", obj["metadata"]["name"]))


def _run(
    api: ScriptedApi,
    handler: Recorder,
    transform: Callable[[JsonDict], JsonDict] | None = None,
) -> Reflector:
    errors: list[Exception] = []
    reflector = Reflector(
        api,  # type: ignore[arg-type]
        "Node",
        "/api/v1/nodes",
        handler,  # type: ignore[arg-type]
        initial_backoff_s=0.01,
        on_error=lambda _, err: errors.append(err),
        transform=transform,
    )
    reflector.start()
    assert api.idle.wait(10), "the reflector never went idle"
    reflector.stop()
    assert not errors, errors
    return reflector


def test_410_gone_error_event_relists_and_delivers_the_difference() -> None:
    gone = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
    }
    api = ScriptedApi(
        lists=[[_node("a", "5"), _node("b", "6")], [_node("b", "9"), _node("c", "8")]],
        watches=[[{"type": "MODIFIED", "object": _node("a", "7")}, gone]],
    )
    handler = Recorder()
    reflector = _run(api, handler)
    assert reflector.relists == 2
    assert handler.seen == [
        ("add", "a"),
        ("add", "b"),
        ("update", "a"),
        ("update", "b"),  # changed while the watch was gone
        ("add", "c"),
        ("delete", "a"),  # deleted while the watch was gone
    ]
    assert api.watch_versions[:2] == ["6", "9"]  # the new watch starts from the relist


def test_bookmarks_advance_the_resource_version_without_events() -> None:
    api = ScriptedApi(
        lists=[[_node("a", "5")]],
        watches=[[{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}]],
    )
    handler = Recorder()
    _run(api, handler)
    assert handler.seen == [("add", "a")]
    assert api.watch_versions[:2] == ["5", "42"]


def _managed(node: JsonDict) -> JsonDict:
    node["metadata"]["managedFields"] = [{"manager": "kwok", "fieldsV1": {"f:status": {}}}]
    return node


class KeepingRecorder(Recorder):
    """Also keeps the objects handed over, to see what the handler was given."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: list[JsonDict] = []

    def on_add(self, kind: str, obj: JsonDict) -> None:
        super().on_add(kind, obj)
        self.objects.append(obj)

    def on_update(self, kind: str, old: JsonDict, new: JsonDict) -> None:
        super().on_update(kind, old, new)
        self.objects.append(new)


def test_transform_trims_listed_and_watched_objects_before_store_and_handler() -> None:
    api = ScriptedApi(
        lists=[[_managed(_node("a", "5"))]],
        watches=[[{"type": "MODIFIED", "object": _managed(_node("a", "7"))}]],
    )
    handler = KeepingRecorder()
    reflector = _run(api, handler, strip_managed_fields)
    assert handler.seen == [("add", "a"), ("update", "a")]
    assert [obj["metadata"] for obj in handler.objects] == [
        {"name": "a", "resourceVersion": "5"},
        {"name": "a", "resourceVersion": "7"},
    ]
    assert reflector.store["a"] is handler.objects[-1]  # one copy: the store's is the handler's


def test_without_transform_objects_are_kept_whole() -> None:
    api = ScriptedApi(lists=[[_managed(_node("a", "5"))]], watches=[])
    handler = KeepingRecorder()
    _run(api, handler)
    assert "managedFields" in handler.objects[0]["metadata"]


def test_strip_managed_fields_leaves_everything_else() -> None:
    pod = {
        "metadata": {"name": "p", "labels": {"app": "x"}, "managedFields": [{"manager": "m"}]},
        "spec": {"nodeName": "dgx-a"},
    }
    assert strip_managed_fields(pod) == {
        "metadata": {"name": "p", "labels": {"app": "x"}},
        "spec": {"nodeName": "dgx-a"},
    }
    assert strip_managed_fields({"kind": "Status"}) == {"kind": "Status"}
