"""NVLink bandwidth per link is NVIDIA's published figure, not nvidia-smi's line rate: a GPU's
links times it, both directions, is the datasheet's NVLink bandwidth (docs/discovery.md)."""

from __future__ import annotations

import pytest

from gputopo.agent.nvml.reads import NVLINK_BANDWIDTH_GBPS


@pytest.mark.parametrize(
    ("gpu", "generation", "links", "datasheet_gbps", "nvidia_smi_link_gbps"),
    [
        ("V100", 2, 6, 300, 25.781),
        ("A100", 3, 12, 600, None),  # no public nvidia-smi capture checked
        ("H100", 4, 18, 900, 26.562),
        ("B200", 5, 18, 1800, 53.125),
    ],
)
def test_links_times_per_link_both_directions_is_the_datasheet_figure(
    gpu: str,
    generation: int,
    links: int,
    datasheet_gbps: int,
    nvidia_smi_link_gbps: float | None,
) -> None:
    per_link = NVLINK_BANDWIDTH_GBPS[generation]
    assert links * per_link * 2 == datasheet_gbps, gpu
    if nvidia_smi_link_gbps is not None:  # nvidia-smi's line rate adds up to no datasheet figure
        assert links * nvidia_smi_link_gbps * 2 != datasheet_gbps, gpu
