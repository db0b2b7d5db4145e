"""Which DRA devices each node has, which are taken, and what their counters have left.

kube-scheduler's structured allocator (k8s.io/dynamic-resource-allocation/structured) sees a
node's devices as the pools of the ResourceSlices published for it: per pool only the slices of
the newest generation count, and a pool is *complete* when it holds ``resourceSliceCount`` of
them. Devices of incomplete pools can still be allocated one by one; ``All`` requests refuse
them. A device is taken when any ResourceClaim's ``status.allocation`` names it, whoever wrote
it (kube-scheduler, gputopo, a human) — and counters a taken device consumes are gone from its
pool's counter set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gputopo.scheduler.dra.model import (
    Device,
    DeviceTaint,
    DeviceTaintRule,
    ResourceClaim,
    ResourceSlice,
)

PoolKey = tuple[str, str]  # (driver, pool)
DeviceKey = tuple[str, str, str]  # (driver, pool, device)
CounterKey = tuple[str, str, str]  # (driver, pool, counter set)


@dataclass
class NodeInventory:
    """One node's devices in kube-scheduler's order (pools by name, slices, devices)."""

    node: str
    devices: list[Device] = field(default_factory=list)
    counters: dict[CounterKey, dict[str, int]] = field(default_factory=dict)
    incomplete: set[PoolKey] = field(default_factory=set)
    unsupported: list[str] = field(default_factory=list)

    def device(self, key: DeviceKey) -> Device | None:
        for device in self.devices:
            if device.key == key:
                return device
        return None


def node_inventories(slices: Iterable[ResourceSlice]) -> dict[str, NodeInventory]:
    """Per node, its devices and counter sets from the newest generation of each pool."""
    by_pool: dict[PoolKey, list[ResourceSlice]] = {}
    for one in slices:
        by_pool.setdefault((one.driver, one.pool), []).append(one)
    inventories: dict[str, NodeInventory] = {}
    for pool_key in sorted(by_pool):
        members = by_pool[pool_key]
        newest = max(s.generation for s in members)
        current = sorted((s for s in members if s.generation == newest), key=lambda s: s.name)
        nodes = {s.node_name for s in current if s.node_name is not None}
        # counter-only slices name the pool's node too (the driver's split layout)
        for node in sorted(nodes):
            inventory = inventories.setdefault(node, NodeInventory(node))
            if len(current) != max(s.slice_count for s in current):
                inventory.incomplete.add(pool_key)
            for one in current:
                if one.unsupported:
                    inventory.unsupported.append(one.unsupported)
                for set_name, counters in one.counters.items():
                    inventory.counters[(*pool_key, set_name)] = dict(counters)
                inventory.devices.extend(one.devices)
    return inventories


@dataclass
class Usage:
    """Devices taken on a node and counters consumed, by claims allocated so far."""

    taken: set[DeviceKey] = field(default_factory=set)
    consumed: dict[CounterKey, dict[str, int]] = field(default_factory=dict)

    def copy(self) -> Usage:
        return Usage(set(self.taken), {k: dict(v) for k, v in self.consumed.items()})

    def take(self, device: Device) -> None:
        self.taken.add(device.key)
        for set_name, counters in device.consumes.items():
            used = self.consumed.setdefault((device.driver, device.pool, set_name), {})
            for name, amount in counters.items():
                used[name] = used.get(name, 0) + amount

    def give_back(self, device: Device) -> None:
        self.taken.discard(device.key)
        for set_name, counters in device.consumes.items():
            used = self.consumed.get((device.driver, device.pool, set_name), {})
            for name, amount in counters.items():
                used[name] = used.get(name, 0) - amount


def usage_of(
    inventory: NodeInventory, claims: Iterable[ResourceClaim], skip: frozenset[str] = frozenset()
) -> Usage:
    """What the allocated claims (all but those in ``skip``) hold on this node."""
    usage = Usage()
    by_key: Mapping[DeviceKey, Device] = {d.key: d for d in inventory.devices}
    for claim in claims:
        if claim.allocation is None or claim.key in skip:
            continue
        for result in claim.allocation:
            device = by_key.get(result.device_key)
            if device is not None and device.key not in usage.taken:
                usage.take(device)
    return usage


def taints_of(device: Device, rules: Iterable[DeviceTaintRule]) -> tuple[DeviceTaint, ...]:
    """The device's own taints and those of every DeviceTaintRule selecting it."""
    return device.taints + tuple(rule.taint for rule in rules if rule.selects(device))
