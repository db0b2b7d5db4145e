"""Fixtures shared by the scheduler's integration tests (the control plane's are in tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import _fail_setup, _start
from tests.controlplane import DRA_CONTROLLERS, ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster


@pytest.fixture
def cluster(control_plane: ControlPlane, kwok: ManagedProcess) -> Iterator[Cluster]:
    """kwok-managed GPU nodes for one test, deleted after it."""
    helper = Cluster(control_plane)
    try:
        yield helper
    finally:
        helper.delete_nodes()


@pytest.fixture
def controller_manager(control_plane: ControlPlane) -> ManagedProcess:
    """kube-controller-manager with the DRA controllers (claims from templates, device-taint
    eviction), started on first use and kept for the session; a test that ran another set
    (`control_plane.start_controller_manager(controllers=...)`) gets this set back here."""
    failure = _start(lambda: control_plane.start_controller_manager(DRA_CONTROLLERS))
    if failure is not None:
        _fail_setup(failure)
    assert control_plane.controller_manager is not None
    return control_plane.controller_manager
