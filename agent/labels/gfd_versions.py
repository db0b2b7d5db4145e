"""Driver and CUDA version labels (GFD's version labeler).

GFD's ``cuda.runtime-version.*`` is, despite the name, the CUDA version the *driver* supports
(NVML ``nvmlSystemGetCudaDriverVersion``, e.g. 12.4), not a CUDA runtime library in any
container; gputopo keeps that meaning so existing selectors keep working.
"""

from __future__ import annotations

from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import Gfd


class VersionLabeler:
    def labels(self, topology: NodeTopology) -> dict[str, str]:
        labels: dict[str, str] = {}
        driver = topology.driver.driver_version
        if driver:
            parts = driver.split(".")
            if 2 <= len(parts) <= 3:
                major, minor = parts[0], parts[1]
                revision = parts[2] if len(parts) == 3 else ""
                labels.update(
                    {
                        Gfd.CUDA_DRIVER_MAJOR: major,
                        Gfd.CUDA_DRIVER_MINOR: minor,
                        Gfd.CUDA_DRIVER_REV: revision,
                        Gfd.CUDA_DRIVER_VERSION_MAJOR: major,
                        Gfd.CUDA_DRIVER_VERSION_MINOR: minor,
                        Gfd.CUDA_DRIVER_VERSION_REVISION: revision,
                        Gfd.CUDA_DRIVER_VERSION_FULL: driver,
                    }
                )
        cuda = topology.driver.cuda_driver_version
        if cuda:
            parts = cuda.split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                major, minor = str(int(parts[0])), str(int(parts[1]))
                labels.update(
                    {
                        Gfd.CUDA_RUNTIME_MAJOR: major,
                        Gfd.CUDA_RUNTIME_MINOR: minor,
                        Gfd.CUDA_RUNTIME_VERSION_MAJOR: major,
                        Gfd.CUDA_RUNTIME_VERSION_MINOR: minor,
                        Gfd.CUDA_RUNTIME_VERSION_FULL: f"{major}.{minor}",
                    }
                )
        return labels
