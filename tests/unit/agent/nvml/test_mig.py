"""MIG profile names and memory sizes, as go-nvlib spells them."""

from __future__ import annotations

from gputopo.agent.nvml.mig import mig_memory_gb, mig_profile_name


def test_mig_names_round_memory_like_go_nvlib() -> None:
    a100_80 = 81920 * 1024 * 1024
    assert mig_memory_gb(a100_80, 9728) == 10
    assert mig_memory_gb(a100_80, 19968) == 20
    assert mig_memory_gb(a100_80, 40192) == 40
    assert mig_memory_gb(40960 * 1024 * 1024, 4864) == 5
    assert mig_profile_name(3, 40) == "3g.40gb"
    assert mig_profile_name(3, 40, compute_slices=1) == "1c.3g.40gb"
    assert mig_profile_name(1, 10, media=True) == "1g.10gb+me"
