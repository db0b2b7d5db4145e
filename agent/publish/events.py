"""Events on the agent's own Node: what ``kubectl describe node`` shows about gputopo.

One Event per situation, not one per cycle: its name is derived from the Node and the subject
(``<node>.gputopo-<reason>-<digest>``), so a second report of the same situation — the next
cycle, or an agent restarted while the Event still exists (the API server keeps Events for its
``--event-ttl``, one hour by default) — meets 409 AlreadyExists and adds nothing. Failures are
logged, never raised: an Event is a courtesy, the metric is the record.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from gputopo.agent.publish.calls import FIELD_MANAGER, describe_api_error
from gputopo.core.retry import status_of

log = logging.getLogger(__name__)

# Node events live in "default", where the kubelet puts its own (kubectl describe node finds
# them there by involvedObject).
EVENT_NAMESPACE: Final = "default"
LABEL_CONFLICT_REASON: Final = "LabelConflict"


class EventApi(Protocol):
    """The one call of :class:`gputopo.core.kube.KubeClient` the recorder makes."""

    def request(self, method: str, path: str, *, body: Any = ..., decode: bool = ...) -> Any: ...


# An Event's name is a DNS subdomain: at most 253 characters.
_NAME_LIMIT: Final = 253


def event_name(node: str, reason: str, subject: str) -> str:
    """``<node>.gputopo-<reason>-<digest of reason and subject>``; a Node name so long that it
    would not fit is cut and its own digest appended, so the name stays unique and valid."""
    digest = hashlib.sha256(f"{reason}\0{subject}".encode()).hexdigest()[:12]
    suffix = f".gputopo-{reason.lower()}-{digest}"
    if len(node) + len(suffix) > _NAME_LIMIT:
        node_digest = hashlib.sha256(node.encode()).hexdigest()[:12]
        node = f"{node[: _NAME_LIMIT - len(suffix) - 13].rstrip('.-')}-{node_digest}"
    return node + suffix


class NodeEvents:
    """Records Events on one Node, each situation once (see the module docstring)."""

    def __init__(self, api: EventApi, node_name: str, *, component: str = FIELD_MANAGER) -> None:
        self.api = api
        self.node_name = node_name
        self.component = component
        self.created = 0  # Events this recorder created (for tests and logs)

    def warn_once(self, reason: str, subject: str, message: str, *, node_uid: str = "") -> bool:
        """A Warning Event about ``subject``; False when it already existed or failed."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, str] = {"apiVersion": "v1", "kind": "Node", "name": self.node_name}
        if node_uid:
            involved["uid"] = node_uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": event_name(self.node_name, reason, subject),
                "namespace": EVENT_NAMESPACE,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": self.component, "host": self.node_name},
            "reportingComponent": self.component,
            "reportingInstance": self.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.request(
                "POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", body=body, decode=False
            )
        except Exception as error:
            if status_of(error) == 409:
                return False  # reported before (by this agent or its previous run)
            log.warning(
                "could not record %s Event on Node %s: %s",
                reason,
                self.node_name,
                describe_api_error(error),
            )
            return False
        self.created += 1
        return True
