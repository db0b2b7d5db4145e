"""Shared fixtures: the real control plane and Prometheus for `@pytest.mark.integration` tests.

Nothing here starts unless a test asks for it, so unit tests never need the binaries. Binaries
come from `make tools` (`python -m hack.testenv ensure`); when they are missing an integration
fixture fails (never skips) and says so.
"""

from __future__ import annotations

import os

# Test components are spawned with a preexec_fn (die with the parent), so subprocess forks; with
# gRPC's fork support on, its at-fork handler restarts the event-engine poller in the child,
# which can abort it (seen: an extender child killed by SIGABRT, "epoll_wait error: Bad file
# descriptor") when a pod-resources test left gRPC running in this process. Nothing here relies
# on gRPC across a fork. Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# The suite runs the agent as the DaemonSet's mig-monitor component does (the MIG monitor
# capability granted): the fake NVML reads this at nvmlInit, as the container runtime grants the
# capability at container start. Tests of the other case delete it (docs/profiles.md).
os.environ.setdefault("NVIDIA_MIG_MONITOR_DEVICES", "all")

import re
import secrets
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest
import yaml
from kubernetes import client

from hack.testenv import Tools, ToolsMissingError, locate
from hack.testenv.tools import PROMETHEUS
from tests.controlplane import (
    ClusterObjects,
    ComponentFailedError,
    ControlPlane,
    ManagedProcess,
    PrometheusServer,
)
from tests.controlplane.processes import live_processes


def _start(start: Callable[[], object]) -> Exception | None:
    """Run `start`; a missing binary or a component that would not start is returned."""
    try:
        start()
    except (ToolsMissingError, ComponentFailedError) as error:
        return error
    return None


def _fail_setup(error: Exception) -> NoReturn:
    """Turn a missing binary or a component that would not start into a readable failure."""
    pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)


@pytest.fixture(scope="session")
def testenv_tools() -> Tools:
    """Where the pinned binaries are (located only; `make tools` builds them)."""
    return locate()


@pytest.fixture(scope="session")
def control_plane(
    testenv_tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver on loopback for the whole session."""
    plane = ControlPlane(testenv_tools, tmp_path_factory.mktemp("controlplane"))
    try:
        failure = _start(plane.start)
        if failure is not None:
            _fail_setup(failure)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube_admin(control_plane: ControlPlane) -> client.ApiClient:
    """An ApiClient acting as the admin (group system:masters)."""
    return control_plane.admin


@pytest.fixture(scope="session")
def kube_scheduler(control_plane: ControlPlane) -> ManagedProcess:
    """kube-scheduler (default profile, leader election off), started on first use."""
    failure = _start(control_plane.start_scheduler)
    if failure is not None:
        _fail_setup(failure)
    assert control_plane.scheduler is not None
    return control_plane.scheduler


@pytest.fixture(scope="session")
def kwok(control_plane: ControlPlane) -> ManagedProcess:
    """kwok managing Nodes annotated kwok.x-k8s.io/node=fake (see `kwok_node`)."""
    failure = _start(control_plane.start_kwok)
    if failure is not None:
        _fail_setup(failure)
    assert control_plane.kwok is not None
    return control_plane.kwok


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{stem or 'test'}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its `default` ServiceAccount), deleted after the test."""
    name = control_plane.create_namespace(_namespace_name(request.node.name))
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


@pytest.fixture
def cluster_objects(control_plane: ControlPlane) -> Iterator[ClusterObjects]:
    """Create Nodes, ClusterRoles, ... through this; they are deleted after the test."""
    tracker = ClusterObjects(control_plane.admin)
    try:
        yield tracker
    finally:
        problems = tracker.cleanup()
        if problems:
            pytest.fail("cluster_objects cleanup: " + "; ".join(problems), pytrace=False)


CRD_DIRECTORY = Path(__file__).resolve().parents[1] / "daemonset" / "crds"
# The scheduler's own CRD ships with it (issue 19), not in the agent's crds/.
SCHEDULER_CRDS = (
    Path(__file__).resolve().parents[1] / "daemonset" / "scheduler" / "podgroups-crd.yaml",
)


@pytest.fixture(scope="session")
def gputopo_crds(kube_admin: client.ApiClient) -> list[str]:
    """Every CRD gputopo ships (daemonset/crds and the scheduler's), installed once and kept
    for the session.

    CRD deletion is asynchronous: tests that created and deleted them one by one raced each
    other (a create answered 409 by a terminating CRD, which then vanished under the next test).
    The control plane is thrown away after the session, so nothing needs deleting. Returns the
    CRD names, each established and already served.
    """
    extensions = client.ApiextensionsV1Api(kube_admin)
    custom = client.CustomObjectsApi(kube_admin)
    crds = [
        document
        for path in [*sorted(CRD_DIRECTORY.glob("*.yaml")), *SCHEDULER_CRDS]
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document and document.get("kind") == "CustomResourceDefinition"
    ]
    for crd in crds:
        try:
            extensions.create_custom_resource_definition(crd)
        except client.ApiException as error:
            if error.status != 409:
                raise
    for crd in crds:
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("storage"))
        deadline = time.monotonic() + 30
        while True:
            try:  # established, and the apiserver's discovery has caught up
                custom.list_cluster_custom_object(spec["group"], version, spec["names"]["plural"])
                break
            except client.ApiException:
                if time.monotonic() > deadline:
                    pytest.fail(f"CRD {crd['metadata']['name']} not served within 30 s")
                time.sleep(0.2)
    return [crd["metadata"]["name"] for crd in crds]


StartPrometheus = Callable[..., PrometheusServer]


@pytest.fixture
def start_prometheus(
    testenv_tools: Tools, tmp_path: Path
) -> Generator[StartPrometheus, None, None]:
    """Factory: `start_prometheus({"job": ["127.0.0.1:port"]}, scrape_interval="1s",
    rule_files=[...])`."""
    servers: list[PrometheusServer] = []

    def start(
        jobs: Mapping[str, Sequence[str]],
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
    ) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(servers)}"
        started: list[PrometheusServer] = []
        failure = _start(
            lambda: started.append(
                PrometheusServer(
                    testenv_tools.require(PROMETHEUS), workdir, jobs, scrape_interval, rule_files
                )
            )
        )
        if failure is not None:
            _fail_setup(failure)
        servers.extend(started)
        return started[0]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed integration test shows the tail of every running component's log."""
    report = yield
    if report.failed and item.get_closest_marker("integration") is not None:
        for process in live_processes():
            report.sections.append(
                (f"{process.name} log tail ({process.log_path})", process.log_tail())
            )
    return report
