"""Per-GPU health as DRA device taints: one DeviceTaintRule per sick device of this node.

On a node whose GPUs are published by a DRA driver (NVIDIA's: driver ``gpu.nvidia.com``, one
device per GPU and per MIG slice, each with a ``uuid`` attribute and MIG slices with
``parentUUID``), a node taint is too coarse: it keeps every pod off all GPUs for one sick GPU.
A DeviceTaintRule (``resource.k8s.io/v1``, GA in Kubernetes 1.37) taints one device instead:
kube-scheduler's allocator (and gputopo-scheduler's) skips it for claims that do not tolerate
the taint, and kube-controller-manager's device-taint-eviction controller evicts the pods whose
allocated devices carry a ``NoExecute`` taint.

What the agent writes (docs/dra.md, "Per-GPU health as device taints"):

* which devices: those of the ResourceSlices of its own node (``spec.nodeName``) from the
  configured driver, current pool generation only, whose ``uuid`` (or ``parentUUID``: the MIG
  slices of a sick GPU) is a sick GPU's UUID; a GPU on the PCI bus that NVML does not see is
  found by ``pcieBusID`` / ``resource.kubernetes.io/pciBusID``;
* the taint: key ``<prefix>/gpu-health`` (the node taint's key), value the health class, effect
  per class — ``degraded`` -> ``None`` (visible, no effect), ``failed`` -> ``NoSchedule``,
  ``reset-required`` (an XID whose resolution is a GPU reset, agent.nvml.RESET_REQUIRED_XIDS) ->
  ``NoExecute``; configurable;
* removal with the node taint's hysteresis: a rule whose device recovered (or a class that
  got milder) changes only after ``removal_after`` consecutive successful discoveries, counted
  in the rule's ``<prefix>/pending-removal`` annotation so a restart does not reset it; a worse
  class is written at once; a failed discovery changes nothing, a partial one removes nothing;
* ownership: rules labelled ``app.kubernetes.io/managed-by=gputopo-agent`` and annotated with
  this node's name; nothing else is read as the agent's. A node without ResourceSlices of its
  own gets no rule (its node taint, agent.taints, is unchanged either way).

Everything up to :func:`plan_device_taints` is pure; :class:`DeviceTaintPublisher` does the
calls through :class:`gputopo.core.kube.KubeClient`'s ``request``.
"""

from __future__ import annotations

import enum
import functools
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gputopo.agent.health import APPLICATION_XIDS
from gputopo.agent.nvml import RESET_REQUIRED_XIDS
from gputopo.agent.publish.calls import (
    FIELD_MANAGER,
    ApiCallFailed,
    PublishCounters,
    PublishResult,
    describe_api_error,
)
from gputopo.agent.publish.desired import is_successful_discovery
from gputopo.agent.publish.plan import Change
from gputopo.agent.topology import Gpu, Health, NodeTopology
from gputopo.core.contract import DEFAULT_CONTRACT, Contract
from gputopo.core.kube import MERGE_PATCH
from gputopo.core.retry import Backoff, is_retryable, status_of
from gputopo.core.validate import is_dns_subdomain, short_hash

log = logging.getLogger(__name__)

GROUP: Final = "resource.k8s.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DeviceTaintRule"
DEFAULT_DRIVER: Final = "gpu.nvidia.com"
# A DeviceTaint's effects (k8s.io/api resource/v1 DeviceTaintEffect); PreferNoSchedule is not one.
DEVICE_TAINT_EFFECTS: Final = ("None", "NoSchedule", "NoExecute")
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "gputopo-agent"
# Attribute names a GPU's identity is published under (unqualified names are the driver's own
# domain; resource.kubernetes.io/pciBusID is the standard one, KEP-4381's device attributes).
UUID_ATTRIBUTES: Final = ("uuid",)
PARENT_UUID_ATTRIBUTES: Final = ("parentUUID",)
PCI_BUS_ID_ATTRIBUTES: Final = ("pcieBusID", "resource.kubernetes.io/pciBusID")
MAX_NAME_LENGTH: Final = 253
MAX_DRIVER_LENGTH: Final = 63  # resource.k8s.io/v1 DriverNameMaxLength


class DeviceHealthClass(enum.StrEnum):
    """How sick one GPU is, as the device taint's value; later members are worse."""

    DEGRADED = "degraded"
    FAILED = "failed"
    RESET_REQUIRED = "reset-required"

    @property
    def severity(self) -> int:
        return list(DeviceHealthClass).index(self)


class InvalidDeviceTaintEffect(ValueError):
    pass


@dataclass(frozen=True)
class DeviceTaintOptions:
    """Effects per health class and which XIDs call for a reset; the defaults are documented."""

    degraded_effect: str = "None"
    failed_effect: str = "NoSchedule"
    reset_required_effect: str = "NoExecute"
    reset_required_xids: frozenset[int] = RESET_REQUIRED_XIDS
    ignored_xids: frozenset[int] = frozenset(APPLICATION_XIDS)
    driver: str = DEFAULT_DRIVER
    removal_after: int = 3  # consecutive successful discoveries, as the node taint's
    contract: Contract = field(default_factory=lambda: DEFAULT_CONTRACT)

    def __post_init__(self) -> None:
        for flag, effect in (
            ("--device-taint-effect-degraded", self.degraded_effect),
            ("--device-taint-effect-failed", self.failed_effect),
            ("--device-taint-effect-reset-required", self.reset_required_effect),
        ):
            if effect not in DEVICE_TAINT_EFFECTS:
                raise InvalidDeviceTaintEffect(
                    f"{flag} {effect!r} is not one of {', '.join(DEVICE_TAINT_EFFECTS)}"
                )
        if not (is_dns_subdomain(self.driver) and len(self.driver) <= MAX_DRIVER_LENGTH):
            raise ValueError(
                f"--dra-driver {self.driver!r}: expected a DRA driver name, a DNS subdomain of "
                f"at most {MAX_DRIVER_LENGTH} characters like gpu.nvidia.com"
            )
        if self.removal_after < 1:
            raise ValueError(f"removal_after must be >= 1, got {self.removal_after}")

    def effect(self, health: DeviceHealthClass) -> str:
        return {
            DeviceHealthClass.DEGRADED: self.degraded_effect,
            DeviceHealthClass.FAILED: self.failed_effect,
            DeviceHealthClass.RESET_REQUIRED: self.reset_required_effect,
        }[health]


# -- health per GPU ----------------------------------------------------------------------------


def gpu_health_class(gpu: Gpu, options: DeviceTaintOptions) -> DeviceHealthClass | None:
    """The class of one GPU: reset-required when an XID that counts (not the application's, not
    past the XID window) needs a reset; else failed or degraded as agent.health assessed it."""
    signals = gpu.health_signals
    active = {
        event.code
        for event in signals.xid_events
        if event.code not in options.ignored_xids and event.code not in signals.stale_xids
    }
    if active & options.reset_required_xids:
        return DeviceHealthClass.RESET_REQUIRED
    if signals.lost or gpu.health is Health.FAILED:
        return DeviceHealthClass.FAILED
    if gpu.health is Health.DEGRADED:
        return DeviceHealthClass.DEGRADED
    return None


@dataclass(frozen=True)
class SickGpus:
    """Sick GPUs by UUID, and GPUs on the PCI bus NVML does not see, by PCI bus id (failed)."""

    by_uuid: Mapping[str, DeviceHealthClass]
    by_pci_bus_id: Mapping[str, DeviceHealthClass]


def sick_gpus(topology: NodeTopology, options: DeviceTaintOptions) -> SickGpus:
    by_uuid: dict[str, DeviceHealthClass] = {}
    by_pci: dict[str, DeviceHealthClass] = {}
    for gpu in topology.gpus:
        health = gpu_health_class(gpu, options)
        if health is None:
            continue
        if gpu.uuid:
            by_uuid[gpu.uuid] = health
        else:  # NVML lost its UUID: the PCI address still names the device
            by_pci[gpu.pci_bus_id.lower()] = health
    for pci_only in topology.pci_only_gpus:
        by_pci[pci_only.pci_bus_id.lower()] = DeviceHealthClass.FAILED
    return SickGpus(by_uuid, by_pci)


def covers_node_health(
    topology: NodeTopology, devices: Iterable[SliceDevice], options: DeviceTaintOptions
) -> bool:
    """Whether every GPU the node health taint stands for (failed, lost, or on PCI without
    NVML: agent.labels.health.gpu_health) has a device in the node's slices that its device
    taint keeps pods off (an effect other than None). False on a node without slices."""
    devices = list(devices)
    if not devices:
        return False
    uuids = {d.uuid for d in devices} | {d.parent_uuid for d in devices}
    pci_ids = {d.pci_bus_id for d in devices}
    sick = sick_gpus(topology, options)
    for gpu in topology.gpus:
        if not (gpu.health_signals.lost or gpu.health is Health.FAILED):
            continue
        health = sick.by_uuid.get(gpu.uuid or "") or sick.by_pci_bus_id.get(gpu.pci_bus_id.lower())
        if health is None or options.effect(health) == "None":
            return False
        if gpu.uuid not in uuids and gpu.pci_bus_id.lower() not in pci_ids:
            return False
    for pci_only in topology.pci_only_gpus:
        if pci_only.pci_bus_id.lower() not in pci_ids:
            return False
        if options.effect(DeviceHealthClass.FAILED) == "None":
            return False
    return True


# -- ResourceSlice devices ---------------------------------------------------------------------


@dataclass(frozen=True)
class SliceDevice:
    """One device of a ResourceSlice, with what identifies its GPU."""

    pool: str
    name: str
    uuid: str | None = None
    parent_uuid: str | None = None
    pci_bus_id: str | None = None


def _string_attribute(
    attributes: Mapping[str, Any], names: Iterable[str], driver: str
) -> str | None:
    for name in names:
        for qualified in (name, f"{driver}/{name}"):
            value = attributes.get(qualified)
            if isinstance(value, Mapping) and isinstance(value.get("string"), str):
                return str(value["string"])
    return None


def slice_devices(
    slices: Iterable[Mapping[str, Any]], node_name: str, driver: str
) -> list[SliceDevice]:
    """The devices ``driver`` publishes for ``node_name``, from each pool's newest generation
    (older slices of a pool are being replaced: the scheduler ignores them too)."""
    mine = []
    for slice_ in slices:
        spec = slice_.get("spec") or {}
        if spec.get("driver") != driver or spec.get("nodeName") != node_name:
            continue
        pool = spec.get("pool") or {}
        if not isinstance(pool.get("name"), str):
            continue
        mine.append((str(pool["name"]), int(pool.get("generation") or 0), spec))
    newest: dict[str, int] = {}
    for pool_name, generation, _ in mine:
        newest[pool_name] = max(generation, newest.get(pool_name, generation))
    devices = []
    for pool_name, generation, spec in mine:
        if generation != newest[pool_name]:
            continue
        for device in spec.get("devices") or ():
            if not isinstance(device, Mapping) or not isinstance(device.get("name"), str):
                continue
            attributes = device.get("attributes") or {}
            pci = _string_attribute(attributes, PCI_BUS_ID_ATTRIBUTES, driver)
            devices.append(
                SliceDevice(
                    pool=pool_name,
                    name=str(device["name"]),
                    uuid=_string_attribute(attributes, UUID_ATTRIBUTES, driver),
                    parent_uuid=_string_attribute(attributes, PARENT_UUID_ATTRIBUTES, driver),
                    pci_bus_id=pci.lower() if pci else None,
                )
            )
    return devices


# -- desired rules -----------------------------------------------------------------------------


def rule_name(node_name: str, pool: str, device: str) -> str:
    """``gputopo.<node>.<device>`` (a DNS subdomain: the device name is a DNS label), with the
    pool when it is not the node's name; a digest stands in where that would be too long."""
    middle = node_name if pool == node_name else f"{node_name}.{pool}"
    name = f"gputopo.{middle}.{device}".lower()
    if len(name) <= MAX_NAME_LENGTH:
        return name
    return f"gputopo.{short_hash(f'{node_name}/{pool}')}.{device}".lower()


@dataclass(frozen=True)
class DesiredRule:
    name: str
    pool: str
    device: str
    health: DeviceHealthClass
    effect: str


def desired_rules(
    sick: SickGpus, devices: Iterable[SliceDevice], node_name: str, options: DeviceTaintOptions
) -> dict[str, DesiredRule]:
    """One rule per device of a sick GPU: the GPU itself and each of its MIG slices."""
    rules: dict[str, DesiredRule] = {}
    for device in devices:
        health = None
        for uuid in (device.uuid, device.parent_uuid):
            if uuid is not None and uuid in sick.by_uuid:
                health = sick.by_uuid[uuid]
                break
        if health is None and device.pci_bus_id is not None:
            health = sick.by_pci_bus_id.get(device.pci_bus_id)
        if health is None:
            continue
        name = rule_name(node_name, device.pool, device.name)
        rules[name] = DesiredRule(name, device.pool, device.name, health, options.effect(health))
    return rules


def rule_body(rule: DesiredRule, node_name: str, options: DeviceTaintOptions) -> dict[str, Any]:
    contract = options.contract
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": rule.name,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {node_annotation(contract): node_name},
        },
        "spec": {
            "deviceSelector": {"driver": options.driver, "pool": rule.pool, "device": rule.device},
            "taint": {
                "key": contract.health_taint,
                "value": rule.health.value,
                "effect": rule.effect,
            },
        },
    }


def node_annotation(contract: Contract) -> str:
    """The annotation naming the node a rule was written for (its agent's)."""
    return contract.key("node")


# -- the rules as read, and the plan -----------------------------------------------------------


@dataclass(frozen=True)
class RuleView:
    """The parts of a DeviceTaintRule the plan reads."""

    name: str
    resource_version: str
    key: str
    value: str
    effect: str
    pending: int = 0  # consecutive successful discoveries that wanted it milder or gone

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], contract: Contract) -> RuleView:
        metadata = rule.get("metadata") or {}
        taint = (rule.get("spec") or {}).get("taint") or {}
        pending_text = (metadata.get("annotations") or {}).get(contract.pending_removal_annotation)
        try:
            pending = max(0, int(pending_text)) if pending_text is not None else 0
        except ValueError:
            pending = 0  # garbled: the count starts afresh, as the Node's does
        return cls(
            name=str(metadata.get("name", "")),
            resource_version=str(metadata.get("resourceVersion", "")),
            key=str(taint.get("key", "")),
            value=str(taint.get("value", "")),
            effect=str(taint.get("effect", "")),
            pending=pending,
        )

    @property
    def health(self) -> DeviceHealthClass | None:
        try:
            return DeviceHealthClass(self.value)
        except ValueError:
            return None


def is_own_rule(rule: Mapping[str, Any], node_name: str, contract: Contract) -> bool:
    metadata = rule.get("metadata") or {}
    return (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY and (
        metadata.get("annotations") or {}
    ).get(node_annotation(contract)) == node_name


@dataclass(frozen=True)
class RuleAction:
    """One call: create a rule, merge-patch one (taint and/or pending count), or delete one."""

    verb: str  # "create", "patch", "delete"
    name: str
    body: dict[str, Any] | None
    change: Change | None  # None for bookkeeping only (the pending count)


def _taint_text(value: str, effect: str) -> str:
    return f"{value}:{effect}"


def plan_device_taints(
    existing: Iterable[RuleView],
    desired: Mapping[str, DesiredRule],
    node_name: str,
    options: DeviceTaintOptions,
    *,
    complete: bool = True,
    removal_after: int | None = None,
) -> list[RuleAction]:
    """The calls that bring this node's rules to ``desired``: worse at once, milder or gone
    only after ``removal_after`` (default: the options') successful discoveries in a row (none
    while ``complete`` is False: a partial discovery counts nothing)."""
    contract = options.contract
    removal_after = options.removal_after if removal_after is None else removal_after
    pending_key = contract.pending_removal_annotation
    actions: list[RuleAction] = []
    current = {rule.name: rule for rule in existing}

    def patch(rule: RuleView, taint: Mapping[str, str] | None, pending: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "resourceVersion": rule.resource_version,
            "annotations": {pending_key: str(pending) if pending else None},
        }
        body: dict[str, Any] = {"metadata": metadata}
        if taint is not None:
            body["spec"] = {"taint": dict(taint)}
        return body

    for name, wanted in sorted(desired.items()):
        taint = {
            "key": contract.health_taint,
            "value": wanted.health.value,
            "effect": wanted.effect,
        }
        rule = current.get(name)
        if rule is None:
            body = rule_body(wanted, node_name, options)
            change = Change("device-taint", name, None, _taint_text(wanted.health, wanted.effect))
            actions.append(RuleAction("create", name, body, change))
            continue
        same = (rule.key, rule.value, rule.effect) == (
            taint["key"],
            taint["value"],
            taint["effect"],
        )
        if same:
            if rule.pending:  # it got worse again before the count ran out
                actions.append(RuleAction("patch", name, patch(rule, None, 0), None))
            continue
        change = Change(
            "device-taint",
            name,
            _taint_text(rule.value, rule.effect),
            _taint_text(taint["value"], taint["effect"]),
        )
        milder = (
            rule.key == taint["key"]
            and rule.health is not None
            and wanted.health.severity < rule.health.severity
        )
        if not milder:  # worse, or a changed effect or key: at once
            actions.append(RuleAction("patch", name, patch(rule, taint, 0), change))
        elif complete:
            misses = rule.pending + 1
            if misses >= removal_after:
                actions.append(RuleAction("patch", name, patch(rule, taint, 0), change))
            else:
                actions.append(RuleAction("patch", name, patch(rule, None, misses), None))
    for name, rule in sorted(current.items()):
        if name in desired or not complete:
            continue
        misses = rule.pending + 1
        if misses >= removal_after:
            change = Change("device-taint", name, _taint_text(rule.value, rule.effect), None)
            actions.append(RuleAction("delete", name, None, change))
        else:
            actions.append(RuleAction("patch", name, patch(rule, None, misses), None))
    return actions


# -- the writer --------------------------------------------------------------------------------


class RequestApi(Protocol):
    """:meth:`gputopo.core.kube.KubeClient.request`, the one call the writer makes."""

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = ...,
        content_type: str = ...,
        query: Mapping[str, str | int | bool] | None = ...,
    ) -> Any: ...


RULES_PATH: Final = f"/apis/{GROUP}/{VERSION}/devicetaintrules"
SLICES_PATH: Final = f"/apis/{GROUP}/{VERSION}/resourceslices"


class _Conflict(Exception):
    """A rule changed (or appeared) between reading and writing: re-read and re-plan."""


class DeviceTaintPublisher:
    """Keeps one node's DeviceTaintRules in step with its GPUs' health (``publish``, ``prune``)."""

    def __init__(
        self,
        api: RequestApi,
        node_name: str,
        options: DeviceTaintOptions | None = None,
        *,
        backoff: Backoff | None = None,
        counters: PublishCounters | None = None,
        max_conflict_retries: int = 5,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.options = options or DeviceTaintOptions()
        self.backoff = backoff or Backoff()
        self.counters = counters or PublishCounters()
        self.max_conflict_retries = max_conflict_retries
        self.served: bool | None = None  # resource.k8s.io/v1 answered, once known
        # The node's devices as of the last pass that wrote what it planned; None otherwise.
        self.devices: list[SliceDevice] | None = None

    def _call(self, what: str, fn: Callable[[], Any], *, allow_404: bool = False) -> Any:
        for attempt in range(self.backoff.max_attempts):
            try:
                return fn()
            except Exception as error:
                status = status_of(error)
                if allow_404 and status == 404:
                    return None
                if status == 409:
                    self.counters.conflicts += 1
                    raise _Conflict(what) from None
                self.counters.api_errors += 1
                if not is_retryable(error) or attempt + 1 >= self.backoff.max_attempts:
                    raise ApiCallFailed(f"{what}: {describe_api_error(error)}", status) from None
                self.counters.retries += 1
                delay = self.backoff.delay(attempt)
                log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
                self.backoff.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _list(self, path: str, what: str, **query: str) -> list[dict[str, Any]] | None:
        """Every item of a list (following ``continue``); None when the API is not served."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {**query, "continue": token} if token else dict(query)
            answer = self._call(what, functools.partial(self._get, path, params), allow_404=True)
            if answer is None:
                return None
            items.extend(item for item in answer.get("items") or () if isinstance(item, dict))
            token = str((answer.get("metadata") or {}).get("continue") or "")
            if not token:
                return items

    def _get(self, path: str, query: Mapping[str, str]) -> Any:
        return self.api.request("GET", path, query=query)

    def read_devices(self) -> list[SliceDevice] | None:
        slices = self._list(
            SLICES_PATH,
            f"listing ResourceSlices of Node {self.node_name}",
            fieldSelector=f"spec.nodeName={self.node_name},spec.driver={self.options.driver}",
        )
        if slices is None:
            return None
        return slice_devices(slices, self.node_name, self.options.driver)

    def read_rules(self) -> list[RuleView] | None:
        rules = self._list(
            RULES_PATH,
            "listing DeviceTaintRules",
            labelSelector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        )
        if rules is None:
            return None
        contract = self.options.contract
        return [
            RuleView.from_dict(rule, contract)
            for rule in rules
            if is_own_rule(rule, self.node_name, contract)
        ]

    def _rule_path(self, name: str) -> str:
        return f"{RULES_PATH}/{urllib.parse.quote(name, safe='')}"

    def _apply(self, action: RuleAction) -> None:
        what = f"{action.verb} {KIND} {action.name}"
        query = {"fieldManager": FIELD_MANAGER}
        if action.verb == "create":
            self._call(
                what, lambda: self.api.request("POST", RULES_PATH, body=action.body, query=query)
            )
        elif action.verb == "patch":
            self._call(
                what,
                lambda: self.api.request(
                    "PATCH",
                    self._rule_path(action.name),
                    body=action.body,
                    content_type=MERGE_PATCH,
                    query=query,
                ),
            )
        else:
            self._call(
                what,
                lambda: self.api.request("DELETE", self._rule_path(action.name)),
                allow_404=True,
            )

    def covers_node_health(self, topology: NodeTopology) -> bool:
        """After :meth:`publish`: whether the node health taint is redundant (see the function)."""
        return self.devices is not None and covers_node_health(topology, self.devices, self.options)

    def publish(self, topology: NodeTopology, *, dry_run: bool = False) -> PublishResult:
        """One pass after a discovery: read slices and rules, plan, write what differs."""
        self.counters.cycles += 1
        self.devices = None
        if not is_successful_discovery(topology):
            self.counters.discovery_failures += 1
            return PublishResult("skipped", message="discovery failed; device taints kept")
        sick = sick_gpus(topology, self.options)
        return self._reconcile(
            lambda devices: desired_rules(sick, devices, self.node_name, self.options),
            complete=not topology.incomplete,
            dry_run=dry_run,
        )

    def prune(self, *, dry_run: bool = False) -> PublishResult:
        """Delete every rule this node's agent owns, at once (``gputopo-agent run --prune``)."""
        self.counters.cycles += 1
        return self._reconcile(lambda devices: {}, complete=True, dry_run=dry_run, removal_after=1)

    def _reconcile(
        self,
        desired_for: Callable[[list[SliceDevice]], dict[str, DesiredRule]],
        *,
        complete: bool,
        dry_run: bool,
        removal_after: int | None = None,
    ) -> PublishResult:
        self.devices = None
        try:
            for _ in range(self.max_conflict_retries):
                devices = self.read_devices()
                rules = self.read_rules() if devices is not None else None
                if devices is None or rules is None:
                    if self.served is not False:
                        log.info("%s/%s is not served: no device taints", GROUP, VERSION)
                    self.served = False
                    self.counters.unchanged += 1
                    return PublishResult("unchanged", message=f"{API_VERSION} not served")
                self.served = True
                actions = plan_device_taints(
                    rules,
                    desired_for(devices),
                    self.node_name,
                    self.options,
                    complete=complete,
                    removal_after=removal_after,
                )
                changes = tuple(a.change for a in actions if a.change is not None)
                if not actions:
                    self.counters.unchanged += 1
                    self.devices = devices
                    return PublishResult("unchanged")
                if dry_run:
                    self.devices = devices
                    return PublishResult("dry-run", changes)
                try:
                    for action in actions:
                        self._apply(action)
                        self.counters.writes += 1
                except _Conflict:
                    log.info(
                        "DeviceTaintRules of %s changed while writing; re-reading", self.node_name
                    )
                    continue
                self.devices = devices
                if changes:
                    log.info(
                        "device taints of Node %s: %s",
                        self.node_name,
                        "; ".join(c.describe() for c in changes),
                    )
                return PublishResult("written", changes)
            message = (
                f"DeviceTaintRules of Node {self.node_name} kept changing: gave up after "
                f"{self.max_conflict_retries} conflicts"
            )
        except ApiCallFailed as error:
            message = str(error)
        log.error("device taints of Node %s not published: %s", self.node_name, message)
        return PublishResult("error", message=message)
