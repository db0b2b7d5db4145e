"""The extras split the images stand on: the base install is what the agent imports, no more.

`pip install gputopo` (the agent image) gets the agent's dependencies; `gputopo[scheduler]`
(the scheduler image) adds what only the scheduler imports (numpy); `[test]` pulls
`[scheduler]`. The import graph is read with grimp, the library import-linter checks the
layering contracts with.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT_SIDE = ("gputopo.agent", "gputopo.mocks", "gputopo.core")
# mocks/strategies.py builds hypothesis strategies for the tests and imports hypothesis inside
# the functions that do; nothing the agent runs calls them.
TEST_ONLY_IMPORTS = {"hypothesis"}


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("gputopo", include_external_packages=True, cache_dir=None)


def _third_party_imports(graph: grimp.ImportGraph, packages: tuple[str, ...]) -> set[str]:
    imported: set[str] = set()
    for module in graph.modules:
        if module.startswith(packages):
            imported |= graph.find_modules_directly_imported_by(module)
    tops = {name.split(".")[0] for name in imported}
    return {top for top in tops if top != "gputopo" and top not in sys.stdlib_module_names}


def _distributions(import_names: set[str]) -> set[str]:
    owners = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for name in import_names:
        assert name in owners, f"no installed distribution provides the import {name!r}"
        found |= {_name(owner) for owner in owners[name]}
    return found


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[email.message.Message]:
    """The METADATA of the wheel built from this tree: what pip reads when users install."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    (wheel,) = wheels.glob("gputopo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [entry for entry in archive.namelist() if entry.endswith(".dist-info/METADATA")]
        yield email.parser.Parser().parsestr(archive.read(name).decode())


def _requirements(metadata: email.message.Message, extra: str | None) -> set[str]:
    marker = None if extra is None else f'extra == "{extra}"'
    found = set()
    for requirement in metadata.get_all("Requires-Dist") or []:
        spec, _, condition = requirement.partition(";")
        if (condition.strip() or None) == marker:
            found.add(spec.strip())
    return found


def test_base_dependencies_are_exactly_what_the_agent_imports(
    graph: grimp.ImportGraph, metadata: email.message.Message
) -> None:
    agent_imports = _third_party_imports(graph, AGENT_SIDE) - TEST_ONLY_IMPORTS
    base = {_name(requirement) for requirement in _requirements(metadata, None)}
    assert base == _distributions(agent_imports)
    assert "numpy" not in base and "kubernetes" not in base


def test_scheduler_extra_is_what_only_the_scheduler_imports(
    graph: grimp.ImportGraph, metadata: email.message.Message
) -> None:
    only_scheduler = _third_party_imports(graph, ("gputopo.scheduler",)) - _third_party_imports(
        graph, AGENT_SIDE
    )
    scheduler_extra = {_name(r) for r in _requirements(metadata, "scheduler")}
    assert scheduler_extra == _distributions(only_scheduler)
    assert "numpy" in scheduler_extra


def test_metadata_lists_the_extras_and_test_pulls_the_scheduler(
    metadata: email.message.Message,
) -> None:
    assert {"scheduler", "test"} <= set(metadata.get_all("Provides-Extra") or [])
    assert "gputopo[scheduler]" in _requirements(metadata, "test")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "gputopo[scheduler]" in declared["optional-dependencies"]["test"]


def test_running_the_agent_imports_no_numpy() -> None:
    """Every module on the agent's side imported, two commands run: numpy never loads."""
    code = """
import contextlib, io, pkgutil, sys, importlib
for package in ("gputopo.agent", "gputopo.mocks", "gputopo.core"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
from gputopo.agent.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["discover", "--mock", "dgx-h100", "-o", "json"]) == 0
    assert main(["labels", "--mock", "dgx-a100-mig", "--mig-strategy", "mixed"]) == 0
print(sorted(name for name in sys.modules if name.split(".")[0] in ("numpy", "kubernetes")))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "[]\n"


def test_import_linter_forbids_numpy_on_the_agent_side() -> None:
    """The same rule, statically, for every import path: `make lint` runs it (lint-imports)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    forbidding_numpy = [
        contract
        for contract in config["contracts"]
        if contract["type"] == "forbidden" and "numpy" in contract["forbidden_modules"]
    ]
    assert any(set(AGENT_SIDE) <= set(c["source_modules"]) for c in forbidding_numpy)


def test_scheduler_package_exports_load_on_first_use() -> None:
    """`import gputopo.scheduler` loads no numpy; each name in `__all__` still resolves."""
    code = """
import sys
import gputopo.scheduler as scheduler
before = "numpy" in sys.modules
resolved = [name for name in scheduler.__all__ if getattr(scheduler, name) is not None]
print(before, len(resolved) == len(scheduler.__all__), "numpy" in sys.modules)
try:
    scheduler.no_such_name
except AttributeError as error:
    print(error)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == (
        "False True True\nmodule 'gputopo.scheduler' has no attribute 'no_such_name'\n"
    )
