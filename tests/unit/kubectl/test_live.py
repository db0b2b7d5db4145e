"""Reading the live objects: pages, kinds, and API errors as one line."""

from __future__ import annotations

from typing import Any, cast

import pytest

from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.core.kube import KubeClient, listing
from gputopo.kubectl import live
from tests.unit.agent.machines import dgx_h100
from tests.unit.kubectl.fake_api import FakeApi
from tests.unit.kubectl.kube_objects import node, pod


def _client(api: FakeApi) -> KubeClient:
    return cast(KubeClient, api)


def test_lists_are_read_in_pages_and_items_get_their_kind(monkeypatch: Any) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    api = FakeApi([node(f"n{i}", dgx_h100()) for i in range(5)])
    nodes = live.list_nodes(_client(api))
    assert [n["metadata"]["name"] for n in nodes] == ["n0", "n1", "n2", "n3", "n4"]
    assert {n["kind"] for n in nodes} == {"Node"}
    assert [query.get("continue") for _, query in api.queries] == [None, "2", "4"]


def test_running_pods_leave_out_finished_and_optionally_unbound_pods() -> None:
    api = FakeApi(
        [pod("a", 1, "n1"), pod("b", 1, "n1", phase="Succeeded"), pod("c", 1, phase="Pending")]
    )
    assert [p["metadata"]["name"] for p in live.list_running_pods(_client(api))] == ["a", "c"]
    bound = live.list_running_pods(_client(api), bound_only=True)
    assert [p["metadata"]["name"] for p in bound] == ["a"]
    assert api.queries[-1][1]["fieldSelector"] == (
        "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="
    )


def test_a_missing_object_is_none() -> None:
    assert live.get(_client(FakeApi([])), "/api/v1/nodes/nope", "reading node nope") is None


def test_forbidden_is_one_line_naming_what_was_read() -> None:
    api = FakeApi([], status=403)
    with pytest.raises(CliError) as error:
        live.list_nodes(_client(api))
    assert str(error.value) == "listing nodes: HTTP 403 Forbidden: pods is forbidden: no"
    assert error.value.status == EXIT_FAILURE


def test_an_unreachable_server_is_one_line() -> None:
    api = FakeApi([])
    api.unreachable = True
    with pytest.raises(CliError) as error:
        live.get(_client(api), "/api/v1/nodes/x", "reading node x")
    assert str(error.value).startswith("reading node x: API server unreachable: GET /api/v1/")


def test_an_unusable_kubeconfig_is_one_line(tmp_path: Any) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(CliError) as error:
        live.connect(str(path), None)
    assert "no current-context" in str(error.value) and str(path) in str(error.value)
