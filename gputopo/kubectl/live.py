"""The live objects the plugin reads, through the ground floor's one API client.

Lists are read in pages (``limit``/``continue``, as kubectl does) and every item gets the
``kind`` a list's items lack, so the scheduler's readers take them as they take YAML. API
errors become :class:`~gputopo.core.cli.CliError` lines: what was asked, the answer, nothing
else (403, 404, an unreachable server alike).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.core.kube import KubeApiError, KubeClient, KubeConfigError, KubeConnectionError
from gputopo.core.kube.client import Query
from gputopo.core.kube.config import load_config
from gputopo.core.kube.listing import RUNNING_PODS, list_items

USER_AGENT: Final = "kubectl-gputopo"
REQUEST_TIMEOUT_S: Final = 30.0


def connect(kubeconfig: str | None, context: str | None) -> KubeClient:
    """The client for --kubeconfig/--context (else in-cluster, $KUBECONFIG, ~/.kube/config)."""
    try:
        config = load_config(kubeconfig, context=context)
    except KubeConfigError as error:  # names the file (or the in-cluster account) itself
        raise CliError(str(error)) from None
    return KubeClient(config, timeout_s=REQUEST_TIMEOUT_S, user_agent=USER_AGENT)


def api_error(error: KubeApiError | KubeConnectionError, what: str) -> CliError:
    """One line for a failed read: ``reading node x: forbidden: ...`` (exit 1, as kubectl)."""
    if isinstance(error, KubeConnectionError):
        return CliError(f"{what}: API server unreachable: {error}", EXIT_FAILURE)
    detail = error.message or error.reason or f"HTTP {error.status}"
    return CliError(f"{what}: HTTP {error.status} {error.reason}: {detail}", EXIT_FAILURE)


def get(client: KubeClient, path: str, what: str) -> dict[str, Any] | None:
    """One object, or None when the API server says it does not exist (404)."""
    try:
        result: dict[str, Any] = client.request("GET", path)
    except KubeApiError as error:
        if error.status == 404:
            return None
        raise api_error(error, what) from None
    except KubeConnectionError as error:
        raise api_error(error, what) from None
    return result


def list_objects(
    client: KubeClient, path: str, kind: str, what: str, query: Query | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a list, page by page, each with its ``kind`` set."""
    try:
        yield from list_items(client, path, kind, query)
    except (KubeApiError, KubeConnectionError) as error:
        raise api_error(error, what) from None


def list_nodes(client: KubeClient) -> list[dict[str, Any]]:
    return list(list_objects(client, "/api/v1/nodes", "Node", "listing nodes"))


def list_running_pods(client: KubeClient, *, bound_only: bool = False) -> list[dict[str, Any]]:
    """Pods that hold or want resources (not Succeeded/Failed), in every namespace."""
    selector = RUNNING_PODS + (",spec.nodeName!=" if bound_only else "")
    return list(
        list_objects(
            client, "/api/v1/pods", "Pod", "listing pods", query={"fieldSelector": selector}
        )
    )


def list_namespaces(client: KubeClient) -> list[dict[str, Any]]:
    return list(list_objects(client, "/api/v1/namespaces", "Namespace", "listing namespaces"))


def list_priority_classes(client: KubeClient) -> list[dict[str, Any]]:
    return list(
        list_objects(
            client,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            "PriorityClass",
            "listing priority classes",
        )
    )
