"""Real components for integration tests: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, kwok, Prometheus.

The pytest fixtures in tests/conftest.py wrap these; binaries come from `hack.testenv.locate()`
(built by `make tools`), never from a build during a test run.
"""

from tests.controlplane.cleanup import ClusterObjects
from tests.controlplane.cluster import (
    ADMIN_USER,
    DEVICE_TAINT_EVICTION_CONTROLLER,
    DRA_CONTROLLERS,
    FEATURE_GATES,
    KWOK_NODE_ANNOTATION,
    RESOURCE_CLAIM_CONTROLLER,
    TAINT_EVICTION_CONTROLLER,
    ControlPlane,
    StartupTimes,
    kwok_node,
    running_control_plane,
)
from tests.controlplane.processes import ComponentFailedError, ManagedProcess, free_port
from tests.controlplane.prometheus import PrometheusServer, PromQLError, Sample, query

__all__ = [
    "ADMIN_USER",
    "DEVICE_TAINT_EVICTION_CONTROLLER",
    "DRA_CONTROLLERS",
    "FEATURE_GATES",
    "KWOK_NODE_ANNOTATION",
    "RESOURCE_CLAIM_CONTROLLER",
    "TAINT_EVICTION_CONTROLLER",
    "ClusterObjects",
    "ComponentFailedError",
    "ControlPlane",
    "ManagedProcess",
    "PromQLError",
    "PrometheusServer",
    "Sample",
    "StartupTimes",
    "free_port",
    "kwok_node",
    "query",
    "running_control_plane",
]
