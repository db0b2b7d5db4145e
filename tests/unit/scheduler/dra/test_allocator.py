"""The DRA allocator: kube-scheduler's semantics, with gputopo's topology-aware choice."""

from __future__ import annotations

import pytest

from gputopo.scheduler.dra.allocator import Allocator, Unallocatable, claim_satisfied
from gputopo.scheduler.dra.inventory import Usage, usage_of
from gputopo.scheduler.dra.model import ResourceClaim, parse_device_taint_rule, parse_resource_claim
from gputopo.scheduler.gpu_alloc import LEVEL_ALIGNED
from tests.unit.scheduler.dra.dra_builders import (
    claim,
    claim_object,
    classes,
    exactly,
    node_setup,
)

GPU = "gpu.nvidia.com"


def _allocated(one: ResourceClaim, results: tuple[object, ...], node: str) -> ResourceClaim:
    obj = claim_object(one.name, [])
    obj["spec"] = one.raw["spec"]
    obj["status"] = {
        "allocation": {
            "devices": {"results": [r.wire() for r in results]},  # type: ignore[attr-defined]
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
        }
    }
    return parse_resource_claim(obj)


def _devices(inventory: object) -> dict[tuple[str, str, str], object]:
    return {d.key: d for d in inventory.devices}  # type: ignore[attr-defined]


def test_four_gpus_on_dgx_h100_come_from_one_numa_node() -> None:
    inventory, topology = node_setup("dgx-h100")
    allocator = Allocator()
    one = claim("four", exactly("gpus", 4))
    result = allocator.allocate([one], inventory, Usage(), classes(), topology=topology)
    names = [r.device for r in result.results[one.key]]
    assert len(names) == 4
    places = [topology.place(d) for d in result.devices]
    assert len({p.gpu.numa_node for p in places if p}) == 1
    assert result.level == LEVEL_ALIGNED
    assert (
        claim_satisfied(
            one, result.results[one.key], _devices(inventory), classes(), allocator.selectors
        )
        == []
    )


def test_second_claim_fills_the_half_used_numa_node_first() -> None:
    inventory, topology = node_setup("dgx-h100")
    allocator = Allocator()
    first = claim("one", exactly("gpu", 1))
    done = allocator.allocate([first], inventory, Usage(), classes(), topology=topology)
    usage = usage_of(inventory, [_allocated(first, done.results[first.key], "node-a")])
    second = claim("two", exactly("gpus", 2))
    result = allocator.allocate([second], inventory, usage, classes(), topology=topology)
    numa_first = {topology.place(d).gpu.numa_node for d in done.devices}  # type: ignore[union-attr]
    numa_second = {topology.place(d).gpu.numa_node for d in result.devices}  # type: ignore[union-attr]
    assert numa_first == numa_second
    assert not {r.device for r in result.results[second.key]} & {
        r.device for r in done.results[first.key]
    }


def test_devices_allocated_to_other_claims_are_never_given_again() -> None:
    inventory, topology = node_setup("dgx-h100")
    allocator = Allocator()
    all_gpus = claim("all", exactly("gpus", mode="All"))
    taken = allocator.allocate([all_gpus], inventory, Usage(), classes(), topology=topology)
    assert len(taken.results[all_gpus.key]) == 8
    usage = usage_of(inventory, [_allocated(all_gpus, taken.results[all_gpus.key], "node-a")])
    with pytest.raises(Unallocatable, match="0 of 1 matching devices available"):
        allocator.allocate([claim("late", exactly("gpu"))], inventory, usage, classes())


def test_all_mode_needs_every_matching_device_free() -> None:
    inventory, _ = node_setup("dgx-h100")
    allocator = Allocator()
    first = claim("one", exactly("gpu"))
    done = allocator.allocate([first], inventory, Usage(), classes())
    usage = usage_of(inventory, [_allocated(first, done.results[first.key], "node-a")])
    with pytest.raises(Unallocatable, match="All needs every matching device free"):
        allocator.allocate([claim("all", exactly("g", mode="All"))], inventory, usage, classes())


def test_request_selectors_narrow_the_class() -> None:
    inventory, _ = node_setup("dgx-a100-mig")
    allocator = Allocator()
    one = claim(
        "big-mig",
        exactly("mig", 1, "mig.nvidia.com", (f"device.attributes['{GPU}'].profile == '3g.40gb'",)),
    )
    result = allocator.allocate([one], inventory, Usage(), classes())
    (device,) = result.devices
    assert device.attributes[f"{GPU}/profile"].value == "3g.40gb"


def test_cel_runtime_error_is_a_reason_naming_the_selector() -> None:
    inventory, _ = node_setup("dgx-h100")
    one = claim("bad", exactly("gpu", 1, selectors=(f"device.attributes['{GPU}'].nope == 1",)))
    with pytest.raises(Unallocatable, match=r"CEL runtime error.*nope"):
        Allocator().allocate([one], inventory, Usage(), classes())


def test_unknown_device_class_is_named() -> None:
    inventory, _ = node_setup("dgx-h100")
    with pytest.raises(Unallocatable, match=r"device class fpga\.example\.com does not exist"):
        Allocator().allocate(
            [claim("x", exactly("f", 1, "fpga.example.com"))], inventory, Usage(), classes()
        )


def test_match_attribute_keeps_two_requests_under_one_pcie_root() -> None:
    # dgx-a100-mig: its four whole GPUs sit in pairs below two root complexes
    inventory, topology = node_setup("dgx-a100-mig")
    one = claim(
        "pair",
        exactly("a"),
        exactly("b"),
        constraints=[{"matchAttribute": "resource.kubernetes.io/pcieRoot"}],
    )
    result = Allocator().allocate([one], inventory, Usage(), classes(), topology=topology)
    roots = {d.attributes["resource.kubernetes.io/pcieRoot"].value for d in result.devices}
    assert len(roots) == 1
    assert len({d.name for d in result.devices}) == 2


def test_distinct_attribute_spreads_over_pcie_roots() -> None:
    inventory, _ = node_setup("dgx-h100")
    one = claim(
        "spread",
        exactly("a", 3),
        constraints=[{"distinctAttribute": "resource.kubernetes.io/pcieRoot"}],
    )
    result = Allocator().allocate([one], inventory, Usage(), classes())
    roots = [d.attributes["resource.kubernetes.io/pcieRoot"].value for d in result.devices]
    assert len(set(roots)) == 3


def test_match_attribute_that_no_pair_shares_is_unallocatable() -> None:
    inventory, _ = node_setup("dgx-h100")  # every GPU below its own root complex
    one = claim(
        "u", exactly("a", 2), constraints=[{"matchAttribute": "resource.kubernetes.io/pcieRoot"}]
    )
    with pytest.raises(Unallocatable, match="cannot allocate all claims"):
        Allocator().allocate([one], inventory, Usage(), classes())


def test_first_available_falls_back_to_the_next_sub_request() -> None:
    inventory, _ = node_setup("dgx-h100")
    request = {
        "name": "gpus",
        "firstAvailable": [
            {"name": "sixteen", "deviceClassName": "gpu.nvidia.com", "count": 16},
            {"name": "eight", "deviceClassName": "gpu.nvidia.com", "count": 8},
        ],
    }
    one = parse_resource_claim(claim_object("fa", [request]))
    result = Allocator().allocate([one], inventory, Usage(), classes())
    assert {r.request for r in result.results[one.key]} == {"gpus/eight"}
    assert len(result.results[one.key]) == 8


def test_partitionable_mig_counters_stop_overlapping_partitions() -> None:
    inventory, topology = node_setup("dgx-h100", partitionable=True)
    allocator = Allocator()
    seven = claim(
        "whole",
        exactly("m", 1, "mig.nvidia.com", (f"device.attributes['{GPU}'].profile == '7g.80gb'",)),
    )
    placed: list[ResourceClaim] = []
    for i in range(8):
        one = claim(f"whole-{i}", *seven.raw["spec"]["devices"]["requests"])
        usage = usage_of(inventory, placed)
        result = allocator.allocate([one], inventory, usage, classes(), topology=topology)
        placed.append(_allocated(one, result.results[one.key], "node-a"))
    usage = usage_of(inventory, placed)
    with pytest.raises(Unallocatable):
        allocator.allocate(
            [claim("more", exactly("m", 1, "mig.nvidia.com"))], inventory, usage, classes()
        )
    with pytest.raises(Unallocatable):
        allocator.allocate([claim("gpu", exactly("g"))], inventory, usage, classes())


def test_small_mig_devices_pack_onto_one_gpu() -> None:
    inventory, topology = node_setup("dgx-h100", partitionable=True)
    allocator = Allocator()
    selector = (f"device.attributes['{GPU}'].profile == '1g.10gb'",)
    placed: list[ResourceClaim] = []
    parents = set()
    for i in range(7):
        one = claim(f"small-{i}", exactly("m", 1, "mig.nvidia.com", selector))
        result = allocator.allocate(
            [one], inventory, usage_of(inventory, placed), classes(), topology=topology
        )
        placed.append(_allocated(one, result.results[one.key], "node-a"))
        parents |= {d.attributes[f"{GPU}/parentUUID"].value for d in result.devices}
    assert len(parents) == 1


def test_untolerated_device_taint_keeps_the_device_out() -> None:
    inventory, topology = node_setup("dgx-h100")
    rule = parse_device_taint_rule(
        {
            "metadata": {"name": "sick"},
            "spec": {
                "deviceSelector": {"driver": GPU, "pool": "node-a", "device": "gpu-0"},
                "taint": {
                    "key": "gputopo.io/gpu-health",
                    "value": "failed",
                    "effect": "NoSchedule",
                },
            },
        }
    )
    all_gpus = claim("all", exactly("g", mode="All"))
    result = Allocator().allocate([all_gpus], inventory, Usage(), classes(), [rule], topology)
    assert "gpu-0" not in {r.device for r in result.results[all_gpus.key]}
    tolerant = claim(
        "tolerant",
        exactly(
            "g", mode="All", tolerations=[{"key": "gputopo.io/gpu-health", "operator": "Exists"}]
        ),
    )
    result = Allocator().allocate([tolerant], inventory, Usage(), classes(), [rule], topology)
    assert "gpu-0" in {r.device for r in result.results[tolerant.key]}


def test_none_effect_taint_does_not_block() -> None:
    inventory, _ = node_setup("dgx-h100")
    rule = parse_device_taint_rule(
        {
            "metadata": {"name": "degraded"},
            "spec": {
                "deviceSelector": {"device": "gpu-0"},
                "taint": {"key": "gputopo.io/gpu-health", "value": "degraded", "effect": "None"},
            },
        }
    )
    one = claim("all", exactly("g", mode="All"))
    result = Allocator().allocate([one], inventory, Usage(), classes(), [rule])
    assert len(result.results[one.key]) == 8


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"adminAccess": True}, "adminAccess"),
        ({"capacity": {"requests": {"memory": "1Gi"}}}, "capacity requests"),
    ],
)
def test_unsupported_request_features_are_named(extra: dict[str, object], named: str) -> None:
    inventory, _ = node_setup("dgx-h100")
    one = claim("x", exactly("g", 1, **extra))
    with pytest.raises(Unallocatable, match=f"{named}.*not supported by gputopo"):
        Allocator().allocate([one], inventory, Usage(), classes())


def test_two_claims_of_one_pod_get_different_devices() -> None:
    inventory, topology = node_setup("dgx-h100")
    a, b = claim("a", exactly("g", 4)), claim("b", exactly("g", 4))
    result = Allocator().allocate([a, b], inventory, Usage(), classes(), topology=topology)
    got_a = {r.device for r in result.results[a.key]}
    got_b = {r.device for r in result.results[b.key]}
    assert len(got_a) == len(got_b) == 4
    assert not got_a & got_b
