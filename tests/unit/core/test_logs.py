"""The one log schema: every module's logger, configured once, writes the configured format."""

from __future__ import annotations

import ast
import importlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gputopo.core.logs import JsonFormatter, TextFormatter, logging_configured, utc_timestamp

REPO = Path(__file__).resolve().parents[3]
SOURCE_DIRS = ("agent", "scheduler", "mocks", "gputopo/core")
SCHEMA = {"time", "level", "logger", "msg"}
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING (gputopo\.\S+): (.*)$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, tree = logging.getLogger(), logging.getLogger("gputopo")
    saved = (list(root.handlers), root.level, tree.level, tree.propagate)
    yield
    root.handlers[:], root.level, tree.level, tree.propagate = saved


def _source_files() -> Iterator[tuple[str, Path]]:
    """(module name, path) of every gputopo source file, namespace packages included."""
    for directory in SOURCE_DIRS:
        package = "gputopo." + directory.removeprefix("gputopo/").replace("/", ".")
        for path in sorted((REPO / directory).rglob("*.py")):
            if "podresources_pb" in path.parts:
                continue  # generated gRPC code
            parts = path.relative_to(REPO / directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def _every_module_logger() -> dict[str, logging.Logger]:
    """Module name -> the logger it logs through, for every gputopo module that has one."""
    loggers: dict[str, logging.Logger] = {}
    for name, _ in _source_files():
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, logging.Logger):
                loggers[name] = value
    return loggers


def test_json_lines_carry_time_level_logger_msg_and_the_extras() -> None:
    record = logging.LogRecord(
        "gputopo.agent.x", logging.WARNING, __file__, 1, "GPU %d lost", (3,), None
    )
    record.node = "dgx-a"
    document = json.loads(JsonFormatter().format(record))
    assert document["level"] == "warning"
    assert document["logger"] == "gputopo.agent.x"
    assert document["msg"] == "GPU 3 lost"
    assert document["node"] == "dgx-a"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["time"])
    assert "exception" not in document


def test_a_traceback_is_the_exception_field() -> None:
    try:
        raise RuntimeError("tick failed")
    except RuntimeError:
        record = logging.LogRecord(
            "gputopo.scheduler.runtime", logging.ERROR, __file__, 1, "boom", (), True
        )
        record.exc_info = sys.exc_info()
    document = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: tick failed" in document["exception"]


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert utc_timestamp(1767323045.678) == "2026-01-02T03:04:05.678Z"


def test_every_modules_warnings_come_out_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    loggers = _every_module_logger()
    # The modules the issue found logging outside the tree are among them.
    assert {"gputopo.scheduler.prometheus_load", "gputopo.scheduler.gpu_alloc.layout"} <= set(
        loggers
    )
    assert "gputopo.scheduler.runtime.informer" in loggers  # namespace packages too
    capsys.readouterr()
    with logging_configured("json", "info"):
        for module, logger in loggers.items():
            logger.warning("warning from %s", module)
            logger.info("info from %s", module)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 * len(loggers)
    seen = set()
    for line in lines:
        document = json.loads(line)
        assert set(document) >= SCHEMA, line
        assert document["logger"].startswith("gputopo."), line
        seen.add(document["msg"].split(" from ", 1)[1])
    assert seen == set(loggers)


def test_every_modules_warnings_come_out_as_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    loggers = _every_module_logger()
    capsys.readouterr()
    with logging_configured("text", "warning"):
        for module, logger in loggers.items():
            logger.warning("warning from %s", module)
            logger.info("not shown at --log-level warning")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(loggers)
    for line in lines:
        assert TEXT_LINE.match(line), line


def test_every_logger_in_the_source_is_under_gputopo() -> None:
    """`logging.getLogger(__name__)` or a literal under "gputopo."; only the log set-up itself
    touches the root logger."""
    offenders = []
    for name, path in _source_files():
        if name == "gputopo.core.logs":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
            ):
                continue
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Name) and argument.id == "__name__":
                continue
            if (
                isinstance(argument, ast.Constant)
                and isinstance(argument.value, str)
                and argument.value.startswith("gputopo.")
            ):
                continue
            offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_configuring_twice_keeps_one_handler_and_undoing_restores(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("gputopo.core.test")
    with logging_configured("json", "info"), logging_configured("json", "info"):
        log.warning("once")
    log.warning("after")  # no gputopo handler any more: not on stderr as JSON
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [json.loads(line)["msg"] for line in lines] == ["once"]


def test_text_lines_carry_the_extras_too() -> None:
    record = logging.LogRecord(
        "gputopo.scheduler.runtime", logging.INFO, __file__, 1, "pod bound", (), None
    )
    record.pod = "train/llama-0"
    record.node = "dgx-a"
    line = TextFormatter().format(record)
    assert line.endswith(" INFO gputopo.scheduler.runtime: pod bound pod=train/llama-0 node=dgx-a")


def test_json_log_line_carries_the_extras() -> None:
    record = logging.LogRecord(
        "gputopo.scheduler", logging.INFO, __file__, 1, "pod bound", (), None
    )
    record.pod = "train/llama-0"
    record.node = "dgx-a"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "pod bound"
    assert line["level"] == "info"
    assert (line["pod"], line["node"]) == ("train/llama-0", "dgx-a")
