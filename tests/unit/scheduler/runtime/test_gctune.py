"""Garbage-collector tuning at start-up."""

from __future__ import annotations


def test_gc_tuning_raises_thresholds_and_freezes_the_startup_heap() -> None:
    import gc

    from gputopo.scheduler.runtime import gctune

    before = gc.get_threshold()
    try:
        gctune.tune()
        assert gc.get_threshold() == gctune.THRESHOLDS
        gctune.freeze_startup_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
