"""``gputopo-agent`` through ``main()``: outputs and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gputopo.agent.cli import main
from gputopo.agent.topology import NodeTopology
from tests.unit.agent.agent_fixtures import PciFunction, build_tree

NUMA = {0: ("0-55,112-167", "10 21", 1024), 1: ("56-111,168-223", "21 10", 1024)}


@pytest.fixture
def gpu_box_without_driver(tmp_path: Path) -> Path:
    """A real-layout sysfs tree with one NVIDIA GPU; this machine has no libnvidia-ml."""
    return build_tree(
        tmp_path / "sys",
        [PciFunction("0000:18:00.0", parents=("0000:15:01.0",), driver=None)],
        numa=NUMA,
        dmi=("ProLiant DL380", "HPE"),
    )


def test_discover_json_on_a_machine_without_nvml_describes_what_sysfs_shows(
    gpu_box_without_driver: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["discover", "--sysfs-root", str(gpu_box_without_driver), "--node-name", "box-1"])
    assert status == 0
    out = capsys.readouterr().out
    topology = NodeTopology.from_json(out)
    assert topology.node.hostname == "box-1"
    assert topology.node.product_name == "ProLiant DL380"
    assert not topology.nvml.available
    assert topology.pci_only_gpus[0].reason.startswith("NVML unavailable: ")
    assert [n.cpus[:1] for n in topology.numa_nodes] == [(0,), (56,)]
    assert out.startswith("{\n  ")  # indented


def test_discover_yaml_and_text_outputs(
    gpu_box_without_driver: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["discover", "--sysfs-root", str(gpu_box_without_driver), "-o", "yaml"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["numa_nodes"][1]["distances"] == [21, 10]
    assert main(["discover", "--sysfs-root", str(gpu_box_without_driver), "-o", "text"]) == 0
    text = capsys.readouterr().out
    assert "0-55,112-167" in text
    assert "NVML:         unavailable" in text
    assert "0000:18:00.0" in text


def test_sysfs_root_that_does_not_exist_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["discover", "--sysfs-root", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(missing) in err
    assert "not a directory" in err


def test_sysfs_root_that_is_not_sysfs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["discover", "--sysfs-root", str(tmp_path / "empty")]) == 2
    assert "not a sysfs tree" in capsys.readouterr().err


def test_unknown_output_format_is_an_argparse_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["discover", "--output", "xml"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_entry_point_runs_as_a_module_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())",
         "discover", "--sysfs-root", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("gputopo-agent: error: --sysfs-root")


def test_json_output_is_the_models_json(
    gpu_box_without_driver: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["discover", "--sysfs-root", str(gpu_box_without_driver)])
    document = json.loads(capsys.readouterr().out)
    assert set(document) >= {"gpus", "nvlink_domains", "numa_nodes", "interconnect", "nvml"}


@pytest.mark.parametrize(
    "profile",
    ["dgx-h100", "dgx-a100-mig", "gb200-nvl4", "l4-pcie", "dgx-h100-degraded", "cpu-only"],
)
def test_record_a_mocked_machine_and_replay_it_gives_the_same_model(
    profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = tmp_path / f"{profile}-recorded.yaml"
    assert main(["record", "--mock", profile, "--output", str(recorded)]) == 0
    assert f"to {recorded}" in capsys.readouterr().out
    assert main(["discover", "--mock", profile]) == 0
    original = NodeTopology.from_json(capsys.readouterr().out)
    assert main(["discover", "--mock", str(recorded)]) == 0
    replayed = NodeTopology.from_json(capsys.readouterr().out)
    assert replayed == original


def test_discover_mock_text_reads_like_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--mock", "dgx-h100", "--output", "text"]) == 0
    text = capsys.readouterr().out
    assert "Interconnect: nvswitch" in text
    assert "NV18" in text
    assert "Topology matrix" in text


def test_unknown_mock_profile_is_a_one_line_error_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["discover", "--mock", "dgx-h999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'dgx-h999'" in err
    assert "Traceback" not in err


def test_malformed_mock_profile_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("gpus: [ {bus_id: 1\n")
    assert main(["discover", "--mock", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "broken.yaml" in err


def test_unreadable_mock_profile_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["discover", "--mock", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing.yaml" in err


def test_record_to_an_unwritable_path_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no-such-dir" / "out.yaml"
    assert main(["record", "--mock", "l4-pcie", "--output", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no-such-dir" in err
