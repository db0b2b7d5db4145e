"""Hypothesis strategies for random *valid* machine profiles (for property tests of discovery).

``hypothesis`` is a test dependency, so it is imported when a strategy is built, not when this
module is imported. ``profile_documents()`` draws profile mappings (what a YAML file holds);
``profiles()`` draws loaded :class:`~gputopo.mocks.spec.MachineProfile` values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gputopo.mocks.profile import parse_profile
from gputopo.mocks.spec import MachineProfile

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

# (name, memory MiB, compute capability, architecture, PCI device id, MIG capable, PCIe gen)
GPU_MODELS: tuple[tuple[str, int, str, str, int, bool, int], ...] = (
    ("NVIDIA H100 80GB HBM3", 81559, "9.0", "hopper", 0x2330, True, 5),
    ("NVIDIA A100-SXM4-80GB", 81920, "8.0", "ampere", 0x20B2, True, 4),
    ("NVIDIA L4", 23034, "8.9", "ada", 0x27B8, False, 4),
    ("NVIDIA GeForce RTX 4090", 24564, "8.9", "ada", 0x2684, False, 4),
    ("NVIDIA GB200", 189471, "10.0", "blackwell", 0x2941, False, 5),
)

# GPU-instance layouts valid on the A100-80GB and H100-80GB tables with automatic placement.
MIG_LAYOUTS: tuple[tuple[Any, ...], ...] = (
    (),
    ("7g.80gb",),
    ("4g.40gb", "2g.20gb", "1g.10gb"),
    ("3g.40gb", "3g.40gb"),
    ("3g.40gb", "2g.20gb", "1g.10gb"),
    ("2g.20gb", "2g.20gb", "2g.20gb", "1g.10gb"),
    ("1g.10gb",) * 7,
    ("1g.20gb", "1g.20gb", "1g.20gb", "1g.20gb"),
    ({"profile": "3g.40gb", "compute_instances": ["1c.3g.40gb", "2c.3g.40gb"]}, "3g.40gb"),
    ({"profile": "7g.80gb", "compute_instances": ["4c.7g.80gb", "3c.7g.80gb"]},),
)

# Per-GPU calls a property test may see fail, and the errors they fail with.
INJECTABLE_FUNCTIONS: tuple[str, ...] = (
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkRemotePciInfo",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetCpuAffinity",
    "nvmlDeviceGetTopologyCommonAncestor",
    "nvmlDeviceGetGpuFabricInfoV",
    "nvmlDeviceGetCurrPcieLinkGeneration",
)
INJECTABLE_ERRORS: tuple[str, ...] = ("NOT_SUPPORTED", "UNKNOWN", "TIMEOUT", "GPU_IS_LOST")


def profile_documents(*, max_gpus: int = 16, faults: bool = True) -> SearchStrategy[dict[str, Any]]:
    """Random valid profile mappings: 0..max_gpus GPUs, NUMA layouts, PCIe switches, NVLink
    (none, direct pairs or NVSwitch), MIG layouts, NICs and, with ``faults``, injected NVML
    errors, lost and NVML-hidden GPUs and NVML load/init failures."""
    from hypothesis import strategies as st

    @st.composite
    def document(draw: DrawFn) -> dict[str, Any]:
        numa_count = draw(st.integers(1, 4))
        cores = draw(st.integers(1, 8))
        numa = [
            {"id": n, "cpus": f"{n * cores}-{n * cores + cores - 1}", "memory_mib": 4096 * (n + 1)}
            for n in range(numa_count)
        ]
        doc: dict[str, Any] = {
            "node": {"hostname": draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))},
            "numa": numa,
        }
        gpu_count = draw(st.integers(0, max_gpus))
        model = draw(st.sampled_from(GPU_MODELS))
        name, memory, capability, arch, device_id, mig_capable, gen = model
        gpus: list[dict[str, Any]] = []
        switches: list[dict[str, Any]] = []
        nics: list[dict[str, Any]] = []
        slot = 0
        while len(gpus) < gpu_count:
            base = 0x08 * (slot + 1)
            numa_node = draw(st.integers(0, numa_count - 1))
            group = min(draw(st.integers(1, 4)), gpu_count - len(gpus))
            behind_switch = draw(st.booleans())
            if behind_switch:
                switch = f"sw{slot}"
                switches.append(
                    {
                        "name": switch,
                        "upstream": f"0000:{base + 1:02x}:00.0",
                        "parent": f"0000:{base:02x}:01.0",
                    }
                )
                buses = [base + 3 + j for j in range(group)]
                if group < 4 and draw(st.booleans()):
                    nics.append(
                        {
                            "name": f"mlx5_{len(nics)}",
                            "bus_id": f"0000:{base + 7:02x}:00.0",
                            "parent": switch,
                            "numa_node": numa_node,
                            "netdevs": [f"ibp{base + 7}s0"],
                        }
                    )
            else:
                group = 1
                buses = [base + 1]
            for bus in buses:
                gpu: dict[str, Any] = {"bus_id": f"0000:{bus:02x}:00.0", "numa_node": numa_node}
                if behind_switch:
                    gpu["parent"] = f"sw{slot}"
                gpus.append(gpu)
            slot += 1
        doc["gpu_defaults"] = {
            "name": name,
            "memory_mib": memory,
            "compute_capability": capability,
            "architecture": arch,
            "pci_device_id": device_id,
            "pcie": {"gen": gen, "width": 16},
        }
        if arch == "ada" and name.startswith("NVIDIA GeForce"):
            doc["gpu_defaults"]["health"] = {"ecc": False, "remapped_rows": False}
        nvlink_mode = draw(st.sampled_from(("none", "pairs", "nvswitch"))) if gpus else "none"
        if nvlink_mode == "nvswitch":
            switch_count = draw(st.integers(1, 4))
            doc["nvswitches"] = [
                {"bus_id": f"0001:{i:02x}:00.0", "numa_node": 0, "in_sysfs": False}
                for i in range(switch_count)
            ]
            links = draw(st.integers(1, 18))
            doc["gpu_defaults"]["nvlink"] = {
                "nvswitch": True,
                "links": links,
                "version": draw(st.sampled_from(("3", "4", "5"))),
            }
            for gpu in gpus:
                if draw(st.integers(0, 9)) == 0:
                    gpu["nvlink"] = {"down": [draw(st.integers(0, links - 1))]}
        elif nvlink_mode == "pairs":
            order = draw(st.permutations(list(range(len(gpus)))))
            for a, b in zip(order[0::2], order[1::2], strict=False):
                count = draw(st.integers(1, 4))
                gpus[a]["nvlink"] = {
                    "version": "3",
                    "links": [{"peer": gpus[b]["bus_id"], "count": count}],
                }
                gpus[b]["nvlink"] = {
                    "version": "3",
                    "links": [{"peer": gpus[a]["bus_id"], "count": count}],
                }
        if mig_capable:
            for gpu in gpus:
                enabled = draw(st.booleans())
                mig: dict[str, Any] = {
                    "capable": True,
                    "mode": "enabled" if enabled else "disabled",
                }
                if enabled:
                    mig["instances"] = list(draw(st.sampled_from(MIG_LAYOUTS)))
                gpu["mig"] = mig
        if arch in ("hopper", "blackwell") and draw(st.booleans()):
            doc["gpu_defaults"]["fabric"] = {
                "cluster_uuid": str(draw(st.uuids())),
                "clique_id": draw(st.integers(0, 2**31 - 1)),
                "state": draw(st.sampled_from(("completed", "in_progress", "not_started"))),
            }
        for gpu in gpus:
            gpu["metrics"] = {
                "utilization_gpu": draw(st.lists(st.integers(0, 100), min_size=1, max_size=3)),
                "temperature_c": draw(st.integers(20, 95)),
            }
        if faults:
            for gpu in gpus:
                errors = draw(
                    st.dictionaries(
                        st.sampled_from(INJECTABLE_FUNCTIONS),
                        st.one_of(
                            st.sampled_from(INJECTABLE_ERRORS),
                            st.builds(
                                lambda e, t: {"error": e, "times": t},
                                st.sampled_from(INJECTABLE_ERRORS),
                                st.integers(1, 3),
                            ),
                        ),
                        max_size=3,
                    )
                )
                if errors:
                    gpu["errors"] = errors
                roll = draw(st.integers(0, 19))
                if roll == 0:
                    gpu["lost"] = True
                elif roll == 1:
                    gpu["hidden_from_nvml"] = True
                    gpu["sysfs_driver"] = draw(st.sampled_from((None, "nvidia", "vfio-pci")))
            roll = draw(st.integers(0, 19))
            if roll == 0:
                doc["nvml"] = {"load_error": "LIBRARY_NOT_FOUND"}
            elif roll == 1:
                doc["nvml"] = {"init_error": "DRIVER_NOT_LOADED"}
        doc["pci"] = {"switches": switches}
        doc["gpus"] = gpus
        doc["nics"] = nics
        return doc

    return document()


def profiles(*, max_gpus: int = 16, faults: bool = True) -> SearchStrategy[MachineProfile]:
    """Random valid machine profiles (see :func:`profile_documents`)."""
    return profile_documents(max_gpus=max_gpus, faults=faults).map(
        lambda doc: parse_profile(doc, source="<hypothesis>", name="generated")
    )
