"""The NVML adapter on a tiny hand-built NVML: what it reads, what it tolerates, what it keeps."""

from __future__ import annotations

import pynvml
import pytest

from gputopo.agent.nvml import NvmlAdapter
from gputopo.agent.topology import NvlinkRemote, P2PLevel, XidEvent
from tests.unit.agent.agent_fixtures import TinyGpu, tiny_nvml

SWITCH_BUS = "00000000:A5:00.0"


def h100(bus: str, numa: int = 0, **kwargs: object) -> TinyGpu:
    links = {n: (1, 6, 2, SWITCH_BUS) for n in range(18)}
    return TinyGpu(bus_id=bus, numa=numa, links=links, **kwargs)  # type: ignore[arg-type]


def test_library_not_found_is_a_normal_unavailable_status() -> None:
    adapter = NvmlAdapter(tiny_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    status = adapter.open()
    assert not status.available
    assert status.error is not None and status.error.startswith("LibraryNotFound")
    assert adapter.snapshot().gpus == ()


def test_driver_not_loaded_is_a_normal_unavailable_status() -> None:
    adapter = NvmlAdapter(tiny_nvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert adapter.open().error == "DriverNotLoaded: Driver Not Loaded"


def test_gpu_fields_versions_and_bus_id_normalisation() -> None:
    adapter = NvmlAdapter(tiny_nvml([h100("00000000:1B:00.0")]))
    adapter.open()
    snapshot = adapter.snapshot()
    (gpu,) = snapshot.gpus
    assert gpu.pci_bus_id == "0000:1b:00.0"
    assert gpu.memory_mib == 80 * 1024
    assert gpu.architecture == "hopper"
    assert gpu.cpu_affinity == (0, 1, 2, 3)
    assert snapshot.driver.cuda_driver_version == "12.4"
    assert snapshot.driver.driver_version == "550.54.15"
    assert gpu.signals.power_w == 70.5
    assert gpu.signals.power_limit_w == 700.0
    assert gpu.signals.throttle_reasons == ("gpu_idle",)
    assert len(gpu.nvlinks) == 18
    assert gpu.nvlinks[0].bandwidth_gbps == 25.0
    assert gpu.nvlinks[0].remote is NvlinkRemote.NVSWITCH
    assert gpu.nvlinks[0].remote_pci_bus_id == "0000:a5:00.0"
    assert gpu.mig.capable is False


def test_not_supported_fields_become_unknown_and_the_rest_is_read() -> None:
    consumer = TinyGpu(
        bus_id="00000000:01:00.0",
        name="NVIDIA GeForce RTX 4090",
        cc=(8, 9),
        fail={
            "nvmlDeviceGetTotalEccErrors": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetRemappedRows": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetNumaNodeId": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetNvLinkState": pynvml.NVML_ERROR_NOT_SUPPORTED,
        },
    )
    adapter = NvmlAdapter(tiny_nvml([consumer]))
    adapter.open()
    (gpu,) = adapter.snapshot().gpus
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.architecture == "ada-lovelace"
    assert gpu.signals.ecc.volatile_uncorrected is None
    assert gpu.signals.memory_repair.remapped_rows_failure is None
    assert gpu.numa_node is None
    assert gpu.signals.power_w is None
    assert gpu.signals.temperature_c == 40
    assert gpu.nvlinks == ()
    assert not gpu.signals.lost
    assert "nvmlDeviceGetPowerUsage: NoPermission" in gpu.errors


def test_lost_gpu_keeps_its_index_and_is_marked_lost() -> None:
    gpus = [h100("00000000:18:00.0"), h100("00000000:2A:00.0", lost=True)]
    adapter = NvmlAdapter(tiny_nvml(gpus))
    adapter.open()
    healthy, lost = adapter.snapshot().gpus
    assert lost.index == 1
    assert lost.signals.lost
    assert lost.pci_bus_id is None
    assert lost.name is None
    assert healthy.signals.lost is False
    assert healthy.p2p == {}


def test_p2p_levels_are_symmetric() -> None:
    gpus = [h100("00000000:18:00.0", 0), h100("00000000:2A:00.0", 0), h100("00000000:9A:00.0", 1)]
    adapter = NvmlAdapter(tiny_nvml(gpus))
    adapter.open()
    a, b, c = adapter.snapshot().gpus
    assert a.p2p == {1: P2PLevel.SINGLE, 2: P2PLevel.SYSTEM}
    assert b.p2p[0] is P2PLevel.SINGLE
    assert c.p2p == {0: P2PLevel.SYSTEM, 1: P2PLevel.SYSTEM}


def test_xid_events_are_drained_and_accumulated_per_gpu() -> None:
    module = tiny_nvml(
        [h100("00000000:18:00.0"), h100("00000000:2A:00.0")], xids=[(1, 79), (1, 79), (0, 13)]
    )
    adapter = NvmlAdapter(module)
    adapter.open()
    assert adapter.drain_xid_events() == {
        0: (XidEvent(13, 1),),
        1: (XidEvent(79, 2),),
    }
    assert adapter.drain_xid_events()[1] == (XidEvent(79, 2),)  # counts persist
    snapshot = adapter.snapshot()
    assert snapshot.gpus[1].signals.xid_events == (XidEvent(79, 2),)


def test_health_signals_poll_reads_only_health() -> None:
    adapter = NvmlAdapter(tiny_nvml([h100("00000000:18:00.0")]))
    adapter.open()
    signals = adapter.health_signals()
    assert signals[0].temperature_c == 40
    adapter.close()
    assert adapter.health_signals() == {}


@pytest.mark.parametrize(
    ("nvml_version", "generation", "bandwidth"),
    [(2, 2, 25.0), (5, 3, 25.0), (6, 4, 25.0), (7, 5, 50.0), (99, None, None)],
)
def test_nvlink_version_enum_is_decoded_to_generation_and_bandwidth(
    nvml_version: int, generation: int | None, bandwidth: float | None
) -> None:
    gpu = TinyGpu(bus_id="00000000:18:00.0", links={0: (1, nvml_version, 2, SWITCH_BUS)})
    adapter = NvmlAdapter(tiny_nvml([gpu]))
    adapter.open()
    (link,) = adapter.snapshot().gpus[0].nvlinks
    assert (link.version, link.bandwidth_gbps) == (generation, bandwidth)


def test_health_poll_counts_links_down_on_a_partly_broken_fabric() -> None:
    links = {n: (1, 6, 2, SWITCH_BUS) for n in range(18)}
    links[3] = (0, 6, 2, SWITCH_BUS)
    adapter = NvmlAdapter(tiny_nvml([TinyGpu(bus_id="00000000:18:00.0", links=links)]))
    adapter.open()
    assert adapter.health_signals()[0].nvlinks_down == 1
    assert adapter.snapshot().gpus[0].signals.nvlinks_down == 1
