"""`gputopo-scheduler` without the `scheduler` extra: one line naming the extra, not a traceback.

The agent's install (and image) carries no numpy; the scheduler's CLI must be importable there
and say what to install. The end-to-end case, an install without the extra, is in
tests/packaging/test_image_extras.py and tests/packaging/test_image.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.machinery import ModuleSpec

import pytest

from gputopo.scheduler import cli

SAMPLE = "scheduler/samples/cluster.yaml"


def test_importing_the_cli_imports_no_numpy() -> None:
    """The console script imports `gputopo.scheduler.cli` before `main` can check anything."""
    code = "import sys, gputopo.scheduler.cli; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_simulate_without_numpy_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "numpy" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    status = cli.main(["simulate", "--cluster", SAMPLE])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err == (
        "gputopo-scheduler: error: numpy is not installed: the scheduler needs the `scheduler` "
        "extra (pip install 'gputopo[scheduler]', or the scheduler image)\n"
    )


def test_simulate_with_numpy_still_places_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--cluster", SAMPLE, "--output", "json"]) == 0
    assert '"node"' in capsys.readouterr().out
