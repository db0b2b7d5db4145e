"""Per-GPU health as DeviceTaintRules: classes and effects, which devices, the plan's hysteresis.

Machines: the DGX H100 of tests/unit/agent/machines.py (UUIDs ``GPU-0000000i-h100``) and the
A100 with MIG; ResourceSlices as NVIDIA's DRA driver publishes them (``gpu-<minor>`` with a
``uuid`` attribute, MIG slices ``gpu-<minor>-mig-...`` with ``parentUUID``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gputopo.agent.device_taints import (
    DesiredRule,
    DeviceHealthClass,
    DeviceTaintOptions,
    InvalidDeviceTaintEffect,
    RuleView,
    covers_node_health,
    desired_rules,
    gpu_health_class,
    plan_device_taints,
    rule_body,
    rule_name,
    sick_gpus,
    slice_devices,
)
from gputopo.agent.topology import Health, PciOnlyGpu, XidEvent
from gputopo.core.contract import Contract
from tests.unit.agent.machines import degraded, dgx_h100

NODE = "dgx-1"
DRIVER = "gpu.nvidia.com"
OPTIONS = DeviceTaintOptions()


def gpu_device(minor: int, uuid: str, pci: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"uuid": {"string": uuid}, "type": {"string": "gpu"}}
    if pci is not None:
        attributes["resource.kubernetes.io/pciBusID"] = {"string": pci}
    return {"name": f"gpu-{minor}", "attributes": attributes}


def mig_device(minor: int, parent: str, suffix: str) -> dict[str, Any]:
    return {
        "name": f"gpu-{minor}-mig-{suffix}",
        "attributes": {
            "uuid": {"string": f"MIG-{minor}-{suffix}"},
            "parentUUID": {"string": parent},
            "type": {"string": "mig"},
        },
    }


def resource_slice(
    devices: list[dict[str, Any]],
    *,
    node: str = NODE,
    driver: str = DRIVER,
    pool: str = NODE,
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{node}-{driver}-{generation}"},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": pool, "generation": generation, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def h100_slice(**kwargs: Any) -> dict[str, Any]:
    return resource_slice([gpu_device(i, f"GPU-{i:08d}-h100") for i in range(8)], **kwargs)


def existing(name: str, value: str, effect: str, pending: int = 0) -> RuleView:
    return RuleView(name, "7", "gputopo.io/gpu-health", value, effect, pending)


def desired(device: str, health: DeviceHealthClass) -> dict[str, DesiredRule]:
    name = rule_name(NODE, NODE, device)
    return {name: DesiredRule(name, NODE, device, health, OPTIONS.effect(health))}


# -- classes and effects -------------------------------------------------------------------------


def test_each_health_class_gets_its_default_effect() -> None:
    assert OPTIONS.effect(DeviceHealthClass.DEGRADED) == "None"
    assert OPTIONS.effect(DeviceHealthClass.FAILED) == "NoSchedule"
    assert OPTIONS.effect(DeviceHealthClass.RESET_REQUIRED) == "NoExecute"


def test_a_reset_xid_makes_the_gpu_reset_required_and_an_application_xid_does_not_count() -> None:
    reset = degraded(dgx_h100(), 2, health=Health.FAILED, xid_events=(XidEvent(48),))
    application = degraded(dgx_h100(), 2, xid_events=(XidEvent(13, 5),))

    assert gpu_health_class(reset.gpus[2], OPTIONS) is DeviceHealthClass.RESET_REQUIRED
    assert gpu_health_class(application.gpus[2], OPTIONS) is None


def test_a_stale_reset_xid_leaves_the_class_health_gave() -> None:
    topology = degraded(
        dgx_h100(), 2, health=Health.DEGRADED, xid_events=(XidEvent(94),), stale_xids=(94,)
    )
    assert gpu_health_class(topology.gpus[2], OPTIONS) is DeviceHealthClass.DEGRADED


def test_lost_and_failed_gpus_are_failed_and_degraded_ones_degraded() -> None:
    lost = degraded(dgx_h100(), 0, lost=True)
    failed = degraded(dgx_h100(), 0, health=Health.FAILED)
    slow = degraded(dgx_h100(), 0, health=Health.DEGRADED, nvlinks_down=2)

    assert gpu_health_class(lost.gpus[0], OPTIONS) is DeviceHealthClass.FAILED
    assert gpu_health_class(failed.gpus[0], OPTIONS) is DeviceHealthClass.FAILED
    assert gpu_health_class(slow.gpus[0], OPTIONS) is DeviceHealthClass.DEGRADED
    assert gpu_health_class(dgx_h100().gpus[1], OPTIONS) is None


def test_effects_and_reset_xids_are_configurable() -> None:
    options = DeviceTaintOptions(
        degraded_effect="NoSchedule",
        reset_required_effect="NoSchedule",
        reset_required_xids=frozenset({61}),
    )
    topology = degraded(dgx_h100(), 1, health=Health.DEGRADED, xid_events=(XidEvent(61),))

    assert gpu_health_class(topology.gpus[1], options) is DeviceHealthClass.RESET_REQUIRED
    assert options.effect(DeviceHealthClass.RESET_REQUIRED) == "NoSchedule"
    assert options.effect(DeviceHealthClass.DEGRADED) == "NoSchedule"


def test_a_node_taint_effect_that_devices_lack_names_the_flag() -> None:
    with pytest.raises(InvalidDeviceTaintEffect, match="--device-taint-effect-failed"):
        DeviceTaintOptions(failed_effect="PreferNoSchedule")


# -- which devices -------------------------------------------------------------------------------


def test_the_sick_gpu_is_found_by_uuid_in_the_nodes_slice_only() -> None:
    topology = degraded(dgx_h100(), 3, health=Health.FAILED, lost=True)
    slices = [h100_slice(), h100_slice(node="dgx-2", pool="dgx-2")]

    rules = desired_rules(
        sick_gpus(topology, OPTIONS), slice_devices(slices, NODE, DRIVER), NODE, OPTIONS
    )

    assert list(rules) == ["gputopo.dgx-1.gpu-3"]
    (rule,) = rules.values()
    assert (rule.pool, rule.device, rule.health, rule.effect) == (
        NODE,
        "gpu-3",
        DeviceHealthClass.FAILED,
        "NoSchedule",
    )


def test_a_sick_gpus_mig_slices_are_tainted_with_it() -> None:
    topology = degraded(dgx_h100(), 1, health=Health.FAILED, xid_events=(XidEvent(79),))
    parent = "GPU-00000001-h100"
    slices = [
        resource_slice(
            [
                gpu_device(0, "GPU-00000000-h100"),
                gpu_device(1, parent),
                mig_device(1, parent, "19-0-1"),
                mig_device(1, parent, "19-1-1"),
            ]
        )
    ]

    rules = desired_rules(
        sick_gpus(topology, OPTIONS), slice_devices(slices, NODE, DRIVER), NODE, OPTIONS
    )

    assert sorted(r.device for r in rules.values()) == [
        "gpu-1",
        "gpu-1-mig-19-0-1",
        "gpu-1-mig-19-1-1",
    ]
    assert {r.effect for r in rules.values()} == {"NoExecute"}


def test_a_gpu_nvml_does_not_see_is_found_by_pci_bus_id() -> None:
    pci = "0000:38:00.0"
    topology = replace(
        dgx_h100(),
        gpus=dgx_h100().gpus[:2],
        pci_only_gpus=(PciOnlyGpu(pci_bus_id=pci, reason="not in NVML"),),
    )
    slices = [resource_slice([gpu_device(2, "GPU-00000002-h100", pci.upper())])]

    rules = desired_rules(
        sick_gpus(topology, OPTIONS), slice_devices(slices, NODE, DRIVER), NODE, OPTIONS
    )

    assert [(r.device, r.health) for r in rules.values()] == [("gpu-2", DeviceHealthClass.FAILED)]


def test_only_the_newest_generation_of_a_pool_counts_and_other_drivers_never() -> None:
    old = resource_slice([gpu_device(0, "GPU-old")], generation=1)
    new = resource_slice([gpu_device(0, "GPU-00000000-h100")], generation=2)
    other = resource_slice([gpu_device(9, "GPU-00000000-h100")], driver="example.com/gpu")

    devices = slice_devices([old, new, other], NODE, DRIVER)

    assert [(d.name, d.uuid) for d in devices] == [("gpu-0", "GPU-00000000-h100")]


def test_a_node_without_slices_gets_no_rule() -> None:
    topology = degraded(dgx_h100(), 0, lost=True)
    assert desired_rules(sick_gpus(topology, OPTIONS), [], NODE, OPTIONS) == {}


def test_the_rule_selects_exactly_one_device_of_the_nodes_pool() -> None:
    (rule,) = desired("gpu-4", DeviceHealthClass.RESET_REQUIRED).values()
    body = rule_body(rule, NODE, DeviceTaintOptions(contract=Contract("x.example")))

    assert body["apiVersion"] == "resource.k8s.io/v1"
    assert body["kind"] == "DeviceTaintRule"
    assert body["spec"] == {
        "deviceSelector": {"driver": DRIVER, "pool": NODE, "device": "gpu-4"},
        "taint": {"key": "x.example/gpu-health", "value": "reset-required", "effect": "NoExecute"},
    }
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "gputopo-agent"}
    assert body["metadata"]["annotations"] == {"x.example/node": NODE}


def test_rule_names_are_dns_subdomains_even_for_very_long_node_names() -> None:
    long_node = ".".join(["n" * 63] * 4)[:253]
    name = rule_name(long_node, long_node, "gpu-7")
    assert len(name) <= 253 and name.startswith("gputopo.") and name.endswith(".gpu-7")
    assert rule_name("a", "pool-b", "gpu-0") == "gputopo.a.pool-b.gpu-0"


# -- the plan: at once when worse, after hysteresis when milder or gone --------------------------


def test_a_new_sick_device_is_created_at_once() -> None:
    actions = plan_device_taints([], desired("gpu-3", DeviceHealthClass.FAILED), NODE, OPTIONS)

    assert [(a.verb, a.name) for a in actions] == [("create", "gputopo.dgx-1.gpu-3")]
    assert actions[0].change is not None
    assert actions[0].change.describe() == "+ device-taint gputopo.dgx-1.gpu-3=failed:NoSchedule"


def test_nothing_changed_plans_nothing() -> None:
    rules = [existing("gputopo.dgx-1.gpu-3", "failed", "NoSchedule")]
    assert (
        plan_device_taints(rules, desired("gpu-3", DeviceHealthClass.FAILED), NODE, OPTIONS) == []
    )


def test_worse_is_written_at_once() -> None:
    rules = [existing("gputopo.dgx-1.gpu-3", "degraded", "None", pending=1)]

    (action,) = plan_device_taints(
        rules, desired("gpu-3", DeviceHealthClass.RESET_REQUIRED), NODE, OPTIONS
    )

    assert action.verb == "patch"
    assert action.body is not None
    assert action.body["spec"]["taint"]["effect"] == "NoExecute"
    assert action.body["metadata"] == {
        "resourceVersion": "7",
        "annotations": {"gputopo.io/pending-removal": None},
    }


def test_recovery_removes_the_rule_only_after_removal_after_successful_discoveries() -> None:
    name = "gputopo.dgx-1.gpu-3"
    rules = [existing(name, "failed", "NoSchedule")]
    seen: list[tuple[str, Any]] = []
    for _ in range(3):
        (action,) = plan_device_taints(rules, {}, NODE, OPTIONS)
        seen.append((action.verb, action.body))
        if action.verb == "patch":
            assert action.body is not None
            count = int(action.body["metadata"]["annotations"]["gputopo.io/pending-removal"])
            rules = [existing(name, "failed", "NoSchedule", pending=count)]

    assert [verb for verb, _ in seen] == ["patch", "patch", "delete"]


def test_a_partial_discovery_counts_nothing_and_removes_nothing() -> None:
    rules = [existing("gputopo.dgx-1.gpu-3", "failed", "NoSchedule", pending=2)]
    assert plan_device_taints(rules, {}, NODE, OPTIONS, complete=False) == []


def test_milder_waits_like_removal_and_worse_again_resets_the_count() -> None:
    name = "gputopo.dgx-1.gpu-3"
    rules = [existing(name, "reset-required", "NoExecute", pending=0)]
    milder = desired("gpu-3", DeviceHealthClass.DEGRADED)

    (first,) = plan_device_taints(rules, milder, NODE, OPTIONS)
    assert first.change is None  # only the count
    assert first.body == {
        "metadata": {"resourceVersion": "7", "annotations": {"gputopo.io/pending-removal": "1"}}
    }
    (last,) = plan_device_taints(
        [existing(name, "reset-required", "NoExecute", pending=2)], milder, NODE, OPTIONS
    )
    assert last.body is not None and last.body["spec"]["taint"]["effect"] == "None"
    (reset,) = plan_device_taints(
        [existing(name, "reset-required", "NoExecute", pending=2)],
        desired("gpu-3", DeviceHealthClass.RESET_REQUIRED),
        NODE,
        OPTIONS,
    )
    assert reset.body == {
        "metadata": {"resourceVersion": "7", "annotations": {"gputopo.io/pending-removal": None}}
    }


def test_a_changed_effect_flag_is_written_at_once() -> None:
    rules = [existing("gputopo.dgx-1.gpu-3", "failed", "NoSchedule")]
    options = DeviceTaintOptions(failed_effect="NoExecute")
    name = rule_name(NODE, NODE, "gpu-3")
    wanted = {name: DesiredRule(name, NODE, "gpu-3", DeviceHealthClass.FAILED, "NoExecute")}

    (action,) = plan_device_taints(rules, wanted, NODE, options)

    assert action.change is not None
    assert action.change.describe() == (
        "~ device-taint gputopo.dgx-1.gpu-3: failed:NoSchedule -> failed:NoExecute"
    )


# -- when the node health taint is redundant -----------------------------------------------------


def test_device_taints_cover_the_node_taint_only_where_every_failed_gpu_has_a_device() -> None:
    failed = degraded(dgx_h100(), 3, lost=True)
    devices = slice_devices([h100_slice()], NODE, DRIVER)
    without_gpu_3 = [d for d in devices if d.name != "gpu-3"]

    assert covers_node_health(failed, devices, OPTIONS)
    assert not covers_node_health(failed, without_gpu_3, OPTIONS)
    assert not covers_node_health(failed, [], OPTIONS)  # no DRA on this node: node taint


def test_a_failed_gpu_whose_device_taint_has_no_effect_keeps_the_node_taint() -> None:
    failed = degraded(dgx_h100(), 3, health=Health.FAILED)
    devices = slice_devices([h100_slice()], NODE, DRIVER)
    assert not covers_node_health(failed, devices, DeviceTaintOptions(failed_effect="None"))


@pytest.mark.parametrize("partitionable", [False, True])
def test_on_the_mig_dgx_a_sick_gpu_taints_all_its_devices_from_the_driver_layout(
    partitionable: bool, tmp_path: Any
) -> None:
    """dgx-a100-mig as NVIDIA's driver publishes it (mocks/resourceslices.py), static MIG and
    DynamicMIG's partitionable layout: the GPU's full device and each of its MIG devices."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.resourceslices import resource_slices
    from gputopo.mocks.sysfs import build_sysfs

    profile = load_profile("dgx-a100-mig")
    build_sysfs(profile, tmp_path)
    with Discoverer(make_fake_pynvml(profile), tmp_path, NODE) as discoverer:
        topology = discoverer.discover()
    sick = degraded(topology, 0, health=Health.FAILED, lost=True)
    slices = resource_slices(profile, NODE, partitionable=partitionable)
    devices = slice_devices(slices, NODE, DRIVER)

    rules = desired_rules(sick_gpus(sick, OPTIONS), devices, NODE, OPTIONS)

    named = {d.name for d in devices if d.name == "gpu-0" or d.name.startswith("gpu-0-")}
    assert named and {r.device for r in rules.values()} == named
    assert {r.effect for r in rules.values()} == {"NoSchedule"}
