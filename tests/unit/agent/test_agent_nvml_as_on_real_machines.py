"""NVML behaviour as real machines show it (issue 15), each test named for that behaviour and run
against the fake NVML made as strict as the real library for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.nvml import NvmlAdapter
from gputopo.agent.taints import compute_taints
from gputopo.agent.topology import Health, XidEvent
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs

# -- 7. a lost GPU ---------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["GPU_IS_LOST", "UNKNOWN"])
def test_lost_gpu_fails_at_handle_and_is_tainted_by_uuid(tmp_path: Path, error: str) -> None:
    """l4-pcie: GPU 1 falls off the bus after an XID 79. NVML then fails already at
    nvmlDeviceGetHandleByIndex; the GPU sysfs still lists is lost, failed, keeps its index and
    bus id, keeps the XID its board had, and taints the node."""
    profile = load_profile("l4-pcie")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    with Discoverer(module, root, "l4") as discoverer:
        before = discoverer.discover().gpu(1)
        module.control.inject_xid(1, 79)
        module.control.set_lost(1, error=error)
        after = discoverer.discover()
        poll = discoverer.adapter.health_poll()
    lost = after.gpu(1)
    assert lost.pci_bus_id == before.pci_bus_id
    assert lost.health is Health.FAILED
    assert lost.health_signals.lost
    assert lost.health_signals.xid_events == (XidEvent(79, 1),)
    assert "GPU is lost (NVML GPU_IS_LOST)" in lost.health_reasons
    assert after.pci_only_gpus == ()
    assert poll.signals[1].lost
    assert [t.key for t in compute_taints(after, None)] == ["gputopo.io/gpu-health"]


def test_lost_gpu_present_in_sysfs_from_the_start_is_in_the_topology_dgx_h100(
    tmp_path: Path,
) -> None:
    """dgx-h100-degraded: GPU 6 is lost before the agent starts; it is still one of 8 GPUs."""
    profile = load_profile("dgx-h100-degraded")
    module = make_fake_pynvml(profile)
    root = build_sysfs(profile, tmp_path / "sys")
    with Discoverer(module, root, "dgx") as discoverer:
        topology = discoverer.discover()
    assert len(topology.gpus) == 8
    assert topology.gpu(6).health is Health.FAILED
    assert topology.gpu(6).pci_bus_id == profile.nvml_gpus()[6].bus_id
    assert topology.pci_only_gpus == ()


def test_xids_follow_the_board_not_the_index_when_indices_shift_dgx_h100() -> None:
    """After a re-enumeration the board that had XID 79 at index 6 is at index 5: its XID goes
    with it, and the board now at index 6 starts clean."""
    module = make_fake_pynvml("dgx-h100")
    adapter = NvmlAdapter(module)
    adapter.open()
    first = adapter.snapshot(with_p2p=False)
    uuid_5, uuid_6 = first.gpus[5].uuid, first.gpus[6].uuid
    assert uuid_5 is not None and uuid_6 is not None
    module.control.inject_xid(6, 79)
    assert adapter.snapshot(with_p2p=False).gpus[6].signals.xid_events == (XidEvent(79, 1),)
    module.control.replace_gpu(5, uuid_6)
    module.control.replace_gpu(6, uuid_5)
    shifted = adapter.snapshot(with_p2p=False)
    assert shifted.gpus[5].signals.xid_events == (XidEvent(79, 1),)
    assert shifted.gpus[6].signals.xid_events == ()
    adapter.close()
