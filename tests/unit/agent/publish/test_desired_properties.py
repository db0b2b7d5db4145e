"""Whatever strings the hardware reports, everything the agent would publish is valid."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.agent.publish.desired import PublishOptions, desired_state
from gputopo.agent.topology import DriverInfo, FabricInfo, NodeInfo
from gputopo.core.validate import ValidationGate, is_label_value, is_qualified_name
from tests.unit.agent.machines import a100_mig, dgx_h100, gb200_fabric, one_g

text = st.text(max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gpu_name=text,
    product=st.one_of(st.none(), text),
    driver=st.one_of(st.none(), text),
    cuda=st.one_of(st.none(), text),
    pci_class=st.one_of(st.none(), text),
    strategy=st.sampled_from(["none", "single", "mixed"]),
)
def test_arbitrary_hardware_strings_publish_only_valid_labels(
    gpu_name: str,
    product: str | None,
    driver: str | None,
    cuda: str | None,
    pci_class: str | None,
    strategy: str,
) -> None:
    topology = dgx_h100()
    topology = replace(
        topology,
        node=NodeInfo(hostname="n", product_name=product),
        driver=DriverInfo(driver_version=driver, cuda_driver_version=cuda),
        gpus=tuple(replace(g, name=gpu_name, pci_class=pci_class) for g in topology.gpus),
    )
    assert_all_valid(topology, strategy)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=text, gpu_name=text, strategy=st.sampled_from(["single", "mixed"]))
def test_arbitrary_mig_profile_names_publish_only_valid_labels(
    profile: str, gpu_name: str, strategy: str
) -> None:
    instance = replace(one_g(1, 0), profile=profile)
    instance = replace(
        instance, compute_instances=(replace(instance.compute_instances[0], profile=profile),)
    )
    topology = a100_mig({0: (instance,)})
    topology = replace(topology, gpus=tuple(replace(g, name=gpu_name) for g in topology.gpus))
    assert_all_valid(topology, strategy)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=text, clique=st.integers(min_value=-(2**63), max_value=2**63))
def test_arbitrary_fabric_ids_publish_only_valid_labels(cluster: str, clique: int) -> None:
    topology = gb200_fabric()
    fabric = FabricInfo(cluster_uuid=cluster, clique_id=clique, state="completed")
    topology = replace(topology, gpus=tuple(replace(g, fabric=fabric) for g in topology.gpus))
    assert_all_valid(topology, "none")


def assert_all_valid(topology, strategy: str) -> None:  # type: ignore[no-untyped-def]
    desired = desired_state(topology, PublishOptions(mig_strategy=strategy), ValidationGate())
    for key, value in desired.labels.items():
        assert is_qualified_name(key), key
        assert is_label_value(value), (key, value)
    for taint in desired.taints:
        assert is_qualified_name(taint.key) and is_label_value(taint.value)
    for key in desired.annotations:
        assert is_qualified_name(key)
