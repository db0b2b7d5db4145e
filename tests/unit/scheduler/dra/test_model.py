"""resource.k8s.io/v1 objects decoded once, bad input named by object and field."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.dra.model import (
    parse_claim_template,
    parse_device_class,
    parse_device_taint_rule,
    parse_resource_claim,
    parse_resource_slice,
)
from gputopo.scheduler.errors import SchedulerInputError
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly


def test_partitionable_slices_decode_counters_and_consumption() -> None:
    first, second, *_ = resourceslices.resource_slices(
        load_profile("dgx-h100"), "n", partitionable=True
    )
    counters = parse_resource_slice(first)
    assert counters.devices == ()
    assert counters.counters["gpu-0-counter-set"]["memory-slice-7"] == 1
    devices = parse_resource_slice(second).devices
    full = devices[0]
    assert full.name == "gpu-0"
    assert full.consumes["gpu-0-counter-set"]["multiprocessors"] == 132
    assert full.attribute("uuid") is not None
    assert full.attributes["resource.kubernetes.io/pciBusID"].kind == "string"


def test_claim_with_first_available_names_sub_requests() -> None:
    obj = claim_object(
        "c",
        [
            {
                "name": "gpu",
                "firstAvailable": [
                    {"name": "big", "deviceClassName": "gpu.nvidia.com", "count": 2},
                    {"name": "small", "deviceClassName": "mig.nvidia.com"},
                ],
            }
        ],
    )
    (request,) = parse_resource_claim(obj).requests
    assert [s.name for s in request.alternatives] == ["gpu/big", "gpu/small"]
    assert [s.count for s in request.alternatives] == [2, 1]


def test_allocated_claim_reads_results_node_and_consumers() -> None:
    obj = claim_object("c", [exactly("g")])
    obj["status"] = {
        "allocation": {
            "devices": {
                "results": [{"request": "g", "driver": "d", "pool": "n1", "device": "gpu-0"}]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
                ]
            },
        },
        "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}],
    }
    claim = parse_resource_claim(obj)
    assert claim.allocation is not None
    assert claim.allocation[0].device_key == ("d", "n1", "gpu-0")
    assert claim.allocated_node == "n1"
    assert claim.reserved_for[0].uid == "u1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["spec"]["devices"]["requests"][0].pop("exactly"), "requests[0]: expected"),
        (
            lambda o: o["spec"]["devices"]["requests"][0]["exactly"].update(count=0),
            "requests[0].exactly.count: must be between 1 and 128",
        ),
        (
            lambda o: o["spec"]["devices"]["requests"][0]["exactly"].update(allocationMode="Some"),
            "unknown allocation mode 'Some'",
        ),
        (lambda o: o["spec"]["devices"].update(requests="x"), "expected a list"),
    ],
)
def test_bad_claims_name_object_and_field(mutate: Any, message: str) -> None:
    obj = claim_object("bad", [exactly("g")])
    mutate(obj)
    with pytest.raises(SchedulerInputError) as caught:
        parse_resource_claim(obj)
    assert "ResourceClaim default/bad" in str(caught.value)
    assert message in str(caught.value)


def test_bad_attribute_is_named() -> None:
    (one,) = resourceslices.resource_slices(load_profile("l4-pcie"), "n")
    one["spec"]["devices"][0]["attributes"]["uuid"] = {"string": 3}
    with pytest.raises(SchedulerInputError, match=r"devices\[0\]\.attributes\[uuid\]\.string"):
        parse_resource_slice(one)


def test_device_classes_taint_rules_and_templates() -> None:
    gpu, _ = map(parse_device_class, resourceslices.device_classes())
    assert gpu.extended_resource_name == "nvidia.com/gpu"
    rule = parse_device_taint_rule(
        {
            "metadata": {"name": "r"},
            "spec": {
                "deviceSelector": {"driver": "gpu.nvidia.com", "device": "gpu-1"},
                "taint": {"key": "k", "effect": "NoExecute"},
            },
        }
    )
    assert (rule.driver, rule.pool, rule.device) == ("gpu.nvidia.com", None, "gpu-1")
    template = parse_claim_template(
        {
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"spec": {"devices": {"requests": [exactly("g")]}}},
        }
    )
    assert template.spec["devices"]["requests"][0]["name"] == "g"
    with pytest.raises(SchedulerInputError, match="ResourceClaimTemplate ns/t2"):
        parse_claim_template(
            {"metadata": {"name": "t2", "namespace": "ns"}, "spec": {"spec": {"devices": 1}}}
        )
