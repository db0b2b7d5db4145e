"""Cyclic garbage collector settings for the long-running scheduler processes.

Per scheduled pod the runtime allocates thousands of short-lived objects (watch events decoded
from JSON, the parsed pod, numpy temporaries). Reference counting frees nearly all of them, but
with CPython's default thresholds (700, 10, 10) the cyclic collector still runs every 700 net
allocations, and every tenth and hundredth run walks the older generations too: the cluster
cache, every parsed pod and node, numpy and all imported modules. On the end-to-end benchmark
(200 kwok nodes x 1000 pods, docs/performance.md) the defaults cost about an eighth of the
process's CPU.

`tune()` raises the thresholds so collections are rare but still happen (cycles do occur:
exceptions with tracebacks, logging records); `freeze_startup_heap()` moves what start-up and the
initial list created into the permanent generation, which collections then skip.
"""

from __future__ import annotations

import gc
from typing import Final

# Young collections every 50 000 net allocations (about ten pods' worth), older ones 20 and 100
# times rarer. Memory held by unreachable cycles stays bounded by the same counts.
THRESHOLDS: Final = (50_000, 20, 100)


def tune() -> None:
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Exclude everything allocated so far from future collections (call once, after sync;
    no collection first: that would be one long pause while pods are already being placed)."""
    gc.freeze()
