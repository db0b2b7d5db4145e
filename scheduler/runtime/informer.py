"""List+watch of one resource, delivering adds, updates and deletes to a handler.

What client-go's reflector does, on JSON dicts: list (paged), then watch from the list's
resourceVersion with bookmarks; on 410 Gone (or an ERROR event saying so) relist and
deliver the difference against what was known, so a deletion missed while disconnected still
arrives as a delete. Connection errors reconnect with capped exponential backoff and jitter
(:class:`gputopo.core.retry.Backoff`, the agent's policy too).

A ``transform`` trims each object before it is stored or handed on, as client-go's
``SetTransform``: the store keeps every object of its kind for as long as it exists, so what
nobody reads should not stay (`strip_managed_fields`, kube-scheduler's choice too).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gputopo.core.retry import Backoff
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError

log = logging.getLogger("gputopo.scheduler.informer")


class EventHandler(Protocol):
    def on_add(self, kind: str, obj: JsonDict) -> None: ...
    def on_update(self, kind: str, old: JsonDict, new: JsonDict) -> None: ...
    def on_delete(self, kind: str, obj: JsonDict) -> None: ...


def strip_managed_fields(obj: JsonDict) -> JsonDict:
    """Drop ``metadata.managedFields`` (the API server's per-manager field sets: a quarter to a
    third of a Pod's JSON, more with every writer), which the scheduler never reads."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def object_key(obj: JsonDict) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


@dataclass
class Reflector:
    """One resource's list+watch loop in its own thread."""

    api: KubeApi
    kind: str
    path: str
    handler: EventHandler
    page_size: int = 500
    watch_timeout_s: tuple[int, int] = (240, 480)
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    on_error: Callable[[str, Exception], None] | None = None
    transform: Callable[[JsonDict], JsonDict] | None = None
    store: dict[str, JsonDict] = field(default_factory=dict, init=False)
    synced: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _resource_version: str = field(default="", init=False)
    _response: Any = field(default=None, init=False)
    _relist_requested: threading.Event = field(default_factory=threading.Event, init=False)
    relists: int = field(default=0, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"reflector-{self.kind}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the loop, interrupting a watch blocked on a read."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def request_relist(self) -> None:
        """List again and deliver the difference, as after 410 Gone (ends the current watch)."""
        self._relist_requested.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = Backoff(self.initial_backoff_s, self.max_backoff_s)
        failures = 0  # in a row: the backoff's attempt number
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list or self._relist_requested.is_set():
                    self._relist_requested.clear()
                    self._list_and_replace()
                    need_list = False
                    failures = 0
                self._watch()
                failures = 0
            except _Gone:
                log.info("watch expired, relisting", extra={"resource": self.kind})
                need_list = True
            except Exception as err:
                if self._stop.is_set():
                    return
                if self._relist_requested.is_set():
                    continue
                if isinstance(err, KubeApiError) and err.status == 410:
                    need_list = True
                    continue
                if self.on_error is not None:
                    self.on_error(self.kind, err)
                delay = backoff.delay(failures)
                log.warning(
                    "list/watch failed, retrying",
                    extra={"resource": self.kind, "error": str(err), "retry_in_s": round(delay, 2)},
                )
                self._stop.wait(delay)
                failures += 1

    def _list_and_replace(self) -> None:
        items: dict[str, JsonDict] = {}
        continue_token = ""
        resource_version = ""
        while True:
            query: dict[str, str | int | bool] = {"limit": self.page_size}
            if continue_token:
                query["continue"] = continue_token
            answer = self.api.request("GET", self.path, query=query, timeout_s=60)
            transform = self.transform
            for item in answer.get("items") or []:
                items[object_key(item)] = transform(item) if transform is not None else item
            meta = answer.get("metadata") or {}
            continue_token = str(meta.get("continue") or "")
            resource_version = str(meta.get("resourceVersion") or resource_version)
            if not continue_token:
                break
        self.relists += 1
        old_store = self.store
        self.store = {}
        for key, obj in items.items():
            self.store[key] = obj
            known = old_store.pop(key, None)
            if known is None:
                self._deliver("ADDED", None, obj)
            elif known.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get(
                "resourceVersion"
            ):
                self._deliver("MODIFIED", known, obj)
        for gone in old_store.values():
            self._deliver("DELETED", None, gone)
        self._resource_version = resource_version
        self.synced.set()

    def _deliver(self, event: str, old: JsonDict | None, obj: JsonDict) -> None:
        """Hand one change to the handler; a bad object is logged and skipped, never fatal."""
        try:
            if event == "ADDED":
                self.handler.on_add(self.kind, obj)
            elif event == "MODIFIED" and old is not None:
                self.handler.on_update(self.kind, old, obj)
            else:
                self.handler.on_delete(self.kind, obj)
        except Exception as err:
            log.warning(
                "event handler rejected an object",
                extra={"resource": self.kind, "object": object_key(obj), "error": str(err)},
            )

    def _watch(self) -> None:
        timeout = random.randint(*self.watch_timeout_s)
        query: dict[str, str | int | bool] = {
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": self._resource_version,
            "timeoutSeconds": timeout,
        }
        for event in self.api.stream_lines(
            self.path, query, timeout_s=timeout + 30, on_open=self._remember_response
        ):
            if self._stop.is_set():
                return
            self._dispatch(event)

    def _remember_response(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():
            response.shutdown()

    def _dispatch(self, event: JsonDict) -> None:
        kind = event.get("type")
        obj: Any = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise _Gone()
            raise KubeApiError(
                "WATCH",
                self.path,
                int(obj.get("code") or 0),
                str(obj.get("reason", "")),
                str(obj.get("message", "")),
            )
        version = str(obj.get("metadata", {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self._resource_version = version or self._resource_version
            return
        if self.transform is not None:
            obj = self.transform(obj)
        key = object_key(obj)
        if kind == "ADDED" or kind == "MODIFIED":
            known = self.store.get(key)
            self.store[key] = obj
            self._deliver("MODIFIED" if known is not None else "ADDED", known, obj)
        elif kind == "DELETED":
            self.store.pop(key, None)
            self._deliver("DELETED", None, obj)
        if version:
            self._resource_version = version
