"""The wheel the image is built from: built, installed into a clean virtualenv, run as the image
runs it (outside the source tree, from the installed entrypoints).

Dependencies are installed normally from the package index (pip's cache makes repeats fast);
only the project itself comes from the freshly built wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's wheel, built from this tree."""
    work = tmp_path_factory.mktemp("wheel")
    wheels = work / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        cwd=work,
    )
    (wheel,) = wheels.glob("gputopo-*.whl")
    yield wheel


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with only the built wheel, its dependencies and the `scheduler` extra (both
    entrypoints run); yields its bin/. The agent-only install is the agent image's
    (tests/packaging/test_image.py)."""
    work = tmp_path_factory.mktemp("venv")
    environment = work / "venv"
    # No ensurepip in the new environment: this interpreter's pip installs into it (--python).
    venv.EnvBuilder(with_pip=False, clear=True).create(environment)
    python = environment / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            f"{wheel}[scheduler]",
        ],
        cwd=work,
    )
    yield environment / "bin"


def _image_env(bin_dir: Path) -> dict[str, str]:
    """The image's environment: no PYTHONPATH, the venv's bin first, bytecode not written."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_wheel_adds_exactly_one_top_level_import_package(wheel: Path) -> None:
    """Installed, gputopo must not claim `agent`, `scheduler` or `mocks` in site-packages."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
        declared = archive.read(top_level).decode().split()
    roots = {
        name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")
    }
    assert declared == ["gputopo"]
    assert roots == {"gputopo"}
    for package in ("agent", "scheduler", "mocks", "core"):
        assert f"gputopo/{package}/__init__.py" in names
    assert "gputopo/mocks/profiles/dgx-h100.yaml" in names
    assert "gputopo/scheduler/profiles/default.yaml" in names


def test_wheel_carries_the_apache_license_text(wheel: Path) -> None:
    """The wheel ships the repository's LICENSE and declares its SPDX identifier (PEP 639)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (licence,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        carried = archive.read(licence).decode()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert carried == (REPO / "LICENSE").read_text()
    assert "Apache License" in carried and "Version 2.0, January 2004" in carried
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers


def test_wheel_contains_the_packages_and_generated_stubs(installed: Path) -> None:
    python = installed / "python"
    code = (
        "import gputopo.agent, gputopo.scheduler, gputopo.mocks;"
        "import gputopo.agent.podresources_pb.api_pb2 as pb;"
        "print(gputopo.agent.__file__); print(pb.DESCRIPTOR.package)"
    )
    out = _run([str(python), "-c", code], cwd=installed, env=_image_env(installed)).split()
    assert "site-packages" in out[0] and str(REPO) not in out[0]
    assert out[1] == "v1"


@pytest.mark.parametrize("entrypoint", ["gputopo-agent", "gputopo-scheduler"])
def test_both_entrypoints_answer_help(installed: Path, entrypoint: str) -> None:
    out = _run([str(installed / entrypoint), "--help"], cwd=installed, env=_image_env(installed))
    assert "usage:" in out


def test_agent_discovers_the_mocked_dgx_h100_from_the_installed_wheel(installed: Path) -> None:
    out = _run(
        [str(installed / "gputopo-agent"), "discover", "--mock", "dgx-h100", "--output", "json"],
        cwd=installed,
        env=_image_env(installed),
    )
    document = json.loads(out)
    assert len(document["gpus"]) == 8
    assert document["interconnect"] == "nvswitch"
