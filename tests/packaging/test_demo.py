"""`make demo` ends with pods the sample refuses on purpose; the recipe says so in one line, and
this keeps that line true (the count it names is the count `simulate` refuses)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def _demo_recipe() -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("demo:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_demo_says_its_refusals_are_intended_and_counts_them_right() -> None:
    recipe = _demo_recipe()
    note = recipe[-1]
    match = re.fullmatch(r'@echo "The (\w+) pods not placed are refused on purpose: .*"', note)
    assert match is not None, note
    assert "kube-scheduler-style reasons" in note
    (simulate,) = [line for line in recipe if "gputopo-scheduler simulate" in line]
    args = simulate.split()[1:]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gputopo-scheduler"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    refused = [line for line in result.stdout.splitlines() if "--  not placed:" in line]
    assert len(refused) == WORDS[match.group(1)]
