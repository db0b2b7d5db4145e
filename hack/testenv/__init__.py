"""Real components for the integration tests, built from pinned Go modules and cached per user.

`python -m hack.testenv ensure` builds kube-apiserver, kube-scheduler, kube-controller-manager
and etcd from `hack/tools/go.mod` and kwok from `hack/tools/kwok/go.mod` into
`${XDG_CACHE_HOME:-~/.cache}/gputopo/testenv/<versions>/`, each tool of `GO_TOOLS` from its own
module under `hack/tools/<name>/` into a cache directory of its own, finds (or installs) a
Prometheus server, and makes the local Python base image the image test builds the Dockerfile
on (`hack/testenv/image.py`). The test fixtures call `locate()`, which never builds: a
missing tool is an error that points at `make tools`.
"""

from hack.testenv.tools import (
    COMPONENTS,
    GO_TOOLS,
    GoTool,
    Pins,
    Tools,
    ToolsMissingError,
    cache_root,
    ensure,
    locate,
    read_pins,
)

__all__ = [
    "COMPONENTS",
    "GO_TOOLS",
    "GoTool",
    "Pins",
    "Tools",
    "ToolsMissingError",
    "cache_root",
    "ensure",
    "locate",
    "read_pins",
]
