"""Score normalisation helpers shared by the score plugins (kube-scheduler's, exactly)."""

from __future__ import annotations

from typing import Final

import numpy as np

from gputopo.scheduler.snapshot import IntArray

MAX_NODE_SCORE: Final = 100


def default_normalize(raw: IntArray, reverse: bool) -> IntArray:
    """`helper.DefaultNormalizeScore`: scale to 0..100 by the maximum, optionally reversed."""
    highest = int(raw.max()) if len(raw) else 0
    if highest == 0:
        return np.full(len(raw), MAX_NODE_SCORE if reverse else 0, dtype=np.int64)
    scaled = MAX_NODE_SCORE * raw // highest
    return (MAX_NODE_SCORE - scaled) if reverse else scaled
