"""The Node writer: read the Node, plan, merge-patch it; re-read and re-plan on 409 Conflict.

Talks through anything with :class:`gputopo.core.kube.KubeClient`'s ``read_node`` and
``patch_node``, which answer plain JSON dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

from gputopo.agent.publish.calls import (
    FIELD_MANAGER,
    ApiCallFailed,
    PublishCounters,
    PublishResult,
    describe_api_error,
)
from gputopo.agent.publish.desired import PublishOptions, desired_state, is_successful_discovery
from gputopo.agent.publish.events import LABEL_CONFLICT_REASON, NodeEvents
from gputopo.agent.publish.nvidia_labels import LabelConflict
from gputopo.agent.publish.plan import NodeView, Plan, plan, plan_prune, taints_only
from gputopo.agent.sla import SlaHysteresis, SlaState, SlaStateError
from gputopo.agent.topology import NodeTopology
from gputopo.core.retry import Backoff, is_retryable, status_of
from gputopo.core.validate import ValidationError, ValidationGate

log = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"


class NodeApi(Protocol):
    """The calls of :class:`gputopo.core.kube.KubeClient` the Node writer uses: a Node comes
    back as its JSON document."""

    def read_node(self, name: str) -> dict[str, Any]: ...

    def patch_node(
        self, name: str, body: Any, *, field_manager: str | None = ..., _content_type: str = ...
    ) -> Any: ...


class Publisher:
    """Writes one Node's labels, taints and annotations (``publish``, ``prune``)."""

    def __init__(
        self,
        api: NodeApi,
        node_name: str,
        options: PublishOptions | None = None,
        *,
        gate: ValidationGate | None = None,
        backoff: Backoff | None = None,
        counters: PublishCounters | None = None,
        hysteresis: SlaHysteresis | None = None,
        max_conflict_retries: int = 8,
        events: NodeEvents | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.options = options or PublishOptions()
        self.gate = gate or ValidationGate()
        self.backoff = backoff or Backoff()
        self.counters = counters or PublishCounters()
        self.hysteresis = hysteresis or SlaHysteresis(
            self.options.sla_rise_after_observations, self.options.sla_rise_after_seconds
        )
        self.max_conflict_retries = max_conflict_retries
        self.events = events
        # nvidia.com/* keys another writer holds with another value, as last planned; each
        # reported in one Event when it starts (docs/coexistence.md).
        self.label_conflicts: dict[str, LabelConflict] = {}

    # API calls with retries

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.backoff.max_attempts):
            try:
                return fn()
            except Exception as error:
                status = status_of(error)
                if status == 409:
                    raise
                if not is_retryable(error):
                    self.counters.api_errors += 1
                    raise ApiCallFailed(f"{what}: {describe_api_error(error)}", status) from None
                self.counters.api_errors += 1
                if attempt + 1 >= self.backoff.max_attempts:
                    raise ApiCallFailed(
                        f"{what}: {describe_api_error(error)} "
                        f"(gave up after {attempt + 1} attempts)",
                        status,
                    ) from None
                delay = self.backoff.delay(attempt)
                self.counters.retries += 1
                log.warning(
                    "%s failed (%s); retry %d in %.1fs",
                    what,
                    describe_api_error(error),
                    attempt + 1,
                    delay,
                )
                self.backoff.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_node(self) -> NodeView:
        node = self._call(
            f"reading Node {self.node_name}", lambda: self.api.read_node(self.node_name)
        )
        return NodeView.from_dict(node)

    def _patch(self, patch: dict[str, Any]) -> None:
        self._call(
            f"patching Node {self.node_name}",
            lambda: self.api.patch_node(
                self.node_name, patch, field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH
            ),
        )

    # the two operations

    def publish(
        self, topology: NodeTopology, *, dry_run: bool = False, health_taint: bool = True
    ) -> PublishResult:
        """One publish of a successful discovery; re-plans and retries on 409 Conflict.

        ``health_taint`` False: the failed GPUs are marked by DeviceTaintRules instead."""
        self.counters.cycles += 1
        if not is_successful_discovery(topology):
            self.counters.discovery_failures += 1
            message = (
                f"discovery failed (NVML: {topology.nvml.error or 'unavailable'}, "
                f"{len(topology.pci_only_gpus)} GPU(s) on PCI); keeping the Node as it is"
            )
            log.warning("%s", message)
            return PublishResult("skipped", message=message)
        if topology.incomplete:
            self.counters.partial_discoveries += 1
            shown = "; ".join(topology.incomplete[:5])
            more = len(topology.incomplete) - 5
            log.warning(
                "partial discovery (%s%s): keeping the last good topology values on Node %s",
                shown,
                f"; {more} more" if more > 0 else "",
                self.node_name,
            )

        def make_plan(node: NodeView) -> Plan:
            desired = desired_state(
                topology,
                self.options,
                self.gate,
                previous_sla=self._previous_sla(node),
                hysteresis=self.hysteresis,
                health_taint=health_taint,
            )
            others = {k: v for k, v in node.annotations.items() if k not in desired.annotations}
            self.gate.annotations(desired.annotations, others)  # raises over the size limit
            node_plan = plan(
                node,
                desired,
                self.options.contract,
                self.options.removal_after,
                self.options.nvidia_labels,
            )
            self._note_conflicts(node, node_plan.conflicts, dry_run)
            return node_plan

        return self._apply(make_plan, dry_run)

    def prune(self, *, dry_run: bool = False) -> PublishResult:
        self.counters.cycles += 1
        # Whatever the mode, a prune removes no label another writer holds too.
        return self._apply(lambda node: plan_prune(node, self.options.contract, "defer"), dry_run)

    def _note_conflicts(
        self, node: NodeView, conflicts: tuple[LabelConflict, ...], dry_run: bool
    ) -> None:
        """Keep the conflicts for the metric; log and record an Event for each new one."""
        current = {conflict.key: conflict for conflict in conflicts}
        for key, conflict in sorted(current.items()):
            if key in self.label_conflicts:
                continue
            message = (
                f"gputopo leaves label {conflict.describe()}: another writer owns it "
                f"(--nvidia-labels={self.options.nvidia_labels}); gputopo will not write it "
                "while that value stands"
            )
            log.warning("Node %s: %s", self.node_name, message)
            if self.events is not None and not dry_run:
                self.events.warn_once(LABEL_CONFLICT_REASON, key, message, node_uid=node.uid)
        self.label_conflicts = current

    def _previous_sla(self, node: NodeView) -> SlaState | None:
        text = node.annotations.get(self.options.contract.sla_state_annotation)
        if text is None:
            return None
        try:
            return SlaState.from_json(text)
        except SlaStateError as error:
            log.warning("ignoring unreadable SLA state on Node %s: %s", self.node_name, error)
            return None

    def _write_taints_despite(self, refused: Plan, error: ApiCallFailed) -> PublishResult:
        """The whole patch was refused (403/422): still write its taints, alone.

        One key an admission policy denies must not keep a failed GPU's health taint off the
        Node; the rest stays unwritten and the cycle reports the error.
        """
        message = str(error)
        partial = taints_only(refused, self.options.contract)
        if partial is not None:
            try:
                self._patch(partial.patch)
            except Exception as taint_error:  # a second refusal or a conflict: report both
                message += f"; writing the taints alone failed too: {taint_error}"
            else:
                self.counters.writes += 1
                message += f"; wrote the {len(partial.changes)} taint change(s) alone"
        log.error("publishing to Node %s was refused: %s", self.node_name, message)
        return PublishResult("error", partial.changes if partial else (), message=message)

    def _apply(self, make_plan: Callable[[NodeView], Plan], dry_run: bool) -> PublishResult:
        try:
            for _ in range(self.max_conflict_retries):
                node = self.read_node()
                try:
                    node_plan = make_plan(node)
                except ValidationError as error:
                    log.error("not publishing to Node %s: %s", self.node_name, error)
                    return PublishResult("error", message=str(error))
                for skipped in node_plan.skipped_foreign:
                    log.info("leaving %s alone: another writer owns it", skipped)
                self.counters.foreign_owned_keys = len(node_plan.ignored_ownership)
                if node_plan.ignored_ownership:
                    log.warning(
                        "ignoring ownership claims on Node %s for keys gputopo never writes: %s",
                        self.node_name,
                        ", ".join(node_plan.ignored_ownership),
                    )
                if node_plan.empty:
                    self.counters.unchanged += 1
                    return PublishResult("unchanged")
                if dry_run:
                    return PublishResult("dry-run", node_plan.changes)
                try:
                    self._patch(node_plan.patch)
                except ApiCallFailed as error:
                    if error.status not in (403, 422):
                        raise
                    return self._write_taints_despite(node_plan, error)
                except Exception as error:
                    if status_of(error) != 409:
                        raise
                    self.counters.conflicts += 1
                    log.info("Node %s changed while writing (409); re-reading", self.node_name)
                    continue
                self.counters.writes += 1
                log.info(
                    "published %d change(s) to Node %s", len(node_plan.changes), self.node_name
                )
                return PublishResult("written", node_plan.changes)
            message = (
                f"Node {self.node_name} kept changing: gave up after "
                f"{self.max_conflict_retries} conflicts"
            )
        except ApiCallFailed as error:
            message = str(error)
        log.error("publishing to Node %s failed: %s", self.node_name, message)
        return PublishResult("error", message=message)
