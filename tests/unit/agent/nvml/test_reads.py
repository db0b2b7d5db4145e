"""Decoding NVML's answers: GPU family from the compute capability, CPU affinity words."""

from __future__ import annotations

import pytest

from gputopo.agent.nvml.reads import cpus_from_affinity, family_from_compute_capability
from gputopo.agent.topology import ComputeCapability


@pytest.mark.parametrize(
    ("cc", "family"),
    [
        ((7, 0), "volta"),
        ((7, 5), "turing"),
        ((8, 0), "ampere"),
        ((8, 6), "ampere"),
        ((8, 9), "ada-lovelace"),
        ((9, 0), "hopper"),
        ((10, 0), "blackwell"),
        ((12, 0), "blackwell"),
        ((6, 0), "pascal"),
        ((1, 0), None),
    ],
)
def test_family_follows_compute_capability_like_gfd(cc: tuple[int, int], family: str) -> None:
    assert family_from_compute_capability(ComputeCapability(*cc)) == family


def test_cpu_affinity_words_become_cpu_indices() -> None:
    assert cpus_from_affinity([0b1011, 0, 1]) == (0, 1, 3, 128)
