"""`kubectl-gputopo` without the `scheduler` extra: one line naming it, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gputopo.kubectl import entry


def test_importing_the_entry_point_imports_no_numpy() -> None:
    code = "import sys, gputopo.kubectl.entry; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_without_the_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "missing_extra", lambda: "numpy")
    assert entry.main(["nodes"]) == 1
    assert capsys.readouterr().err == (
        "kubectl-gputopo: error: numpy is not installed: the scheduler needs the `scheduler` "
        "extra (pip install 'gputopo[scheduler]', or the scheduler image)\n"
    )


def test_with_the_extra_it_runs_the_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["--version"])
    assert exit_info.value.code == 0
    assert "kubectl-gputopo" in capsys.readouterr().out
