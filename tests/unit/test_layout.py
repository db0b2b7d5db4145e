"""The unit tests mirror the code, so a module's tests are found in one guess.

``tests/unit/<package>/.../test_<module>.py`` tests ``<package>/.../<module>.py`` (or the package
``<package>/.../<module>/``); ``test_<module>_<aspect>.py`` is a further file for the same module
(e.g. ``test_discovery_profiles.py``: discovery on the built-in profiles). The package folders are
``agent/``, ``scheduler/``, ``mocks/``, ``gputopo/core/`` (as ``tests/unit/core/``) and
``gputopo/kubectl/`` (as ``tests/unit/kubectl/``), and the benchmarks' own helpers in
``tests/bench/`` (as ``tests/unit/bench/``: their arithmetic decides what a benchmark reports,
the benchmarks themselves run on demand). Every test folder is a Python package, so
equal file names in different folders never collide.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "tests" / "unit"
SOURCES = {
    "agent": REPO / "agent",
    "scheduler": REPO / "scheduler",
    "mocks": REPO / "mocks",
    "core": REPO / "gputopo" / "core",
    "kubectl": REPO / "gputopo" / "kubectl",
    "bench": REPO / "tests" / "bench",
}
# Tests that span several modules on purpose; each says why it has no single module to mirror.
CROSS_CUTTING = {
    # Both vectorised pod-relation filters (topology_spread, inter_pod_affinity) against one
    # per-node transcription of kube-scheduler's loops, on the same random clusters.
    "scheduler/plugins/test_spread_and_affinity_reference.py",
}


def _modules(folder: Path) -> set[str]:
    """The module and subpackage names directly in a source folder."""
    names = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in folder.iterdir() if path.is_dir() and any(path.glob("*.py"))}
    return names


def _mirrors_a_module(test_file: Path) -> bool:
    top, *folders = test_file.relative_to(UNIT).parent.parts
    source = SOURCES[top].joinpath(*folders)
    if not source.is_dir():
        return False
    stem = test_file.stem.removeprefix("test_")
    return any(stem == name or stem.startswith(name + "_") for name in _modules(source))


def _test_files() -> list[Path]:
    return sorted(path for path in UNIT.rglob("test_*.py") if path.parent != UNIT)


def test_every_unit_test_file_mirrors_a_module_or_package() -> None:
    strays = [
        str(path.relative_to(UNIT))
        for path in _test_files()
        if str(path.relative_to(UNIT)) not in CROSS_CUTTING and not _mirrors_a_module(path)
    ]
    assert strays == [], "name these tests/unit/<package>/.../test_<module>[_<aspect>].py"


def test_unit_tests_live_only_under_the_mirrored_packages() -> None:
    tops = {path.relative_to(UNIT).parts[0] for path in _test_files()}
    assert tops <= set(SOURCES)
    assert [path.name for path in UNIT.glob("test_*.py")] == ["test_layout.py"]


def test_cross_cutting_entries_exist_and_do_not_mirror_a_module() -> None:
    for name in CROSS_CUTTING:
        assert (UNIT / name).is_file(), name
        assert not _mirrors_a_module(UNIT / name), f"{name} mirrors a module: drop it from the list"


def test_every_test_folder_is_a_package() -> None:
    folders = [UNIT.parent, UNIT, *(path for path in UNIT.rglob("*") if path.is_dir())]
    missing = [
        str(folder.relative_to(REPO))
        for folder in folders
        if folder.name not in {"__pycache__", "golden"} and not (folder / "__init__.py").is_file()
    ]
    assert missing == []
