"""Hostile machine profiles (issue 17): each ends in one ProfileError line naming the file, in
bounded time; the fake sysfs tree never writes outside its root (issue 16, item 7)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.core.grammar import MAX_CPU_ID, GrammarError, parse_cpulist
from gputopo.mocks.profile import (
    MAX_BASE_DEPTH,
    MAX_LIST_LENGTH,
    MAX_PROFILE_BYTES,
    ProfileError,
    load_profile,
)
from gputopo.mocks.spec import LIMITS, NicSpec, unsafe_name_reason
from gputopo.mocks.sysfs import SysfsBuildError, build_sysfs

PROFILES = Path(__file__).parents[3] / "mocks" / "profiles"
BASE = (PROFILES / "l4-pcie.yaml").read_text()
GPU = (
    '{{bus_id: "0000:{bus:02x}:{dev:02x}.0", name: NVIDIA L4, memory_mib: 1, '
    'compute_capability: "8.9", architecture: ada, pci_device_id: 0x27b8, numa_node: 0}}'
)


def with_nic(nic: str) -> str:
    return BASE + f"nics:\n  - {nic}\n"


def many_gpus(count: int) -> str:
    lines = [f"  - {GPU.format(bus=2 + 2 * (n % 120), dev=n // 120)}" for n in range(count)]
    return "gpus:\n" + "\n".join(lines) + "\n"


def alias_bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(9):
        name, previous = chr(98 + level), chr(97 + level)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_TEXT: dict[str, tuple[str | bytes, str]] = {
    "latin-1": (b"node: {hostname: caf\xe9}\n", "not UTF-8 text"),
    "utf-16": (BASE.encode("utf-16"), "not UTF-8 text"),
    "deep-flow": ("node: " + "[" * 5000 + "]" * 5000 + "\n", "malformed YAML"),
    "deep-mapping": ("node: " + "{a: " * 200 + "1" + "}" * 200 + "\n", "nested deeper than"),
    "alias-bomb": (alias_bomb(), "values once aliases are expanded"),
    "cpulist-range": (
        BASE.replace('cpus: "0-31,64-95"', 'cpus: "0-99999999999"'),
        "numa[0].cpus: expected a cpulist",
    ),
    "5000-digit-int": ("driver: {cuda_version: " + "9" * 5000 + "}\n", "more than 4300 digits"),
    "5000-digit-hex": (
        'driver: {cuda_version: "0x' + "f" * 5000 + '"}\n',
        "driver.cuda_version: integer",
    ),
    "int-above-int64": ("driver: {cuda_version: " + "9" * 30 + "}\n", "int64"),
    "nan-metric": (BASE.replace("power_w: 16.3", "power_w: .nan"), "power_w: number nan"),
    "inf-metric": (BASE.replace("power_w: 16.3", "power_w: .inf"), "power_w: number inf"),
    "huge-compute-capability": (
        BASE.replace('compute_capability: "8.9"', 'compute_capability: "' + "9" * 5000 + '.0"'),
        "compute_capability: expected MAJOR.MINOR",
    ),
    "nic-at-a-gpu-bus-id": (
        with_nic('{name: mlx5_0, bus_id: "0000:38:00.0", numa_node: 0}'),
        "bus id 0000:38:00.0 is used by two devices",
    ),
    "nic-at-a-root-port": (
        with_nic('{name: mlx5_0, bus_id: "0000:37:01.0", numa_node: 0}'),
        "is both a device and the root port",
    ),
    "nic-below-a-gpu": (
        with_nic('{name: mlx5_0, bus_id: "0000:50:00.0", parent: "0000:38:00.0", numa_node: 0}'),
        "is a device of this profile",
    ),
    "netdev-escapes": (
        with_nic('{name: mlx5_0, bus_id: "0000:50:00.0", numa_node: 0, netdevs: [../../x]}'),
        "nics[0].netdevs[0]: '../../x' is not a safe name",
    ),
    "nic-name-with-slash": (
        with_nic('{name: "a/b", bus_id: "0000:50:00.0", numa_node: 0}'),
        "nics[0].name: 'a/b' is not a safe name",
    ),
    "driver-dotdot": (
        BASE.replace(
            "  pcie: {gen: 4, width: 16}", "  pcie: {gen: 4, width: 16}\n  sysfs_driver: .."
        ),
        "sysfs_driver: '..' is not a safe name",
    ),
    "driver-nul": (
        BASE.replace(
            "  pcie: {gen: 4, width: 16}", '  pcie: {gen: 4, width: 16}\n  sysfs_driver: "a\\0b"'
        ),
        "is not a safe name",
    ),
    "nvlink-count-int64": (
        BASE.replace(
            "  pcie: {gen: 4, width: 16}",
            "  pcie: {gen: 4, width: 16}\n  nvlink: {nvswitch: true, links: 9223372036854775807}",
        )
        + 'nvswitches:\n  - {bus_id: "0000:60:00.0", numa_node: 0}\n',
        "nvlink.links: expected an integer <= 36",
    ),
    "many-gpus": (many_gpus(LIMITS["gpus"] + 1), "a profile may declare at most 64"),
    "mig-table-is-a-list": (
        BASE.replace(
            "  pcie: {gen: 4, width: 16}", "  pcie: {gen: 4, width: 16}\n  mig: {table: [1]}"
        ),
        "mig.table",
    ),
    "fabric-state-is-a-map": (
        BASE.replace(
            "  pcie: {gen: 4, width: 16}", "  pcie: {gen: 4, width: 16}\n  fabric: {state: {a: 1}}"
        ),
        "fabric.state",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TEXT))
def test_hostile_profile_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    text, expected = HOSTILE_TEXT[case]
    path = tmp_path / "machine.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.monotonic()
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_dev_zero_is_refused_after_the_size_limit() -> None:
    with pytest.raises(ProfileError, match=rf"/dev/zero: larger than {MAX_PROFILE_BYTES} bytes"):
        load_profile("/dev/zero")


def test_a_fifo_profile_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "machine.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ProfileError, match="cannot read profile: a pipe or socket, not a file"):
        load_profile(fifo)
    assert time.monotonic() - started < 5


def test_base_dev_zero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "machine.yaml"
    path.write_text("base: /dev/zero\n")
    with pytest.raises(ProfileError, match=r"/dev/zero: larger than"):
        load_profile(path)


def test_a_directory_is_not_a_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"cannot read profile"):
        load_profile(str(tmp_path) + "/")


def test_a_100_mb_profile_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)  # sparse: costs no disk
    started = time.monotonic()
    with pytest.raises(ProfileError, match=rf"larger than {MAX_PROFILE_BYTES} bytes, the limit"):
        load_profile(path)
    assert time.monotonic() - started < 5


def test_a_1000_deep_base_chain_stops_at_the_limit(tmp_path: Path) -> None:
    for level in range(1000):
        (tmp_path / f"p{level}.yaml").write_text(f"base: p{level + 1}.yaml\n")
    (tmp_path / "p1000.yaml").write_text(BASE)
    with pytest.raises(ProfileError, match=rf"base: chain longer than {MAX_BASE_DEPTH}"):
        load_profile(tmp_path / "p0.yaml")


def test_a_short_base_chain_still_loads(tmp_path: Path) -> None:
    (tmp_path / "p0.yaml").write_text("base: p1.yaml\ndescription: child\n")
    (tmp_path / "p1.yaml").write_text(BASE)
    assert len(load_profile(tmp_path / "p0.yaml").gpus) == 4


def test_a_list_longer_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "machine.yaml"
    series = ", ".join(["40"] * (MAX_LIST_LENGTH + 1))
    path.write_text(BASE.replace("temperature_c: 40", f"temperature_c: [{series}]"))
    with pytest.raises(ProfileError, match=rf"temperature_c: {MAX_LIST_LENGTH + 1} entries"):
        load_profile(path)


def test_the_gpu_cap_itself_loads(tmp_path: Path) -> None:
    path = tmp_path / "machine.yaml"
    path.write_text(many_gpus(LIMITS["gpus"]))
    assert len(load_profile(path).gpus) == LIMITS["gpus"]


@pytest.mark.parametrize("text", ["0-99999999999", f"0-{MAX_CPU_ID + 1}", "1" * 5000])
def test_cpulist_ids_are_bounded(text: str) -> None:
    with pytest.raises(GrammarError, match=rf"above {MAX_CPU_ID}, the largest CPU id"):
        parse_cpulist(text)


def test_cpulist_up_to_the_bound_parses() -> None:
    assert len(parse_cpulist(f"0-{MAX_CPU_ID}")) == MAX_CPU_ID + 1


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "a\0b", "-x", "x" * 65, " ib0", 7, None])
def test_unsafe_path_components(name: object) -> None:
    assert unsafe_name_reason(name) is not None


@pytest.mark.parametrize("name", ["mlx5_0", "ibp25s0", "enp1s0f0.100", "nvidia-nvswitch", "eth0:1"])
def test_safe_path_components(name: str) -> None:
    assert unsafe_name_reason(name) is None


# -- the fake sysfs tree stays inside its root -----------------------------------------------


def _profile_with_nic(**nic: object) -> object:
    import dataclasses

    profile = load_profile("l4-pcie")
    fields = {
        "name": "mlx5_0",
        "bus_id": "0000:50:00.0",
        "netdevs": ("ib0",),
        "link_layer": "infiniband",
        "numa_node": 0,
        **nic,
    }
    return dataclasses.replace(profile, nics=(NicSpec(**fields),))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "nic",
    [
        {"name": "../../../escaped"},
        {"netdevs": ("../../../../escaped",)},
        {"sysfs_driver": "../../../escaped"},
        {"netdevs": ("",)},
    ],
)
def test_hand_built_profile_with_unsafe_names_writes_nothing(
    tmp_path: Path, nic: dict[str, object]
) -> None:
    root = tmp_path / "sys"
    with pytest.raises(SysfsBuildError, match=r"is not a safe name|non-empty name"):
        build_sysfs(_profile_with_nic(**nic), root)  # type: ignore[arg-type]
    assert not root.exists()
    assert not (tmp_path / "escaped").exists()


def test_symlink_trap_in_the_tree_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "sys"
    (root / "class").mkdir(parents=True)
    os.symlink(outside, root / "class" / "net")  # a trap left in a reused tree
    with pytest.raises(SysfsBuildError, match="would be written outside it"):
        build_sysfs(_profile_with_nic(), root)  # type: ignore[arg-type]
    assert list(outside.iterdir()) == []


# -- the CLI: one line, exit 2, a few seconds ------------------------------------------------


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gputopo.agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("case", ["utf-16", "alias-bomb", "netdev-escapes"])
def test_cli_mock_hostile_profile_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    text, expected = HOSTILE_TEXT[case]
    path = tmp_path / "machine.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run_agent("discover", "--mock", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gputopo-agent: error: --mock '{path}'")
    assert expected in lines[0]


def test_cli_gputopo_mock_dev_zero_exits_2() -> None:
    result = run_agent("run", "--once", "--dry-run", env={"GPUTOPO_MOCK": "/dev/zero"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "/dev/zero: larger than" in result.stderr


# -- property-based: any bytes, any YAML structure -------------------------------------------

YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0000:18:00.0", "0-7", "ada", "NVIDIA L4", "8.9", "0x27b8", "enabled"]),
)
PROFILE_KEYS = st.sampled_from(
    [
        "schema", "node", "driver", "nvml", "numa", "pci", "gpu_defaults", "gpus", "nics",
        "nvswitches", "bus_id", "name", "memory_mib", "compute_capability", "architecture",
        "pci_device_id", "numa_node", "cpus", "nvlink", "mig", "fabric", "health", "metrics",
        "errors", "netdevs", "links", "peer", "count", "table", "instances", "state", "base",
        "switches", "parent", "upstream", "ports", "distances", "id", "sysfs_driver",
    ]
)  # fmt: skip
YAML_TREES = st.recursive(
    YAML_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(PROFILE_KEYS, children, max_size=5),
    ),
    max_leaves=25,
)


def _dump(document: object) -> str:
    try:
        return yaml.safe_dump(document)
    except (yaml.YAMLError, ValueError, OverflowError):
        return "{}"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.yaml"
    path.write_bytes(data)
    try:
        load_profile(path)
    except ProfileError as error:
        assert "\n" not in str(error)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.dictionaries(PROFILE_KEYS, YAML_TREES, max_size=6),
    gpu=st.dictionaries(PROFILE_KEYS, YAML_TREES, max_size=8),
)
def test_random_yaml_structure_never_crashes(
    tmp_path: Path, document: dict[str, object], gpu: dict[str, object]
) -> None:
    document.pop("base", None)
    base = yaml.safe_load(BASE)
    base["gpus"].append({"bus_id": "0000:c0:00.0", "numa_node": 1, **gpu})
    for text in (_dump(document), _dump({**base, **document}), _dump(base)):
        path = tmp_path / "random.yaml"
        path.write_text(text)
        try:
            load_profile(path)
        except ProfileError as error:
            assert "\n" not in str(error)


MUTATED = ("dgx-h100", "dgx-a100-mig", "gb200-nvl4", "a100-pcie-nvlink-pairs")


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(MUTATED),
    choices=st.lists(st.integers(min_value=0), min_size=1, max_size=3),
    values=st.lists(YAML_TREES, min_size=3, max_size=3),
)
def test_a_real_profile_with_random_fields_never_crashes(
    tmp_path: Path, name: str, choices: list[int], values: list[object]
) -> None:
    """Deeper than random documents: a built-in profile with one to three of its fields (at
    any depth) replaced by random YAML, so the checks past the first section are reached."""
    document = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    document.pop("base", None)
    for choice, value in zip(choices, values, strict=False):
        paths = _paths(document)
        path = paths[choice % len(paths)]
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = copy.deepcopy(value)
    profile_path = tmp_path / "mutated.yaml"
    profile_path.write_text(_dump(document))
    try:
        profile = load_profile(profile_path)
    except ProfileError as error:
        assert "\n" not in str(error)
        return
    root = tmp_path / "sys"
    shutil.rmtree(root, ignore_errors=True)
    build_sysfs(profile, root)
