"""Profile loading: built-ins, inheritance, defaults, and every error path names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gputopo.core.grammar import format_cpulist, parse_cpulist
from gputopo.mocks.profile import (
    NVLINK_VERSIONS,
    ProfileError,
    builtin_profile_names,
    bus_id_or_none,
    load_profile,
)

BUILTINS = (
    "a100-pcie-nvlink-pairs",
    "a100-pcie-pair-missing-bridge",
    "cpu-only",
    "dgx-a100-mig",
    "dgx-h100",
    "dgx-h100-degraded",
    "gb200-nvl4",
    "hgx-h200-mig",
    "l4-pcie",
    "l4-single-socket",
    "rtx4090-workstation",
    "supermicro-hgx-h100",
)

MINIMAL_GPU = {
    "bus_id": "0000:18:00.0",
    "name": "NVIDIA L4",
    "memory_mib": 23034,
    "compute_capability": "8.9",
    "architecture": "ada",
    "pci_device_id": "0x27b8",
}


def write(tmp_path: Path, document: object, name: str = "machine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def load_error(tmp_path: Path, document: object) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(write(tmp_path, document))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "machine.yaml") in message
    return message


def test_builtin_profiles_are_exactly_the_documented_ones() -> None:
    assert builtin_profile_names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.source == name


def test_unknown_profile_name_lists_builtins() -> None:
    with pytest.raises(
        ProfileError, match=r"unknown profile 'dgx-h200'.*dgx-h100, dgx-h100-degraded"
    ):
        load_profile("dgx-h200")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"missing\.yaml: cannot read profile: No such file"):
        load_profile(tmp_path / "missing.yaml")


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "node: {hostname: x\ngpus: [\n")
    assert "malformed YAML at line" in message


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    assert "must be a YAML mapping, got list" in load_error(tmp_path, "- 1\n- 2\n")


def test_unknown_field_is_rejected_with_allowed_list(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"gpus": [{**MINIMAL_GPU, "memroy_mib": 3}]})
    assert "gpus[0].memroy_mib: unknown field (allowed:" in message


@pytest.mark.parametrize(
    ("gpu_changes", "expected"),
    [
        ({"memory_mib": "lots"}, "gpus[0].memory_mib: expected an integer, got 'lots'"),
        ({"memory_mib": True}, "gpus[0].memory_mib: expected an integer, got True"),
        ({"bus_id": "18:00"}, "gpus[0].bus_id: expected a PCI bus id"),
        ({"compute_capability": 9}, "gpus[0].compute_capability: expected MAJOR.MINOR"),
        ({"architecture": "lovelace"}, "gpus[0].architecture: 'lovelace' is not one of"),
        ({"lost": "yes"}, "gpus[0].lost: expected true or false"),
        ({"numa_node": 3}, "gpus[0].numa_node: NUMA node 3 is not declared under numa"),
        ({"pcie": {"gen": 5, "gen_max": 4}}, "gpus[0].pcie.gen_max: expected an integer >= 5"),
        ({"metrics": {"utilization_gpu": [10, 140]}}, "utilisation is a percentage 0..100"),
        (
            {"errors": {"nvmlDeviceGetFoo": "NOT_SUPPORTED"}},
            "errors.nvmlDeviceGetFoo: not a function",
        ),
        ({"errors": {"nvmlDeviceGetName": "BROKEN"}}, "'BROKEN' is not an NVML error name"),
        ({"fabric": {"cluster_uuid": "nope"}}, "gpus[0].fabric.cluster_uuid: expected a UUID"),
        ({"mig": {"capable": False, "mode": "enabled"}}, "not MIG capable cannot have MIG enabled"),
        (
            {"health": {"ecc": {"volatile_corrected": -1}}},
            "gpus[0].health.ecc.volatile_corrected: expected an integer >= 0, got -1",
        ),
        (
            {"health": {"ecc": {"volatile": 1}}},
            "gpus[0].health.ecc.volatile: unknown field (allowed: aggregate_corrected,",
        ),
        (
            {"health": {"remapped_rows": {"pending": "yes"}}},
            "gpus[0].health.remapped_rows.pending: expected true or false, got 'yes'",
        ),
        (
            {"health": {"retired_pages": {"single_bit": [4096, "x"]}}},
            "gpus[0].health.retired_pages.single_bit[1]: expected an integer, got 'x'",
        ),
    ],
)
def test_wrong_gpu_field_is_reported(
    tmp_path: Path, gpu_changes: dict[str, object], expected: str
) -> None:
    assert expected in load_error(tmp_path, {"gpus": [{**MINIMAL_GPU, **gpu_changes}]})


def test_health_sections_decode_from_their_dataclasses(tmp_path: Path) -> None:
    health = {
        "ecc": {"aggregate_uncorrected": 2},
        "retired_pages": {"single_bit": [4096], "pending": True},
        "remapped_rows": None,
    }
    gpu = load_profile(write(tmp_path, {"gpus": [{**MINIMAL_GPU, "health": health}]})).gpus[0]
    assert gpu.health.ecc is not None and gpu.health.ecc.aggregate_uncorrected == 2
    assert gpu.health.retired_pages is not None
    assert gpu.health.retired_pages.single_bit == (4096,) and gpu.health.retired_pages.pending
    assert gpu.health.remapped_rows is not None and not gpu.health.remapped_rows.pending


def test_required_gpu_field_missing(tmp_path: Path) -> None:
    gpu = {k: v for k, v in MINIMAL_GPU.items() if k != "name"}
    assert "gpus[0].name: required field is missing" in load_error(tmp_path, {"gpus": [gpu]})


def test_nvlink_peer_that_does_not_exist(tmp_path: Path) -> None:
    gpu = {**MINIMAL_GPU, "nvlink": {"links": [{"peer": "0000:99:00.0"}]}}
    message = load_error(tmp_path, {"gpus": [gpu]})
    assert (
        "gpus[0].nvlink.links[0].peer: NVLink peer 0000:99:00.0 is neither a GPU nor an NVSwitch"
        in message
    )


def test_nvlink_declared_from_one_end_only(tmp_path: Path) -> None:
    first = {**MINIMAL_GPU, "nvlink": {"links": [{"peer": "0000:19:00.0", "count": 2}]}}
    second = {**MINIMAL_GPU, "bus_id": "0000:19:00.0"}
    message = load_error(tmp_path, {"gpus": [first, second]})
    assert "2 links to 0000:19:00.0 but that GPU declares 0 back" in message


def test_nvswitch_generator_needs_nvswitches(tmp_path: Path) -> None:
    gpu = {**MINIMAL_GPU, "nvlink": {"nvswitch": True, "links": 18}}
    assert "nvswitch: true needs at least one entry under nvswitches" in load_error(
        tmp_path, {"gpus": [gpu]}
    )


def test_bad_nvlink_version(tmp_path: Path) -> None:
    gpu = {**MINIMAL_GPU, "nvlink": {"version": 9, "links": []}}
    assert "gpus[0].nvlink.version: NVLink version 9 is not one of" in load_error(
        tmp_path, {"gpus": [gpu]}
    )


A100 = {
    **MINIMAL_GPU,
    "name": "NVIDIA A100-SXM4-80GB",
    "architecture": "ampere",
    "compute_capability": "8.0",
}


@pytest.mark.parametrize(
    ("mig", "expected"),
    [
        ({"mode": "enabled", "instances": ["5g.50gb"]}, "'5g.50gb' is not offered by a100-80gb"),
        (
            {"mode": "enabled", "instances": [{"profile": "3g.40gb", "placement": 2}]},
            "can start at [0, 4], not 2",
        ),
        (
            {"mode": "enabled", "instances": ["4g.40gb", {"profile": "3g.40gb", "placement": 0}]},
            "overlap another GPU instance",
        ),
        (
            {"mode": "enabled", "instances": ["7g.80gb", "1g.10gb"]},
            "no free placement left for 1g.10gb",
        ),
        ({"mode": "disabled", "instances": ["1g.10gb"]}, "GPU instances need mode: enabled"),
        ({"mode": "on"}, "mig.mode: expected enabled or disabled"),
        (
            {
                "mode": "enabled",
                "instances": [{"profile": "2g.20gb", "compute_instances": ["3c.2g.20gb"]}],
            },
            "'3c.2g.20gb' is not a compute instance of 2g.20gb",
        ),
    ],
)
def test_invalid_mig_layout_is_reported(
    tmp_path: Path, mig: dict[str, object], expected: str
) -> None:
    assert expected in load_error(tmp_path, {"gpus": [{**A100, "mig": mig}]})


def test_mig_capable_gpu_without_a_table(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"gpus": [{**MINIMAL_GPU, "mig": {"capable": True}}]})
    assert "gpus[0].mig.table: None is not a MIG table" in message


def test_mig_automatic_placement_and_default_compute_instance(tmp_path: Path) -> None:
    gpu = {**A100, "mig": {"mode": "enabled", "instances": ["3g.40gb", "2g.20gb", "1g.10gb"]}}
    profile = load_profile(write(tmp_path, {"gpus": [gpu]}))
    instances = profile.gpus[0].mig.instances
    assert [(gi.id, gi.profile, gi.placement_start) for gi in instances] == [
        (1, "3g.40gb", 0),
        (2, "2g.20gb", 4),
        (3, "1g.10gb", 6),
    ]
    assert [len(gi.compute_instances) for gi in instances] == [1, 1, 1]


def test_numa_distances_must_be_square_with_ten_on_diagonal(tmp_path: Path) -> None:
    numa = [{"id": 0, "cpus": "0-3", "distances": [10, 21]}]
    assert "numa[0].distances: expected 1 distances" in load_error(tmp_path, {"numa": numa})


def test_cpu_on_two_numa_nodes(tmp_path: Path) -> None:
    numa = [{"id": 0, "cpus": "0-3"}, {"id": 1, "cpus": "3-7"}]
    assert "numa[1].cpus: CPU listed on two NUMA nodes" in load_error(tmp_path, {"numa": numa})


def test_malformed_cpulist(tmp_path: Path) -> None:
    assert "numa[0].cpus: expected a cpulist" in load_error(tmp_path, {"numa": [{"cpus": "0-a"}]})


def test_duplicate_bus_id(tmp_path: Path) -> None:
    assert "bus id 0000:18:00.0 is used by two devices" in load_error(
        tmp_path, {"gpus": [MINIMAL_GPU, MINIMAL_GPU]}
    )


def test_devices_under_one_host_bridge_must_share_numa(tmp_path: Path) -> None:
    document = {
        "numa": [{"id": 0, "cpus": "0-3"}, {"id": 1, "cpus": "4-7"}],
        "gpus": [
            {**MINIMAL_GPU, "parent": "0000:15:01.0", "numa_node": 0},
            {**MINIMAL_GPU, "bus_id": "0000:19:00.0", "parent": "0000:15:02.0", "numa_node": 1},
        ],
    }
    assert "under the same host bridge pci0000:15" in load_error(tmp_path, document)


def test_unknown_switch_parent(tmp_path: Path) -> None:
    gpu = {**MINIMAL_GPU, "parent": "plx9"}
    assert "'plx9' is neither a switch name nor a root-port bus id" in load_error(
        tmp_path, {"gpus": [gpu]}
    )


def test_unsupported_schema(tmp_path: Path) -> None:
    assert "schema: profile schema 2 is not supported" in load_error(tmp_path, {"schema": 2})


def test_bad_nvml_load_error(tmp_path: Path) -> None:
    assert "nvml.load_error: 'MISSING' is not an NVML error name" in load_error(
        tmp_path, {"nvml": {"load_error": "MISSING"}}
    )


def test_base_inheritance_merges_gpus_by_bus_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"base": "dgx-h100", "gpus": {"1b:00.0": {"lost": True}}, "node": {"hostname": "x"}},
    )
    profile = load_profile(path)
    base = load_profile("dgx-h100")
    assert profile.node.hostname == "x"
    assert profile.node.product_name == "DGXH100"
    assert profile.gpus[0].lost
    assert not any(gpu.lost for gpu in profile.gpus[1:])
    assert [g.uuid for g in profile.gpus[1:]] != [
        g.uuid for g in base.gpus[1:]
    ]  # uuid follows hostname


def test_base_relative_path_and_null_deletes(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"node": {"hostname": "a", "product_name": "P"}, "numa": [{"cpus": "0-1"}]},
        "parent.yaml",
    )
    profile = load_profile(write(tmp_path, {"base": "parent.yaml", "node": {"product_name": None}}))
    assert profile.node.hostname == "a"
    assert profile.node.product_name is None


def test_base_override_for_unknown_gpu(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"base": "dgx-h100", "gpus": {"0000:77:00.0": {"lost": True}}})
    assert "gpus.0000:77:00.0: no GPU with that bus id in the base profile" in message


def test_base_cycle(tmp_path: Path) -> None:
    write(tmp_path, {"base": "machine.yaml"}, "other.yaml")
    assert "inheritance cycle" in load_error(tmp_path, {"base": "other.yaml"})


def test_defaults_for_a_minimal_gpu(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, {"gpus": [MINIMAL_GPU]}))
    gpu = profile.gpus[0]
    assert profile.node.hostname == "machine"
    assert gpu.uuid.startswith("GPU-")
    assert gpu.numa_node == 0
    assert gpu.nvlinks is None
    assert not gpu.mig.capable
    assert gpu.health.ecc is not None and gpu.health.remapped_rows is not None
    assert gpu.health.retired_pages is None  # Ada: row remapping, no page retirement
    assert profile.pci_path(gpu.bus_id) == ("0000:17:01.0", "0000:18:00.0")
    assert profile.host_bridge(gpu.bus_id) == "pci0000:17"


def test_transient_error_spec(tmp_path: Path) -> None:
    gpu = {**MINIMAL_GPU, "errors": {"nvmlDeviceGetUUID": {"error": "TIMEOUT", "times": 2}}}
    injected = load_profile(write(tmp_path, {"gpus": [gpu]})).gpus[0].errors["nvmlDeviceGetUUID"]
    assert (injected.error, injected.times) == ("TIMEOUT", 2)


def test_bus_id_normalisation() -> None:
    assert bus_id_or_none("00000000:1B:00.0") == "0000:1b:00.0"
    assert bus_id_or_none("1b:00.0") == "0000:1b:00.0"
    assert bus_id_or_none("1b:00") is None


def test_cpulist_round_trip() -> None:
    assert parse_cpulist("0-2,5,7-8") == (0, 1, 2, 5, 7, 8)
    assert format_cpulist((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
    assert parse_cpulist("") == ()


def test_nvlink_versions_are_nvml_enum_values() -> None:
    import pynvml

    assert NVLINK_VERSIONS["4"] == pynvml.NVML_NVLINK_VERSION_4_0
    assert NVLINK_VERSIONS["3.1"] == pynvml.NVML_NVLINK_VERSION_3_1
    assert NVLINK_VERSIONS["5"] == pynvml.NVML_NVLINK_VERSION_5_0
