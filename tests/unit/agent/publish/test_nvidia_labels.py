"""Who holds an nvidia.com/* key, read from managedFields, and when gputopo yields it."""

from __future__ import annotations

import pytest

from gputopo.agent.publish.nvidia_labels import (
    DEFAULT_NVIDIA_LABEL_MODE,
    LabelConflict,
    check_mode,
    label_holders,
    yielded_keys,
)

PRODUCT = "nvidia.com/gpu.product"
COUNT = "nvidia.com/gpu.count"
ME = "gputopo-agent"


def entry(manager: str, *labels: str) -> dict[str, object]:
    return {
        "manager": manager,
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, **{f"f:{k}": {} for k in labels}}}},
    }


def test_holders_are_every_manager_listing_the_label() -> None:
    fields = [
        entry(ME, PRODUCT, COUNT),
        entry("nfd-master", PRODUCT),
        {"manager": "kubelet", "fieldsV1": {"f:status": {}}},
        "garbage",
        {"manager": 7, "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}}}}},
    ]
    assert label_holders(fields) == {
        PRODUCT: frozenset({ME, "nfd-master"}),
        COUNT: frozenset({ME}),
    }
    assert label_holders(None) == {}


def test_default_mode_defers_to_gpu_feature_discovery() -> None:
    assert DEFAULT_NVIDIA_LABEL_MODE == "defer"


def test_an_unknown_mode_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"--nvidia-labels 'mine': expected one of own, defer"):
        check_mode("mine")


PRESENT = {PRODUCT: "X", COUNT: "8", "gputopo.io/gpu.count": "8"}


@pytest.mark.parametrize("mode", ["own", "defer", "off"])
def test_a_key_another_writer_took_from_gputopo_is_yielded_in_every_mode(mode: str) -> None:
    holders = {PRODUCT: frozenset({"nfd-master"}), COUNT: frozenset({ME})}
    corrected = frozenset({PRODUCT})  # own: after its one correction
    assert yielded_keys(frozenset({PRODUCT, COUNT}), holders, PRESENT, mode, ME, corrected) == {
        PRODUCT
    }


def test_own_corrects_a_taken_key_once_before_it_yields() -> None:
    holders = {PRODUCT: frozenset({"kubectl-label"})}
    assert yielded_keys(frozenset({PRODUCT}), holders, PRESENT, "own", ME) == frozenset()


def test_a_key_held_together_is_gputopos_only_in_own() -> None:
    holders = {PRODUCT: frozenset({ME, "gfd"})}
    assert yielded_keys(frozenset({PRODUCT}), holders, PRESENT, "own", ME) == frozenset()
    assert yielded_keys(frozenset({PRODUCT}), holders, PRESENT, "defer", ME) == {PRODUCT}
    assert yielded_keys(frozenset({PRODUCT}), holders, PRESENT, "off", ME) == {PRODUCT}


def test_own_prefix_and_absent_keys_are_never_yielded() -> None:
    holders = {"gputopo.io/gpu.count": frozenset({"someone"}), COUNT: frozenset({"gfd"})}
    claimed = frozenset({"gputopo.io/gpu.count", "nvidia.com/gpu.family"})
    assert yielded_keys(claimed, holders, PRESENT, "defer", ME) == frozenset()


def test_a_conflict_says_who_holds_what() -> None:
    conflict = LabelConflict(PRODUCT, "NVIDIA-H100", "NVIDIA-H100-GFD", ("nfd-master",))
    assert conflict.describe() == (
        "nvidia.com/gpu.product=NVIDIA-H100-GFD (held by nfd-master; gputopo computes NVIDIA-H100)"
    )
    assert "another writer" in LabelConflict(PRODUCT, "a", "b", ()).describe()
