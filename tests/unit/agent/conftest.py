"""Fixtures of the agent-loop tests (test_loop, test_triggers, test_runloop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_loop import CountingDiscoverer
from .fake_clock import FakeClock


@pytest.fixture
def discoverer(tmp_path: Path) -> Iterator[CountingDiscoverer]:
    with CountingDiscoverer(str(tmp_path)) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
