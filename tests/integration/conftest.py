"""Fixtures shared by the scheduler's integration tests (the control plane's are in tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster


@pytest.fixture
def cluster(control_plane: ControlPlane, kwok: ManagedProcess) -> Iterator[Cluster]:
    """kwok-managed GPU nodes for one test, deleted after it."""
    helper = Cluster(control_plane)
    try:
        yield helper
    finally:
        helper.delete_nodes()
