"""gputopo: Kubernetes that sees GPU machines as they really are, and places pods with that.

One import package holds everything installed:

* ``gputopo.core`` — the ground floor both deployables stand on: the agent↔scheduler contract
  (keys, the topology annotation, Kubernetes name rules, grammars, one typed decoder) and the
  Kubernetes/process plumbing (API client, kubeconfig policy, retry, probe+metrics server, logs,
  flags);
* ``gputopo.agent`` — the node agent (DaemonSet);
* ``gputopo.scheduler`` — the central scheduler, its extender and ``simulate``;
* ``gputopo.mocks`` — a fake NVML and sysfs driven by machine profiles.

``agent``, ``scheduler`` and ``mocks`` live at the repository root (the design card's layout) and
are linked in here; docs/architecture.md draws the layers and the rules that keep them apart.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gputopo")
except PackageNotFoundError:  # a source tree used without an install
    __version__ = "0.0.0+unknown"
