"""kube-scheduler's default score normalisation."""

from __future__ import annotations

import numpy as np

from gputopo.scheduler.plugins.normalize import default_normalize


def test_default_normalize_scales_by_maximum() -> None:
    raw = np.array([0, 1, 2], dtype=np.int64)
    assert default_normalize(raw, reverse=False).tolist() == [0, 50, 100]
    assert default_normalize(raw, reverse=True).tolist() == [100, 50, 0]
    zeros = np.zeros(3, dtype=np.int64)
    assert default_normalize(zeros, reverse=False).tolist() == [0, 0, 0]
    assert default_normalize(zeros, reverse=True).tolist() == [100, 100, 100]
