"""GPU load sampling through pynvml: utilisation, memory, NVLinks, MIG devices; unsupported
queries are unknown, a lost GPU is not queried further."""

from __future__ import annotations


class _OneCallNvml:
    """Just the pynvml calls the load sampler makes, with pynvml's own structs and errors.

    GPU 0: busy, 2 NVLinks (link 1 down, with errors); GPU 1: a consumer card (NVLink and
    utilisation NOT_SUPPORTED); GPU 2: lost mid-sample; GPU 3: MIG with one device.
    """

    import pynvml as _pynvml

    NVMLError = _pynvml.NVMLError
    NVML_NVLINK_MAX_LINKS = 18

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _raise(self, code: int) -> None:
        raise self._pynvml.NVMLError(code)

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        if handle == "mig3":
            return "MIG-0000"
        return f"GPU-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> object:
        if handle == "gpu1":
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle == "gpu2":
            self._raise(self._pynvml.NVML_ERROR_GPU_IS_LOST)
        rates = self._pynvml.c_nvmlUtilization_t()
        rates.gpu, rates.memory = 87, 40
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> object:
        self.calls.append(f"memory:{handle}")
        memory = self._pynvml.c_nvmlMemory_t()
        memory.total, memory.used = (10 * 2**30, 2**30) if handle == "mig3" else (80 * 2**30, 2**33)
        memory.free = memory.total - memory.used
        return memory

    def nvmlDeviceGetNvLinkState(self, handle: str, link: int) -> int:
        if handle != "gpu0" or link >= 2:
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 0 if link == 1 else 1

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: str, link: int, counter: int) -> int:
        if counter == 3:
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 10 * link + counter

    def nvmlDeviceGetMigMode(self, handle: str) -> list[int]:
        if handle != "gpu3":
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: str) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: str, index: int) -> str:
        if index != 0:
            self._raise(self._pynvml.NVML_ERROR_NOT_FOUND)
        return "mig3"


def test_gpu_utilisation_memory_and_nvlink_sample() -> None:
    from gputopo.agent.nvml import sample_gpus

    gpus = sample_gpus(_OneCallNvml())
    busy = gpus[0]
    assert busy.uuid == "GPU-gpu0"
    assert (busy.utilization_ratio, busy.memory_utilization_ratio) == (0.87, 0.4)
    assert (busy.memory_used_bytes, busy.memory_total_bytes) == (2**33, 80 * 2**30)
    assert [(link.link, link.active) for link in busy.nvlinks] == [(0, True), (1, False)]
    assert busy.nvlinks[1].errors == {"replay": 10, "recovery": 11, "crc_flit": 12}
    assert busy.mig_devices == ()


def test_unsupported_queries_are_unknown_not_zero() -> None:
    from gputopo.agent.nvml import sample_gpus

    consumer = sample_gpus(_OneCallNvml())[1]
    assert consumer.utilization_ratio is None
    assert consumer.memory_used_bytes == 2**33  # the rest is still sampled
    assert consumer.nvlinks == ()
    assert not consumer.lost


def test_gpu_lost_mid_sample_stops_querying_it() -> None:
    from gputopo.agent.nvml import sample_gpus

    nvml = _OneCallNvml()
    lost = sample_gpus(nvml)[2]
    assert lost.lost
    assert lost.memory_used_bytes is None
    assert "memory:gpu2" not in nvml.calls


def test_mig_device_memory() -> None:
    from gputopo.agent.nvml import MigDeviceLoad, sample_gpus

    assert sample_gpus(_OneCallNvml())[3].mig_devices == (
        MigDeviceLoad("MIG-0000", 2**30, 10 * 2**30),
    )
