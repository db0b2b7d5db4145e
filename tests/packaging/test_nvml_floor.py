"""The agent against the oldest `nvidia-ml-py` pyproject.toml allows (issue 15: "test against the
floor version too"): that release's `pynvml` is installed into a side folder from the package
index and put first on the path, and the NVML-facing agent tests run against its structs,
constants and error classes (the fake NVML is built on whichever `pynvml` it finds).

The mocks' own surface tests are left out here on purpose: the fake models functions newer than
the floor (it follows the newest bindings), which the agent reaches only behind fallbacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def _floor() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"nvidia-ml-py>=([0-9.]+)"', text)
    assert match, "pyproject.toml names no nvidia-ml-py floor"
    return match.group(1)


def test_the_agent_discovers_with_the_floor_bindings(tmp_path: Path) -> None:
    floor = _floor()
    target = tmp_path / "floor"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            f"nvidia-ml-py=={floor}",
        ],
        check=True,
        timeout=TIMEOUT_S,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    probe = subprocess.run(
        [sys.executable, "-c", "import pynvml, importlib.metadata as m; print(pynvml.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.startswith(str(target)), probe.stdout
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-o",
            "addopts=",
            "tests/unit/agent/nvml",
            "tests/unit/agent/test_discovery.py",
            "tests/unit/agent/test_discovery_profiles.py",
            "tests/unit/agent/test_labels.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
