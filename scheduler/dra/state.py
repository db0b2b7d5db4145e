"""The scheduler's view of DRA objects: slices, classes, claims, templates, taint rules, and the
allocations it has decided but not yet seen written back.

One :class:`DraState` is attached to the cluster snapshot (``ClusterSnapshot.attach``); the
DynamicResources plugin reads it, ``simulate`` fills it from YAML and the runtime's informers
keep it current. Claims the scheduler allocated are *assumed* here (their devices count as taken
by the next pod) until the claim's watch event shows the written allocation, or until the bind
fails and they are forgotten — so a device is never handed out twice between the decision and
the write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from gputopo.scheduler.dra.allocator import Allocator, NodeAllocation, Unallocatable
from gputopo.scheduler.dra.inventory import NodeInventory, Usage, node_inventories, usage_of
from gputopo.scheduler.dra.model import (
    AllocationResult,
    ClaimTemplate,
    Consumer,
    DeviceClass,
    DeviceTaintRule,
    ResourceClaim,
    ResourceSlice,
    parse_claim_template,
    parse_device_class,
    parse_device_taint_rule,
    parse_resource_claim,
    parse_resource_slice,
)
from gputopo.scheduler.dra.topology import NodeTopology, node_topology
from gputopo.scheduler.gpu_alloc import LEVEL_ALIGNED
from gputopo.scheduler.model import Node, Pod

KINDS: Final = (
    "ResourceSlice",
    "DeviceClass",
    "ResourceClaim",
    "ResourceClaimTemplate",
    "DeviceTaintRule",
)
# The pod claim name simulate prints a pod's DRA-backed extended resources under
EXTENDED_CLAIM: Final = "extended-resources"
# kube-scheduler's limit on status.reservedFor (ResourceClaimReservedForMaxSize)
MAX_RESERVED_FOR: Final = 256


class ClaimProblem(Exception):
    """The pod's claims cannot be resolved (kube-scheduler's PreFilter message)."""


@dataclass(frozen=True, slots=True)
class PodClaim:
    """One entry of the pod's spec.resourceClaims, resolved to its ResourceClaim."""

    pod_claim_name: str
    claim: ResourceClaim
    from_template: bool


@dataclass(frozen=True, slots=True)
class PodAllocation:
    """What the pod's unallocated claims get on one node."""

    node: str
    allocation: NodeAllocation
    claims: tuple[PodClaim, ...]


class DraState:
    def __init__(
        self, allocator: Allocator | None = None, *, invent_from_templates: bool = False
    ) -> None:
        self.allocator = allocator or Allocator()
        # simulate: claims from templates exist only as what the controller would create
        self.invent_from_templates = invent_from_templates
        # Fed by watches or a file: only then does the DynamicResources plugin judge pods (the
        # extender's cache watches no DRA object: it leaves DRA pods to kube-scheduler).
        self.watched = invent_from_templates
        # Why no DRA object can be known (the API server does not serve resource.k8s.io/v1)
        self.unavailable: str | None = None
        self.slices: dict[str, ResourceSlice] = {}
        self.classes: dict[str, DeviceClass] = {}
        self.claims: dict[str, ResourceClaim] = {}
        self.templates: dict[str, ClaimTemplate] = {}
        self.rules: dict[str, DeviceTaintRule] = {}
        # claim key -> (results, node, pod uid): allocations decided, not yet seen written
        self.assumed: dict[str, tuple[tuple[AllocationResult, ...], str, str]] = {}
        self._inventories: dict[str, NodeInventory] | None = None
        self._topologies: dict[str, tuple[str, NodeTopology | None]] = {}
        self.generation = 0
        self._index: tuple[int, dict[str | None, list[ResourceClaim]]] | None = None
        # (pod key, generation) -> node -> PodAllocation | reason
        self._cycle: tuple[tuple[str, int], dict[str, PodAllocation | str]] | None = None
        # (generation, watched) -> extended resource name -> its DeviceClass (`extended_class`)
        self._extended: tuple[tuple[int, bool], dict[str, DeviceClass]] | None = None

    # -- objects ----------------------------------------------------------------------------

    def observe(self, kind: str, obj: Mapping[str, Any]) -> str:
        """Add or replace one object of a DRA kind; returns its key."""
        self.generation += 1
        if kind == "ResourceSlice":
            one = parse_resource_slice(obj)
            self.slices[one.name] = one
            self._inventories = None
            return one.name
        if kind == "DeviceClass":
            device_class = parse_device_class(obj)
            self.classes[device_class.name] = device_class
            return device_class.name
        if kind == "ResourceClaim":
            claim = parse_resource_claim(obj)
            self.claims[claim.key] = claim
            if claim.allocation is not None:
                self.assumed.pop(claim.key, None)  # our write (or another's) is visible now
            return claim.key
        if kind == "ResourceClaimTemplate":
            template = parse_claim_template(obj)
            key = f"{template.namespace}/{template.name}"
            self.templates[key] = template
            return key
        if kind == "DeviceTaintRule":
            rule = parse_device_taint_rule(obj)
            self.rules[rule.name] = rule
            return rule.name
        raise ValueError(f"not a DRA kind: {kind}")

    def forget_object(self, kind: str, key: str) -> None:
        self.generation += 1
        if kind == "ResourceSlice":
            self.slices.pop(key, None)
            self._inventories = None
        elif kind == "DeviceClass":
            self.classes.pop(key, None)
        elif kind == "ResourceClaim":
            self.claims.pop(key, None)
            self.assumed.pop(key, None)
        elif kind == "ResourceClaimTemplate":
            self.templates.pop(key, None)
        elif kind == "DeviceTaintRule":
            self.rules.pop(key, None)

    @property
    def empty(self) -> bool:
        return not (self.slices or self.classes or self.claims or self.templates)

    def inventories(self) -> dict[str, NodeInventory]:
        if self._inventories is None:
            self._inventories = node_inventories(self.slices.values())
        return self._inventories

    def topology(self, node: Node) -> NodeTopology | None:
        text = node.annotations.get("gputopo.io/topology", "")
        cached = self._topologies.get(node.name)
        if cached is not None and cached[0] == text:
            return cached[1]
        topology = node_topology(node)
        self._topologies[node.name] = (text, topology)
        return topology

    # -- extended resources served by DRA (KEP-5004) -----------------------------------------

    def extended_classes(self) -> Mapping[str, DeviceClass]:
        """Extended resource name -> the DeviceClass whose ``extendedResourceName`` it is (by
        class name, the first); empty unless DRA objects are watched. Worked out once per
        `generation` (every cycle asks, for every resource the pod requests)."""
        key = (self.generation, self.watched)
        if self._extended is None or self._extended[0] != key:
            mapped: dict[str, DeviceClass] = {}
            if self.watched:
                for name in sorted(self.classes):
                    resource = self.classes[name].extended_resource_name
                    if resource and "/" in resource:  # an extended resource has a domain
                        mapped.setdefault(resource, self.classes[name])
            self._extended = (key, mapped)
        return self._extended[1]

    def extended_class(self, resource: str) -> DeviceClass | None:
        """The DeviceClass whose ``extendedResourceName`` is ``resource`` (by name, the first)."""
        return self.extended_classes().get(resource)

    def extended_requests(self, pod: Pod) -> dict[str, tuple[int, DeviceClass]]:
        """The pod's extended resources a DeviceClass maps: resource -> (amount, class)."""
        mapped = self.extended_classes()
        if not mapped:
            return {}
        found = {}
        for resource, amount in pod.requests.items():
            if amount > 0 and resource in mapped:
                found[resource] = (amount, mapped[resource])
        return found

    def extended_claim(self, pod: Pod, requests: Mapping[str, tuple[int, DeviceClass]]) -> PodClaim:
        """The claim kube-scheduler makes for a pod's DRA-backed extended resources: one
        ExactCount request per resource, of the mapped class."""
        claim = parse_resource_claim(
            {
                "metadata": {
                    "name": f"{pod.name}-{EXTENDED_CLAIM}",
                    "namespace": pod.namespace,
                    "uid": f"{pod.uid or pod.key}/{EXTENDED_CLAIM}",
                },
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": f"request-{index}",
                                "exactly": {
                                    "deviceClassName": device_class.name,
                                    "allocationMode": "ExactCount",
                                    "count": min(amount, 128),
                                },
                            }
                            for index, (_, (amount, device_class)) in enumerate(
                                sorted(requests.items())
                            )
                        ]
                    }
                },
            }
        )
        return PodClaim(EXTENDED_CLAIM, self.effective(claim), True)

    # -- claims of a pod ----------------------------------------------------------------------

    def effective(self, claim: ResourceClaim) -> ResourceClaim:
        """The claim with an allocation the scheduler assumed and has not yet seen written."""
        assumed = self.assumed.get(claim.key)
        if claim.allocation is not None or assumed is None:
            return claim
        results, node, uid = assumed
        return replace(
            claim,
            allocation=results,
            allocated_node=node,
            reserved_for=(*claim.reserved_for, Consumer("pods", "", uid)),
        )

    def pod_claims(self, pod: Pod, *, invent_from_templates: bool = False) -> list[PodClaim]:
        """The pod's claims, resolved; ClaimProblem with kube-scheduler's wording otherwise.

        ``invent_from_templates``: for ``simulate``, a template claim without a claim object
        becomes the claim the ResourceClaim controller would create (``<pod>-<claim name>``)."""
        found: list[PodClaim] = []
        for name, claim_name, template in pod.resource_claims:
            from_template = bool(template)
            if from_template:
                claim_name = pod.claim_statuses.get(name, "")
                if not claim_name:
                    if not invent_from_templates:
                        raise ClaimProblem(
                            f'waiting for resource claim "{name}" of pod {pod.key} to be created'
                        )
                    invented = self._invented(pod, name, template)
                    found.append(PodClaim(name, self.effective(invented), True))
                    continue
            stored = self.claims.get(f"{pod.namespace}/{claim_name}")
            if stored is None:
                raise ClaimProblem(f'resourceclaim "{claim_name}" not found')
            claim = self.effective(stored)
            if claim.unsupported:
                raise ClaimProblem(
                    f'resourceclaim "{claim_name}": {claim.unsupported} are not supported'
                )
            if (
                claim.allocation is not None
                and len(claim.reserved_for) >= MAX_RESERVED_FOR
                and not any(c.uid == pod.uid for c in claim.reserved_for)
            ):
                raise ClaimProblem(f'resourceclaim "{claim_name}" is in use by too many pods')
            found.append(PodClaim(name, claim, from_template))
        return found

    def _invented(self, pod: Pod, name: str, template_name: str) -> ResourceClaim:
        template = self.templates.get(f"{pod.namespace}/{template_name}")
        if template is None:
            raise ClaimProblem(f'resourceclaimtemplate "{template_name}" not found')
        claim_name = f"{pod.name}-{name}"
        existing = self.claims.get(f"{pod.namespace}/{claim_name}")
        if existing is not None:
            return existing
        return parse_resource_claim(
            {
                "metadata": {
                    "name": claim_name,
                    "namespace": pod.namespace,
                    "uid": f"{pod.uid or pod.key}/{name}",
                },
                "spec": template.spec,
            }
        )

    # -- allocation -----------------------------------------------------------------------------

    def usage(self, node: str, skip: frozenset[str] = frozenset()) -> Usage:
        inventory = self.inventories().get(node)
        if inventory is None:
            return Usage()
        return usage_of(inventory, self._allocated_on(node), skip)

    def _allocated_on(self, node: str) -> list[ResourceClaim]:
        """Allocated claims (written or assumed) that may hold devices of ``node``: indexed by
        the allocation's node once per generation, so a cycle over many nodes does not walk
        every claim for every node. A claim whose node cannot be read counts everywhere."""
        if self._index is None or self._index[0] != self.generation:
            by_node: dict[str | None, list[ResourceClaim]] = {}
            for claim in self.claims.values():
                effective = self.effective(claim)
                if effective.allocation is not None:
                    by_node.setdefault(effective.allocated_node, []).append(effective)
            for key in self.assumed:
                if key not in self.claims:  # invented (simulate) claims live only here
                    assumed = self._assumed_claim(key)
                    by_node.setdefault(assumed.allocated_node, []).append(assumed)
            self._index = (self.generation, by_node)
        by_node = self._index[1]
        return by_node.get(node, []) + by_node.get(None, [])

    def _assumed_claim(self, key: str) -> ResourceClaim:
        results, node, _ = self.assumed[key]
        namespace, _, name = key.partition("/")
        return ResourceClaim(namespace, name, "", "", (), (), results, node)

    def allocate(self, pod: Pod, node: Node, claims: Sequence[PodClaim]) -> PodAllocation | str:
        """The pod's unallocated claims on ``node``, or the one-line reason why not."""
        cycle_key = (pod.key, self.generation)
        if self._cycle is None or self._cycle[0] != cycle_key:
            self._cycle = (cycle_key, {})
        cached = self._cycle[1].get(node.name)
        if cached is not None:
            return cached
        outcome = self._allocate(node, claims)
        self._cycle[1][node.name] = outcome
        return outcome

    def _allocate(self, node: Node, claims: Sequence[PodClaim]) -> PodAllocation | str:
        for pod_claim in claims:
            claim = pod_claim.claim
            if claim.allocation is not None and claim.allocated_node not in (None, node.name):
                return f"resourceclaim {claim.key} is allocated on another node"
        pending = [c.claim for c in claims if c.claim.allocation is None]
        inventory = self.inventories().get(node.name)
        if inventory is None and pending:
            return "cannot allocate all claims: node has no ResourceSlices"
        for pod_claim in claims:
            allocated = pod_claim.claim
            if (
                inventory is not None
                and allocated.allocation is not None
                and allocated.allocated_node is None
                and not all(inventory.device(r.device_key) for r in allocated.allocation)
            ):
                # allocated by someone whose nodeSelector we cannot read: devices must be here
                return f"resourceclaim {allocated.key} is allocated on another node"
        if not pending or inventory is None:
            return PodAllocation(node.name, NodeAllocation({}, LEVEL_ALIGNED, 0, ()), tuple(claims))
        if inventory.unsupported and not inventory.devices:
            return f"cannot allocate all claims: {inventory.unsupported[0]} are not supported"
        try:
            allocation = self.allocator.allocate(
                pending,
                inventory,
                self.usage(node.name, frozenset(c.key for c in pending)),
                self.classes,
                list(self.rules.values()),
                self.topology(node),
            )
        except Unallocatable as why:
            return str(why)
        return PodAllocation(node.name, allocation, tuple(claims))

    def assume(self, pod: Pod, outcome: PodAllocation) -> None:
        """Count the pod's new allocations as taken until they are seen written (or forgotten)."""
        for claim_key, results in outcome.allocation.results.items():
            self.assumed[claim_key] = (results, outcome.node, pod.uid or pod.key)
        self.generation += 1

    def rename_assumed(self, old: str, new: str) -> None:
        """An assumed allocation's claim got its real name (a created claim)."""
        entry = self.assumed.pop(old, None)
        seen = self.claims.get(new)
        if entry is not None and (seen is None or seen.allocation is None):
            self.assumed[new] = entry
        self.generation += 1

    def forget(self, claim_keys: Iterable[str]) -> None:
        for key in claim_keys:
            self.assumed.pop(key, None)
        self.generation += 1
