"""The Kubernetes API client both deployables stand on, one module per concern:

- :mod:`~gputopo.core.kube.config`: where the API server is and which credentials to send
  (the one kubeconfig policy: kubeconfig, ``--context``, in-cluster ServiceAccount);
- :mod:`~gputopo.core.kube.transport`: HTTP/1.1 to the API server (kept-alive requests,
  watch streams);
- :mod:`~gputopo.core.kube.client`: the one client, JSON requests and watches (the
  scheduler's runtime wraps it in ``gputopo.scheduler.runtime.kube``) and the agent's calls by
  name (its Node, its NodeResourceTopology);
- :mod:`~gputopo.core.kube.errors`: the one error type for an error answer, one for no
  answer, one for an unusable configuration.

Retrying what failed is :mod:`gputopo.core.retry`.
"""

from gputopo.core.kube.client import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    CachedAuthorization,
    KubeClient,
    client_from_config,
)
from gputopo.core.kube.config import (
    SERVICE_ACCOUNT_DIR,
    ClusterConfig,
    default_kubeconfig_path,
    kubeconfig_from_document,
    load_config,
    load_incluster_config,
    load_kubeconfig,
)
from gputopo.core.kube.errors import KubeApiError, KubeConfigError, KubeConnectionError
from gputopo.core.kube.transport import DEFAULT_TIMEOUT_S, MAX_IDLE_S, HttpConnections, HttpStream

__all__ = [
    "APPLY_PATCH",
    "DEFAULT_TIMEOUT_S",
    "JSON_PATCH",
    "MAX_IDLE_S",
    "MERGE_PATCH",
    "PATCH_TYPES",
    "SERVICE_ACCOUNT_DIR",
    "STRATEGIC_MERGE_PATCH",
    "CachedAuthorization",
    "ClusterConfig",
    "HttpConnections",
    "HttpStream",
    "KubeApiError",
    "KubeClient",
    "KubeConfigError",
    "KubeConnectionError",
    "client_from_config",
    "default_kubeconfig_path",
    "kubeconfig_from_document",
    "load_config",
    "load_incluster_config",
    "load_kubeconfig",
]
