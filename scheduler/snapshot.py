"""The cluster cache the filters and scores read: nodes, assigned pods, namespaces.

`ClusterSnapshot` is updated incrementally, one Node/Pod/Namespace add, update or delete at a
time (what a list+watch runtime feeds it), and `assume(pod, node)` makes a just-placed pod count
as load before the API confirms the binding. Per-node aggregates (requested resources, pod counts,
host ports) live in numpy arrays indexed by a node *slot*, so a scheduling cycle evaluates every
node with a handful of vector operations instead of a Python loop; pods are indexed by namespace
and label for affinity and spreading, and existing pods' affinity terms are aggregated per
distinct term so the symmetry checks cost one match per term, not one per pod.

Terminal pods (phase Succeeded/Failed) are never load: adding one removes the pod.
Pods assigned to a node the snapshot has not seen yet wait and count once the node arrives,
as kube-scheduler's cache does.

One file of over 500 lines because every add, update and remove keeps all the indexes above
(node slots, per-node arrays, the pod label index, aggregated affinity terms, topology domains)
consistent at once; split apart, each mutation would reach into every piece.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.model import (
    LABEL_NAMESPACE_NAME,
    AffinityTerm,
    JsonObject,
    LabelSelector,
    Namespace,
    Node,
    Pod,
    Requirement,
    parse_namespace,
    parse_node,
    parse_pod,
)
from gputopo.scheduler.quantity import CPU, EPHEMERAL_STORAGE, MEMORY

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Categories of existing pods' affinity terms kept in aggregate.
REQUIRED_ANTI_AFFINITY = "required-anti-affinity"
REQUIRED_AFFINITY = "required-affinity"
PREFERRED_AFFINITY = "preferred-affinity"
PREFERRED_ANTI_AFFINITY = "preferred-anti-affinity"

_T = TypeVar("_T")
_STATIC_CACHE_SIZE = 1024
_MATCH_CACHE_SIZE = 4096
# Selector counts kept up to date (`count_matching`): each is one int64 per node slot (40 KB at
# 5000 nodes), the least recently read dropped first.
_SELECTOR_COUNTS_SIZE = 512
# Per-domain sums kept per count (`domain_sums`): one per topology key and node mask (each
# holds its mask, one bool per node slot: at most 512 counts x 8 x 5 KB at 5000 nodes).
_DOMAIN_SUMS_SIZE = 8


class PodEntry:
    """An assigned pod and the node slot it occupies (-1 while its node is unknown)."""

    __slots__ = ("pod", "slot")

    def __init__(self, pod: Pod, slot: int) -> None:
        self.pod = pod
        self.slot = slot


class TermAggregate:
    """How many existing pods on each node carry one distinct affinity term (with one weight)."""

    __slots__ = (
        "counts",
        "match_cache",
        "namespace_generation",
        "sums",
        "term",
        "total",
        "version",
        "weight",
    )

    def __init__(self, term: AffinityTerm, weight: int, capacity: int) -> None:
        self.term = term
        self.weight = weight
        self.counts: IntArray = np.zeros(capacity, dtype=np.int64)
        self.total = 0
        # Bumped whenever `counts` changes; `ClusterSnapshot.domain_sums` caches by it.
        self.version = 0
        self.sums: dict[object, KeptSums] = {}
        self.match_cache: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}
        self.namespace_generation = -1


class SelectorCount:
    """Per node slot, how many assigned pods of one namespace one label selector matches (all of
    them, or only those not terminating), kept up to date as pods are attached and detached, so
    that a cycle reads the counts instead of collecting every matching pod again."""

    __slots__ = (
        "counts",
        "index_labels",
        "live_only",
        "match_cache",
        "selector",
        "sums",
        "version",
    )

    def __init__(self, selector: LabelSelector, live_only: bool, counts: IntArray) -> None:
        self.selector = selector
        self.live_only = live_only
        self.counts = counts
        # Bumped whenever `counts` changes; `ClusterSnapshot.domain_sums` caches by it.
        self.version = 0
        self.sums: dict[object, KeptSums] = {}
        self.match_cache: dict[tuple[tuple[str, str], ...], bool] = {}
        # The (key, value) labels one of which a matching pod must carry (the selector's first
        # `In` requirement), so that attaching a pod visits only the counts it may change;
        # (None,) when the selector has no `In` requirement.
        self.index_labels: tuple[tuple[str, str] | None, ...] = (None,)
        for requirement in selector.requirements:
            if requirement.op == "In":
                self.index_labels = tuple(
                    (requirement.key, value) for value in sorted(requirement.values)
                )
                break

    def counts_pod(self, pod: Pod) -> bool:
        if self.live_only and pod.terminating:
            return False
        matched = self.match_cache.get(pod.label_signature)
        if matched is None:
            if len(self.match_cache) > _MATCH_CACHE_SIZE:
                self.match_cache.clear()
            matched = self.match_cache[pod.label_signature] = self.selector.matches(pod.labels)
        return matched


class TopologyIndex:
    """The domain of every node slot for one topology key: an id per value, -1 if unlabelled."""

    __slots__ = ("domain", "ids", "values")

    def __init__(self, domain: npt.NDArray[np.int64], values: list[str], ids: dict[str, int]):
        self.domain = domain
        self.values = values
        self.ids = ids

    def aggregate(self, per_node: IntArray) -> IntArray:
        """Sum a per-node array over each domain."""
        labelled = self.domain >= 0
        return np.bincount(
            self.domain[labelled], weights=per_node[labelled], minlength=len(self.values)
        ).astype(np.int64)

    def spread(self, per_domain: IntArray) -> IntArray:
        """Give every labelled node its domain's value (0 for unlabelled nodes)."""
        out = np.zeros(len(self.domain), dtype=np.int64)
        labelled = self.domain >= 0
        if len(per_domain):
            out[labelled] = per_domain[self.domain[labelled]]
        return out


class KeptSums:
    """What `ClusterSnapshot.domain_sums` keeps per (key, mask) with the counts it sums: the
    counts' version it is current for, the topology index, the sums, the mask, and a read-only
    view of the sums (what readers get). `_add_count` moves it along in place."""

    __slots__ = ("index", "mask", "sums", "version", "view")

    def __init__(
        self, version: int, index: TopologyIndex, sums: IntArray, mask: BoolArray | None
    ) -> None:
        self.version = version
        self.index = index
        self.sums = sums
        self.mask = mask
        view = sums.view()
        view.flags.writeable = False  # once: setting the flag costs as much as a lookup
        self.view = view


def _grow(array: npt.NDArray[Any], capacity: int, fill: object = 0) -> npt.NDArray[Any]:
    out = np.full(capacity, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class ClusterSnapshot:
    """Nodes, assigned pods and namespaces, kept current by incremental updates."""

    def __init__(self) -> None:
        self.capacity = 0
        self.nodes: list[Node | None] = []
        self.node_names: list[str] = []
        self._slot_of: dict[str, int] = {}
        self._free_slots: list[int] = []
        self.alive: BoolArray = np.zeros(0, dtype=np.bool_)
        self.allowed_pods: IntArray = np.zeros(0, dtype=np.int64)
        self.pod_count: IntArray = np.zeros(0, dtype=np.int64)
        # allowed_pods - pod_count, kept with them (NodeResourcesFit's "Too many pods").
        self.pod_room: IntArray = np.zeros(0, dtype=np.int64)
        self.nonzero_cpu: IntArray = np.zeros(0, dtype=np.int64)
        self.nonzero_memory: IntArray = np.zeros(0, dtype=np.int64)
        # crc32 of each node's name, for `framework._pick`'s tie-break (uint32: it multiplies
        # modulo 2**32 with no masking).
        self.name_hash: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)
        # Per slot, a number that changes whenever the slot's Node object is added, replaced or
        # removed, or a pod is counted on it or leaves it (one counter for all slots, so a slot
        # never repeats a version): state derived from a node and its pods (the GPU allocator's)
        # finds what to bring up to date by comparing versions as an array.
        self.slot_version: IntArray = np.zeros(0, dtype=np.int64)
        self._slot_versions = 0
        self.allocatable: dict[str, IntArray] = {}
        self.requested: dict[str, IntArray] = {}
        # allocatable - requested per resource, kept with them: a filter compares once.
        self.free: dict[str, IntArray] = {}
        for name in (CPU, MEMORY, EPHEMERAL_STORAGE):
            self._ensure_resource(name)
        self.node_pods: list[dict[str, PodEntry]] = []
        self.pods: dict[str, PodEntry] = {}
        self._pending: dict[str, dict[str, Pod]] = {}
        self._assumed: set[str] = set()
        self._label_index: dict[str, dict[str, dict[str, set[str]]]] = {}
        self._namespace_pods: dict[str, set[str]] = {}
        # (protocol, port) -> slot -> host IPs in use (with multiplicity)
        self.host_ports: dict[tuple[str, int], dict[int, dict[str, int]]] = {}
        # category -> (term signature, weight) -> aggregate over existing pods
        self.terms: dict[str, dict[object, TermAggregate]] = {
            category: {}
            for category in (
                REQUIRED_ANTI_AFFINITY,
                REQUIRED_AFFINITY,
                PREFERRED_AFFINITY,
                PREFERRED_ANTI_AFFINITY,
            )
        }
        # Bumped when a distinct term is first aggregated or its last pod leaves: the cached
        # lists of terms that select a pod (`matching_terms`) are rebuilt after it.
        self._terms_generation = 0
        self._matching_terms: dict[
            tuple[str, str, tuple[tuple[str, str], ...]], list[TermAggregate]
        ] = {}
        self._matching_terms_key = (-1, -1)
        self.namespaces: dict[str, Namespace] = {}
        self.generation = 0
        self.static_generation = 0
        self.namespace_generation = 0
        # Per resource, whether every node has some allocatable (`everywhere`), kept until a
        # node's allocatable changes (`_allocatable_generation`).
        self._allocatable_generation = 0
        self._everywhere: dict[str, bool] = {}
        self._everywhere_generation = -1
        self._static_cache: OrderedDict[str, object] = OrderedDict()
        self._static_cache_generation = -1
        self._topology: dict[str, TopologyIndex] = {}
        self._names_view: tuple[str, ...] | None = None
        self._live_slots: IntArray | None = None
        self._selector_counts: OrderedDict[tuple[str, tuple[object, ...], bool], SelectorCount] = (
            OrderedDict()
        )
        # namespace -> an index label of SelectorCount (or None) -> the counts indexed there.
        self._selector_index: dict[
            str, dict[tuple[str, str] | None, dict[object, SelectorCount]]
        ] = {}
        # Long-lived state derived from this snapshot (the GPU allocator, the load view), one
        # per type, owned here so that it lives and dies with the snapshot it describes.
        self._attached: dict[type, object] = {}

    # ---------------------------------------------------------------- queries

    @property
    def node_count(self) -> int:
        return len(self._slot_of)

    def node(self, name: str) -> Node | None:
        slot = self._slot_of.get(name)
        return None if slot is None else self.nodes[slot]

    def slot_of(self, name: str) -> int | None:
        return self._slot_of.get(name)

    def iter_nodes(self) -> Iterator[tuple[int, Node]]:
        for slot, node in enumerate(self.nodes):
            if node is not None:
                yield slot, node

    def pod(self, key: str) -> Pod | None:
        entry = self.pods.get(key)
        if entry is not None:
            return entry.pod
        for waiting in self._pending.values():
            if key in waiting:
                return waiting[key]
        return None

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        known = self.namespaces.get(namespace)
        if known is not None:
            return known.labels
        return {LABEL_NAMESPACE_NAME: namespace}

    def namespace_names(self) -> set[str]:
        return set(self.namespaces) | set(self._namespace_pods)

    def term_namespaces(self, term: AffinityTerm) -> set[str]:
        """The namespaces an affinity term reaches (explicit list plus namespaceSelector)."""
        names = set(term.namespaces)
        if not term.namespace_selector.nothing:
            for namespace in self.namespace_names():
                if term.namespace_selector.matches(self.namespace_labels(namespace)):
                    names.add(namespace)
        return names

    def pods_matching(self, namespace: str, selector: LabelSelector) -> list[PodEntry]:
        """Assigned pods in `namespace` whose labels match `selector`, found via the label index."""
        if selector.nothing:
            return []
        by_key = self._label_index.get(namespace)
        if not by_key:
            return []
        indexed: list[set[str]] = []
        rest: list[Requirement] = []
        for requirement in selector.requirements:
            if requirement.op != "In":
                rest.append(requirement)
                continue
            by_value = by_key.get(requirement.key)
            if not by_value:
                return []
            if len(requirement.values) == 1:
                candidates = by_value.get(next(iter(requirement.values)))
                if not candidates:
                    return []
            else:
                candidates = set()
                for value in requirement.values:
                    candidates |= by_value.get(value, set())
            indexed.append(candidates)
        keys: set[str]
        if not indexed:
            keys = self._namespace_pods.get(namespace, set())
        elif len(indexed) == 1:
            keys = indexed[0]
        else:
            indexed.sort(key=len)
            keys = indexed[0].intersection(*indexed[1:])
        pods = self.pods
        if not rest:
            return [pods[key] for key in keys]
        return [
            pods[key]
            for key in keys
            if all(requirement.matches(pods[key].pod.labels) for requirement in rest)
        ]

    def term_matches(self, aggregate: TermAggregate, pod: Pod) -> bool:
        """Whether an existing pods' term selects `pod`, cached per pod namespace and labels."""
        if aggregate.namespace_generation != self.namespace_generation:
            aggregate.match_cache.clear()
            aggregate.namespace_generation = self.namespace_generation
        key = (pod.namespace, pod.label_signature)
        cached = aggregate.match_cache.get(key)
        if cached is None:
            cached = aggregate.term.matches(
                pod.namespace, pod.labels, self.namespace_labels(pod.namespace)
            )
            if len(aggregate.match_cache) > _MATCH_CACHE_SIZE:
                aggregate.match_cache.clear()
            aggregate.match_cache[key] = cached
        return cached

    def count_matching(
        self, namespace: str, selector: LabelSelector, *, live_only: bool = False
    ) -> IntArray:
        """Per node slot, the assigned pods in ``namespace`` that ``selector`` matches (only
        those not terminating with ``live_only``): `per_node_count(pods_matching(...))`, but
        kept up to date incrementally once asked for, so its cost does not grow with the pods
        already bound. Read-only; valid until the snapshot next changes."""
        view = self.selector_count(namespace, selector, live_only=live_only).counts.view()
        view.flags.writeable = False
        return view

    def selector_count(
        self, namespace: str, selector: LabelSelector, *, live_only: bool = False
    ) -> SelectorCount:
        """The kept count behind `count_matching` (its ``counts`` and ``version``), for callers
        that also want its per-domain sums (`domain_sums`). Valid until the snapshot changes."""
        key = (namespace, selector.signature, live_only)
        counted = self._selector_counts.get(key)
        if counted is None:
            entries = self.pods_matching(namespace, selector)
            if live_only:
                entries = [entry for entry in entries if not entry.pod.terminating]
            counted = SelectorCount(selector, live_only, self.per_node_count(entries))
            self._selector_counts[key] = counted
            by_label = self._selector_index.setdefault(namespace, {})
            for label in counted.index_labels:
                by_label.setdefault(label, {})[key] = counted
            if len(self._selector_counts) > _SELECTOR_COUNTS_SIZE:
                dropped_key, dropped = self._selector_counts.popitem(last=False)
                by_label = self._selector_index[dropped_key[0]]
                for label in dropped.index_labels:
                    del by_label[label][dropped_key]
                    if not by_label[label]:
                        del by_label[label]
                if not by_label:
                    del self._selector_index[dropped_key[0]]
        else:
            self._selector_counts.move_to_end(key)
        return counted

    def domain_sums(
        self,
        key: str,
        counted: TermAggregate | SelectorCount,
        mask: BoolArray | None = None,
    ) -> IntArray:
        """``counted.counts`` summed over each domain of the topology ``key`` (only over the
        slots ``mask`` keeps, if given), indexed by domain id, with one 0 appended:
        ``domain_sums(key, c)[topology(key).domain[slots]]`` is, per slot, its domain's total
        (0 where the node lacks the label, whose id is -1). Kept with ``counted`` until its
        counts or the nodes change (and per ``mask`` object: pass the same array for the same
        nodes, e.g. one kept per pod shape), so a cycle costs a lookup, not a sum over every
        node. Read-only."""
        index = self.topology(key)
        cache_key: object = key if mask is None else (key, id(mask))
        cached = counted.sums.get(cache_key)
        if (
            cached is not None
            and cached.version == counted.version
            and cached.index is index
            and cached.mask is mask
        ):
            return cached.view
        per_node = counted.counts if mask is None else np.where(mask, counted.counts, 0)
        sums = np.zeros(len(index.values) + 1, dtype=np.int64)
        sums[:-1] = index.aggregate(per_node)
        for stale_key in [k for k, kept in counted.sums.items() if kept.index is not index]:
            del counted.sums[stale_key]  # summed over nodes that have changed since
        if len(counted.sums) >= _DOMAIN_SUMS_SIZE:
            counted.sums.clear()
        kept = counted.sums[cache_key] = KeptSums(counted.version, index, sums, mask)
        return kept.view

    def matching_terms(self, category: str, pod: Pod) -> list[TermAggregate]:
        """The existing pods' distinct terms of ``category`` that select ``pod`` (`term_matches`
        of each), cached per pod namespace and labels until a distinct term comes or goes."""
        key = (self._terms_generation, self.namespace_generation)
        if self._matching_terms_key != key:
            self._matching_terms.clear()
            self._matching_terms_key = key
        cache_key = (category, pod.namespace, pod.label_signature)
        matched = self._matching_terms.get(cache_key)
        if matched is None:
            if len(self._matching_terms) > _MATCH_CACHE_SIZE:
                self._matching_terms.clear()
            matched = [
                aggregate
                for aggregate in self.terms[category].values()
                if self.term_matches(aggregate, pod)
            ]
            self._matching_terms[cache_key] = matched
        return matched

    def _count_selectors(self, pod: Pod, slot: int, delta: int) -> None:
        by_label = self._selector_index.get(pod.namespace)
        if not by_label:
            return
        for label in (*pod.labels.items(), None):
            counted = by_label.get(label)
            if counted:
                for selector_count in counted.values():
                    if selector_count.counts_pod(pod):
                        _add_count(selector_count, slot, delta)

    def per_node_count(self, entries: Iterable[PodEntry]) -> IntArray:
        slots = np.fromiter((entry.slot for entry in entries), dtype=np.int64)
        return np.bincount(slots, minlength=self.capacity).astype(np.int64)

    def topology(self, key: str) -> TopologyIndex:
        """Domain ids of every node slot for `key`, rebuilt only after node changes."""
        index = self._topology.get(key)
        if index is not None:
            return index
        domain = np.full(self.capacity, -1, dtype=np.int64)
        values: list[str] = []
        ids: dict[str, int] = {}
        for slot, node in self.iter_nodes():
            value = node.labels.get(key)
            if value is None:
                continue
            domain_id = ids.get(value)
            if domain_id is None:
                domain_id = ids[value] = len(values)
                values.append(value)
            domain[slot] = domain_id
        index = TopologyIndex(domain, values, ids)
        self._topology[key] = index
        return index

    def static_cache(self) -> OrderedDict[str, object]:
        """Per-pod-shape results of the node-only filters; emptied whenever nodes change."""
        if self._static_cache_generation != self.static_generation:
            self._static_cache.clear()
            self._static_cache_generation = self.static_generation
        return self._static_cache

    def attach(self, state: object) -> None:
        """Keep ``state`` (a GpuAllocator, a LoadTracker) with this snapshot, one per type.

        Scheduling cycles hand what is attached to their plugins in the cycle context; a value
        attached again replaces the earlier one of its type."""
        self._attached[type(state)] = state

    def attached(self, kind: type[_T]) -> _T | None:
        """The state of type ``kind`` attached to this snapshot, or None."""
        state = self._attached.get(kind)
        return state if isinstance(state, kind) else None

    def attached_or_new(self, kind: type[_T], make: Callable[[], _T]) -> _T:
        """The state of type ``kind`` attached to this snapshot; ``make()`` attached first if
        there is none (long-lived state made with defaults on first use)."""
        state = self.attached(kind)
        if state is None:
            state = make()
            self.attach(state)
        return state

    def remember_static(self, key: str, value: object) -> None:
        cache = self.static_cache()
        cache[key] = value
        if len(cache) > _STATIC_CACHE_SIZE:
            cache.popitem(last=False)

    def everywhere(self, name: str) -> bool:
        """Whether every node has some of resource ``name`` allocatable (cpu and memory
        everywhere, as a rule): a score over any feasible nodes then needs no mask for it."""
        if self._everywhere_generation != self._allocatable_generation:
            self._everywhere.clear()
            self._everywhere_generation = self._allocatable_generation
        known = self._everywhere.get(name)
        if known is None:
            array = self.allocatable.get(name)
            slots = self.live_slots()
            known = array is not None and len(slots) > 0 and bool((array[slots] > 0).all())
            self._everywhere[name] = known
        return known

    def resource_arrays(self, name: str) -> tuple[IntArray, IntArray]:
        """(allocatable, requested) for a resource; zeros if no node or pod has mentioned it."""
        if name not in self.allocatable:
            zeros = np.zeros(self.capacity, dtype=np.int64)
            return zeros, zeros
        return self.allocatable[name], self.requested[name]

    def free_arrays(self, name: str) -> tuple[IntArray, IntArray]:
        """(allocatable, allocatable - requested) for a resource; zeros if never mentioned."""
        if name not in self.allocatable:
            zeros = np.zeros(self.capacity, dtype=np.int64)
            return zeros, zeros
        return self.allocatable[name], self.free[name]

    # ---------------------------------------------------------------- nodes

    def add_node(self, node: Node | JsonObject) -> Node:
        """Add a Node, or replace the one with the same name (a watch ADDED or MODIFIED)."""
        if not isinstance(node, Node):
            node = parse_node(node)
        slot = self._slot_of.get(node.name)
        if slot is not None:
            self._replace_node(slot, node)
            return node
        if not self._free_slots:
            self._grow_capacity(max(8, self.capacity * 2))
        slot = self._free_slots.pop()
        self._slot_of[node.name] = slot
        self.nodes[slot] = node
        self._bump_slot_version(slot)
        self.node_names[slot] = node.name
        self.alive[slot] = True
        self.name_hash[slot] = zlib.crc32(node.name.encode())
        self._set_allocatable(slot, node)
        self._node_changed()
        waiting = self._pending.pop(node.name, {})
        for pod in waiting.values():
            self.pods.pop(pod.key, None)
            self._attach(pod, slot)
        return node

    def update_node(self, node: Node | JsonObject) -> Node:
        return self.add_node(node)

    def remove_node(self, name: str) -> None:
        """Delete a Node; its pods wait (uncounted) in case the node comes back."""
        slot = self._slot_of.pop(name, None)
        if slot is None:
            return
        for entry in list(self.node_pods[slot].values()):
            self._detach(entry)
            self._pending.setdefault(name, {})[entry.pod.key] = entry.pod
            self.pods[entry.pod.key] = PodEntry(entry.pod, -1)
        self.nodes[slot] = None
        self._bump_slot_version(slot)
        self.node_names[slot] = ""
        self.alive[slot] = False
        self.allowed_pods[slot] = 0
        self.pod_room[slot] = 0
        for name, array in self.allocatable.items():
            array[slot] = 0
            self.free[name][slot] = -self.requested[name][slot]
        self._free_slots.append(slot)
        self._node_changed()

    def _replace_node(self, slot: int, node: Node) -> None:
        old = self.nodes[slot]
        self.nodes[slot] = node
        self._bump_slot_version(slot)
        self._set_allocatable(slot, node)
        if old is None or old.static_signature != node.static_signature:
            self._node_changed()
        else:
            self.generation += 1

    def _bump_slot_version(self, slot: int) -> None:
        self._slot_versions += 1
        self.slot_version[slot] = self._slot_versions

    def _set_allocatable(self, slot: int, node: Node) -> None:
        self._allocatable_generation += 1
        for name, array in self.allocatable.items():
            array[slot] = node.allocatable.get(name, 0)
        for name, amount in node.allocatable.items():
            self._ensure_resource(name)[slot] = amount
        for name, array in self.allocatable.items():
            self.free[name][slot] = array[slot] - self.requested[name][slot]
        self.allowed_pods[slot] = node.allowed_pods
        self.pod_room[slot] = node.allowed_pods - self.pod_count[slot]

    def names_view(self) -> tuple[str, ...]:
        """Node name per slot ("" for free slots); one shared tuple until the node set changes."""
        if self._names_view is None:
            self._names_view = tuple(self.node_names)
        return self._names_view

    @property
    def last_slot_version(self) -> int:
        """The newest slot version handed out (`slot_version`): unchanged, no slot changed."""
        return self._slot_versions

    def live_slots(self) -> IntArray:
        """The slots that hold a node, ascending: one shared read-only array until the node set
        changes (every scheduling cycle starts from it)."""
        if self._live_slots is None:
            slots = np.flatnonzero(self.alive).astype(np.int64)
            slots.flags.writeable = False
            self._live_slots = slots
        return self._live_slots

    def _node_changed(self) -> None:
        self._allocatable_generation += 1
        self._names_view = None
        self._live_slots = None
        self.generation += 1
        self.static_generation += 1
        self._topology.clear()

    def _ensure_resource(self, name: str) -> IntArray:
        array = self.allocatable.get(name)
        if array is None:
            array = self.allocatable[name] = np.zeros(self.capacity, dtype=np.int64)
            self.requested[name] = np.zeros(self.capacity, dtype=np.int64)
            self.free[name] = np.zeros(self.capacity, dtype=np.int64)
        return array

    def _grow_capacity(self, capacity: int) -> None:
        old = self.capacity
        self.capacity = capacity
        self.alive = _grow(self.alive, capacity, False)
        self.allowed_pods = _grow(self.allowed_pods, capacity)
        self.pod_count = _grow(self.pod_count, capacity)
        self.pod_room = _grow(self.pod_room, capacity)
        self.nonzero_cpu = _grow(self.nonzero_cpu, capacity)
        self.nonzero_memory = _grow(self.nonzero_memory, capacity)
        self.name_hash = _grow(self.name_hash, capacity)
        self.slot_version = _grow(self.slot_version, capacity)
        for name in list(self.allocatable):
            self.allocatable[name] = _grow(self.allocatable[name], capacity)
            self.requested[name] = _grow(self.requested[name], capacity)
            self.free[name] = _grow(self.free[name], capacity)
        for by_signature in self.terms.values():
            for aggregate in by_signature.values():
                aggregate.counts = _grow(aggregate.counts, capacity)
        for selector_count in self._selector_counts.values():
            selector_count.counts = _grow(selector_count.counts, capacity)
        self.nodes.extend([None] * (capacity - old))
        self.node_names.extend([""] * (capacity - old))
        self.node_pods.extend({} for _ in range(capacity - old))
        self._free_slots.extend(range(capacity - 1, old - 1, -1))
        self._topology.clear()
        self._names_view = None
        self._live_slots = None
        self.static_generation += 1

    # ---------------------------------------------------------------- namespaces

    def add_namespace(self, namespace: Namespace | JsonObject) -> Namespace:
        if not isinstance(namespace, Namespace):
            namespace = parse_namespace(namespace)
        self.namespaces[namespace.name] = namespace
        self.generation += 1
        self.namespace_generation += 1
        return namespace

    def update_namespace(self, namespace: Namespace | JsonObject) -> Namespace:
        return self.add_namespace(namespace)

    def remove_namespace(self, name: str) -> None:
        self.namespaces.pop(name, None)
        self.generation += 1
        self.namespace_generation += 1

    # ---------------------------------------------------------------- pods

    def add_pod(self, pod: Pod | JsonObject) -> Pod:
        """Add or replace an assigned pod (spec.nodeName set) as load on its node.

        A terminal pod (Succeeded/Failed) is not load: it replaces and so removes any earlier
        version. Confirms an assumed pod of the same key.
        """
        if not isinstance(pod, Pod):
            pod = parse_pod(pod)
        if not pod.node_name:
            raise SchedulerInputError(
                f"Pod {pod.key}: spec.nodeName: must be set for a pod added as load "
                "(pods to place go to schedule_one)"
            )
        self.remove_pod(pod.key)
        if pod.terminal:
            return pod
        slot = self._slot_of.get(pod.node_name)
        if slot is None:
            self._pending.setdefault(pod.node_name, {})[pod.key] = pod
            self.pods[pod.key] = PodEntry(pod, -1)
        else:
            self._attach(pod, slot)
        self.generation += 1
        return pod

    def update_pod(self, pod: Pod | JsonObject) -> Pod:
        return self.add_pod(pod)

    def remove_pod(self, key: str) -> None:
        """Delete an assigned or assumed pod by `namespace/name`."""
        self._assumed.discard(key)
        entry = self.pods.get(key)
        if entry is None:
            return
        if entry.slot < 0:
            del self.pods[key]
            waiting = self._pending.get(entry.pod.node_name)
            if waiting is not None:
                waiting.pop(key, None)
                if not waiting:
                    del self._pending[entry.pod.node_name]
        else:
            self._detach(entry)
        self.generation += 1

    def assume(self, pod: Pod, node_name: str) -> Pod:
        """Count `pod` on `node_name` now, before the binding is confirmed; returns the bound copy.

        A later `add_pod`/`update_pod` for the same key (the watch event) replaces it;
        `forget` undoes it if binding failed.
        """
        if node_name not in self._slot_of:
            raise KeyError(f"node {node_name!r} is not in the snapshot")
        bound = pod.bound_to(node_name)
        self.add_pod(bound)
        self._assumed.add(bound.key)
        return bound

    def forget(self, key: str) -> None:
        """Drop an assumed pod whose binding failed."""
        if key in self._assumed:
            self.remove_pod(key)

    def confirm(self, key: str, labels: Mapping[str, str] | None = None) -> bool:
        """The assumed pod is bound as assumed: it stays, now as ordinary load.

        ``labels`` are the bound pod's: the API server's binding may add the node's topology
        labels (``topology.kubernetes.io/zone``/``region``) to the pod. They are re-indexed in
        place unless the pod's own affinity terms were built from its labels
        (``matchLabelKeys``). False when the pod is not assumed here or must be re-added.
        """
        entry = self.pods.get(key)
        if entry is None or key not in self._assumed:
            return False
        pod = entry.pod
        if labels is not None and labels != pod.labels:
            if pod.has_affinity_terms or entry.slot < 0:
                return False
            self._unindex_labels(pod)
            pod.labels = {str(k): str(v) for k, v in labels.items()}
            pod.label_signature = tuple(sorted(pod.labels.items()))
            self._index_labels(pod)
            self.generation += 1
        self._assumed.discard(key)
        return True

    def _attach(self, pod: Pod, slot: int) -> None:
        entry = PodEntry(pod, slot)
        self.pods[pod.key] = entry
        self.node_pods[slot][pod.key] = entry
        for name, amount in pod.requests.items():
            self._ensure_resource(name)
            self.requested[name][slot] += amount
            self.free[name][slot] -= amount
        self.nonzero_cpu[slot] += pod.nonzero_cpu
        self.nonzero_memory[slot] += pod.nonzero_memory
        self.pod_count[slot] += 1
        self.pod_room[slot] -= 1
        self._bump_slot_version(slot)
        for port in pod.host_ports:
            ips = self.host_ports.setdefault((port.protocol, port.port), {}).setdefault(slot, {})
            ips[port.ip] = ips.get(port.ip, 0) + 1
        self._index_labels(pod)
        self._count_selectors(pod, slot, 1)
        self._namespace_pods.setdefault(pod.namespace, set()).add(pod.key)
        if pod.has_affinity_terms:
            for category, weight, term in _pod_terms(pod):
                by_signature = self.terms[category]
                aggregate = by_signature.get((term.signature, weight))
                if aggregate is None:
                    aggregate = TermAggregate(term, weight, self.capacity)
                    by_signature[(term.signature, weight)] = aggregate
                    self._terms_generation += 1
                _add_count(aggregate, slot, 1)
                aggregate.total += 1

    def _index_labels(self, pod: Pod) -> None:
        by_key = self._label_index.setdefault(pod.namespace, {})
        for key, value in pod.labels.items():
            by_key.setdefault(key, {}).setdefault(value, set()).add(pod.key)

    def _unindex_labels(self, pod: Pod) -> None:
        by_key = self._label_index[pod.namespace]
        for key, value in pod.labels.items():
            by_value = by_key[key]
            keys = by_value[value]
            keys.discard(pod.key)
            if not keys:
                del by_value[value]
                if not by_value:
                    del by_key[key]

    def _detach(self, entry: PodEntry) -> None:
        pod, slot = entry.pod, entry.slot
        del self.pods[pod.key]
        self.node_pods[slot].pop(pod.key, None)
        for name, amount in pod.requests.items():
            self.requested[name][slot] -= amount
            self.free[name][slot] += amount
        self.nonzero_cpu[slot] -= pod.nonzero_cpu
        self.nonzero_memory[slot] -= pod.nonzero_memory
        self.pod_count[slot] -= 1
        self.pod_room[slot] += 1
        self._bump_slot_version(slot)
        for port in pod.host_ports:
            by_slot = self.host_ports[(port.protocol, port.port)]
            ips = by_slot[slot]
            ips[port.ip] -= 1
            if not ips[port.ip]:
                del ips[port.ip]
            if not ips:
                del by_slot[slot]
            if not by_slot:
                del self.host_ports[(port.protocol, port.port)]
        self._unindex_labels(pod)
        self._count_selectors(pod, slot, -1)
        namespace_pods = self._namespace_pods[pod.namespace]
        namespace_pods.discard(pod.key)
        if not namespace_pods:
            del self._namespace_pods[pod.namespace]
            del self._label_index[pod.namespace]
        if pod.has_affinity_terms:
            for category, weight, term in _pod_terms(pod):
                by_signature = self.terms[category]
                aggregate = by_signature[(term.signature, weight)]
                _add_count(aggregate, slot, -1)
                aggregate.total -= 1
                if not aggregate.total:
                    del by_signature[(term.signature, weight)]
                    self._terms_generation += 1


def _add_count(counted: TermAggregate | SelectorCount, slot: int, delta: int) -> None:
    """``counted.counts[slot] += delta``; the per-domain sums kept with it (`domain_sums`) that
    were current follow the change in place, so reading them stays a lookup."""
    counted.counts[slot] += delta
    version = counted.version
    counted.version = version + 1
    if not counted.sums:
        return
    stale: list[object] = []
    for cache_key, kept in counted.sums.items():
        domains = kept.index.domain
        if kept.version != version or slot >= len(domains):
            stale.append(cache_key)  # stale already: recomputed when next read
            continue
        kept.version = version + 1
        domain = domains[slot]
        if domain >= 0 and (kept.mask is None or kept.mask[slot]):
            kept.sums[domain] += delta
    for cache_key in stale:
        del counted.sums[cache_key]


def _pod_terms(pod: Pod) -> Iterator[tuple[str, int, AffinityTerm]]:
    for term in pod.required_anti_affinity:
        yield REQUIRED_ANTI_AFFINITY, 0, term
    for term in pod.required_affinity:
        yield REQUIRED_AFFINITY, 0, term
    for weighted in pod.preferred_affinity:
        yield PREFERRED_AFFINITY, weighted.weight, weighted.term
    for weighted in pod.preferred_anti_affinity:
        yield PREFERRED_ANTI_AFFINITY, weighted.weight, weighted.term
