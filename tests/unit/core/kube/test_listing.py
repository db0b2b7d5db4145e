"""Reading a list in pages: every item once, with its kind, the continue token followed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gputopo.core.kube import KubeApiError, listing


class Pages:
    def __init__(self, names: list[str], fail_on_page: int | None = None) -> None:
        self.names = names
        self.fail_on_page = fail_on_page
        self.queries: list[dict[str, Any]] = []

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None) -> Any:
        self.queries.append(dict(query or {}))
        if self.fail_on_page == len(self.queries):
            raise KubeApiError(method, path, 410, '{"reason":"Expired"}', "Gone")
        start = int((query or {}).get("continue") or 0)
        limit = int((query or {}).get("limit") or 0)
        page = [{"metadata": {"name": n}} for n in self.names[start : start + limit]]
        more = start + limit < len(self.names)
        return {"items": page, "metadata": {"continue": str(start + limit) if more else ""}}


def test_pages_are_followed_and_items_get_their_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    pages = Pages(["a", "b", "c", "d", "e"])
    items = list(listing.list_items(pages, "/api/v1/pods", "Pod", {"fieldSelector": "x"}))
    assert [item["metadata"]["name"] for item in items] == ["a", "b", "c", "d", "e"]
    assert {item["kind"] for item in items} == {"Pod"}
    assert [q.get("continue") for q in pages.queries] == [None, "2", "4"]
    assert {q["fieldSelector"] for q in pages.queries} == {"x"}


def test_an_error_answer_is_the_clients_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    with pytest.raises(KubeApiError) as raised:
        list(listing.list_items(Pages(["a", "b", "c"], fail_on_page=2), "/api/v1/pods", "Pod"))
    assert raised.value.status == 410
