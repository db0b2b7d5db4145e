"""Machine profiles: the raw facts of one GPU machine, read from YAML (format: docs/profiles.md).

A profile is what the fake ``pynvml`` and the fake sysfs tree are built from, so the two always
agree. Loading validates everything once (types, references, MIG placements, NVLink symmetry)
and reports the first problem as one line naming the file and the field.
"""

from __future__ import annotations

import importlib.resources
import re
import types
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gputopo.mocks import mig as mig_tables

MIB = 1024 * 1024

ARCHITECTURES = {
    "kepler": 2,
    "maxwell": 3,
    "pascal": 4,
    "volta": 5,
    "turing": 6,
    "ampere": 7,
    "ada": 8,
    "hopper": 9,
    "blackwell": 10,
}

# NVLink generation as written in a profile -> NVML's nvmlNvlinkVersion_t value.
NVLINK_VERSIONS = {"1": 1, "2": 2, "2.2": 3, "3": 4, "3.1": 5, "4": 6, "5": 7, "6": 8}

FABRIC_STATES = {"not_supported": 0, "not_started": 1, "in_progress": 2, "completed": 3}

NVIDIA_VENDOR = 0x10DE
MELLANOX_VENDOR = 0x15B3


class ProfileError(ValueError):
    """A machine profile cannot be loaded; the message is one line naming file and field."""


def nvml_error_names() -> tuple[str, ...]:
    """Error names a profile may use: the real pynvml's NVML_ERROR_* without the prefix."""
    import pynvml

    return tuple(
        sorted(
            name.removeprefix("NVML_ERROR_")
            for name in dir(pynvml)
            if name.startswith("NVML_ERROR_")
        )
    )


def nvml_function_names() -> frozenset[str]:
    import pynvml

    return frozenset(
        n for n in dir(pynvml) if n.startswith("nvml") and callable(getattr(pynvml, n))
    )


@dataclass(frozen=True)
class InjectedError:
    """An NVML error a call raises: always (``times`` None) or for the next ``times`` calls."""

    error: str  # NVML error name without prefix, e.g. "NOT_SUPPORTED"
    times: int | None = None


@dataclass(frozen=True)
class NodeSpec:
    hostname: str
    product_name: str | None = None
    vendor: str | None = None


@dataclass(frozen=True)
class DriverSpec:
    version: str = "550.54.15"
    cuda_version: int = 12040
    nvml_version: str = "12.550.54.15"


@dataclass(frozen=True)
class NvmlSpec:
    load_error: str | None = None
    init_error: str | None = None
    errors: Mapping[str, InjectedError] = field(default_factory=dict)


@dataclass(frozen=True)
class NumaNodeSpec:
    id: int
    cpus: tuple[int, ...]
    memory_mib: int
    distances: tuple[int, ...]

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


@dataclass(frozen=True)
class PcieSwitchSpec:
    name: str
    upstream_bus_id: str  # the switch's upstream port
    parent: str  # a root-port bus id or another switch's name
    device_id: int = 0xC010
    ports: Mapping[str, str] = field(default_factory=dict)  # child bus id -> downstream port


@dataclass(frozen=True)
class PcieLinkSpec:
    gen: int
    gen_max: int
    width: int
    width_max: int


@dataclass(frozen=True)
class NvlinkSpec:
    link: int
    version: int  # NVML nvmlNvlinkVersion_t value
    remote_type: str  # "gpu" or "nvswitch"
    remote_bus_id: str
    active: bool = True


@dataclass(frozen=True)
class ComputeInstanceSpec:
    id: int
    slices: int
    placement_start: int


@dataclass(frozen=True)
class GpuInstanceSpec:
    id: int
    profile: str
    placement_start: int
    compute_instances: tuple[ComputeInstanceSpec, ...]


@dataclass(frozen=True)
class MigSpec:
    capable: bool = False
    enabled: bool = False
    pending: bool = False
    table: str | None = None
    instances: tuple[GpuInstanceSpec, ...] = ()

    def mig_table(self) -> mig_tables.MigTable | None:
        return mig_tables.TABLES.get(self.table) if self.table else None


@dataclass(frozen=True)
class FabricSpec:
    cluster_uuid: str
    clique_id: int
    state: str = "completed"
    status: str = "SUCCESS"  # or an NVML error name


@dataclass(frozen=True)
class EccSpec:
    volatile_corrected: int = 0
    volatile_uncorrected: int = 0
    aggregate_corrected: int = 0
    aggregate_uncorrected: int = 0


@dataclass(frozen=True)
class RetiredPagesSpec:
    single_bit: tuple[int, ...] = ()
    double_bit: tuple[int, ...] = ()
    pending: bool = False


@dataclass(frozen=True)
class RemappedRowsSpec:
    correctable: int = 0
    uncorrectable: int = 0
    pending: bool = False
    failure: bool = False


@dataclass(frozen=True)
class HealthSpec:
    ecc: EccSpec | None = field(default_factory=EccSpec)
    retired_pages: RetiredPagesSpec | None = None
    remapped_rows: RemappedRowsSpec | None = None
    throttle_reasons: int = 0
    xid_events: tuple[int, ...] = ()


@dataclass(frozen=True)
class MetricsSpec:
    """Readings; a sequence advances one step per call and then repeats its last value."""

    utilization_gpu: tuple[int, ...] = (0,)
    utilization_memory: tuple[int, ...] = (0,)
    memory_used_mib: tuple[int, ...] = (0,)
    temperature_c: tuple[int, ...] = (35,)
    power_w: tuple[float, ...] = (70.0,)
    power_limit_w: float = 300.0


@dataclass(frozen=True)
class GpuSpec:
    bus_id: str  # normalised "0000:18:00.0"
    name: str
    uuid: str
    serial: str
    memory_mib: int
    compute_capability: tuple[int, int]
    architecture: str
    pci_device_id: int
    pci_subsystem_id: int
    pcie: PcieLinkSpec
    numa_node: int
    memory_numa_node: int | None = None
    parent: str | None = None
    nvlinks: tuple[NvlinkSpec, ...] | None = None  # None: no NVLink hardware
    mig: MigSpec = field(default_factory=MigSpec)
    fabric: FabricSpec | None = None
    health: HealthSpec = field(default_factory=HealthSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    errors: Mapping[str, InjectedError] = field(default_factory=dict)
    lost: bool = False
    hidden_from_nvml: bool = False
    sysfs_driver: str | None = "nvidia"
    vga: bool = False  # PCI class 0x030000 instead of 0x030200


@dataclass(frozen=True)
class NicSpec:
    name: str  # ibdev, e.g. "mlx5_0"
    bus_id: str
    netdevs: tuple[str, ...]
    link_layer: str  # "infiniband" or "ethernet"
    numa_node: int
    parent: str | None = None
    pci_device_id: int = 0x1021
    pcie: PcieLinkSpec = PcieLinkSpec(5, 5, 16, 16)
    sysfs_driver: str = "mlx5_core"


@dataclass(frozen=True)
class NvswitchSpec:
    bus_id: str
    numa_node: int
    parent: str | None = None
    pci_device_id: int = 0x22A3
    in_sysfs: bool = True


@dataclass(frozen=True)
class MachineProfile:
    name: str
    source: str
    node: NodeSpec
    description: str = ""
    driver: DriverSpec = field(default_factory=DriverSpec)
    nvml: NvmlSpec = field(default_factory=NvmlSpec)
    numa_nodes: tuple[NumaNodeSpec, ...] = ()
    switches: tuple[PcieSwitchSpec, ...] = ()
    gpus: tuple[GpuSpec, ...] = ()  # sorted by bus id
    nics: tuple[NicSpec, ...] = ()
    nvswitches: tuple[NvswitchSpec, ...] = ()

    def nvml_gpus(self) -> tuple[GpuSpec, ...]:
        """GPUs NVML enumerates, in NVML index order (ascending PCI bus id)."""
        return tuple(gpu for gpu in self.gpus if not gpu.hidden_from_nvml)

    def gpu_by_bus_id(self, bus_id: str) -> GpuSpec | None:
        for gpu in self.gpus:
            if gpu.bus_id == bus_id:
                return gpu
        return None

    def numa_node(self, node_id: int) -> NumaNodeSpec | None:
        for node in self.numa_nodes:
            if node.id == node_id:
                return node
        return None

    def switch(self, name: str) -> PcieSwitchSpec | None:
        for switch in self.switches:
            if switch.name == name:
                return switch
        return None

    def endpoints(self) -> tuple[tuple[str, str | None], ...]:
        """(bus id, parent) of every PCI endpoint: GPUs, NICs and NVSwitches in sysfs."""
        found: list[tuple[str, str | None]] = [(g.bus_id, g.parent) for g in self.gpus]
        found += [(n.bus_id, n.parent) for n in self.nics]
        found += [(s.bus_id, s.parent) for s in self.nvswitches if s.in_sysfs]
        return tuple(sorted(found))

    def pci_path(self, bus_id: str) -> tuple[str, ...]:
        """Bus ids from the root port down to and including the device (sysfs nesting)."""
        parent = dict(self.endpoints()).get(bus_id)
        if bus_id not in dict(self.endpoints()):
            raise KeyError(bus_id)
        if parent is None:
            return (generated_root_port(bus_id), bus_id)
        return (*self._bridge_path(bus_id, parent), bus_id)

    def _bridge_path(self, child: str, parent: str) -> tuple[str, ...]:
        switch = self.switch(parent)
        if switch is None:  # a root port
            return (parent,)
        downstream = self.downstream_port(switch, child)
        return (
            *self._bridge_path(switch.upstream_bus_id, switch.parent),
            switch.upstream_bus_id,
            downstream,
        )

    def switch_children(self, switch: PcieSwitchSpec) -> tuple[str, ...]:
        children = [bus for bus, parent in self.endpoints() if parent == switch.name]
        children += [s.upstream_bus_id for s in self.switches if s.parent == switch.name]
        return tuple(sorted(children))

    def downstream_port(self, switch: PcieSwitchSpec, child: str) -> str:
        """The switch's downstream port above ``child``: bus upstream+1, device = child's rank."""
        if child in switch.ports:
            return switch.ports[child]
        domain, bus, _ = split_bus_id(switch.upstream_bus_id)
        taken = {p for c, p in switch.ports.items() if c in self.switch_children(switch)}
        free = (f"{domain:04x}:{bus + 1:02x}:{n:02x}.0" for n in range(256))
        generated = [port for port in free if port not in taken]
        implicit = [c for c in self.switch_children(switch) if c not in switch.ports]
        return generated[implicit.index(child)]

    def switch_chain(self, bus_id: str) -> tuple[str, ...]:
        """Names of the PCIe switches above a device, nearest first."""
        parent = dict(self.endpoints())[bus_id]
        chain: list[str] = []
        while parent is not None:
            switch = self.switch(parent)
            if switch is None:
                break
            chain.append(switch.name)
            parent = switch.parent
        return tuple(chain)

    def host_bridge(self, bus_id: str) -> str:
        """``pci0000:15``: the root complex above a device."""
        domain, bus, _ = split_bus_id(self.pci_path(bus_id)[0])
        return f"pci{domain:04x}:{bus:02x}"


_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


def normalise_bus_id(text: str) -> str | None:
    match = _BUS_ID.match(text.strip())
    if match is None:
        return None
    domain = int(match.group(1) or "0", 16)
    if domain > 0xFFFF:
        return None
    return f"{domain:04x}:{match.group(2).lower()}:{match.group(3).lower()}.{match.group(4)}"


def split_bus_id(bus_id: str) -> tuple[int, int, int]:
    """(domain, bus, device) of a normalised bus id."""
    domain, bus, rest = bus_id.split(":")
    return int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)


def generated_root_port(bus_id: str) -> str:
    """Root port above a device that names no parent: device 01.0 on the bus below it."""
    domain, bus, _ = split_bus_id(bus_id)
    return f"{domain:04x}:{max(bus - 1, 0):02x}:01.0"


def parse_cpulist(text: str) -> tuple[int, ...] | None:
    """``0-55,112-167`` -> cpu ids; None if malformed."""
    text = text.strip()
    if not text:
        return ()
    cpus: list[int] = []
    for part in text.split(","):
        bounds = part.strip().split("-")
        if not all(b.isdigit() for b in bounds) or len(bounds) > 2:
            return None
        low, high = int(bounds[0]), int(bounds[-1])
        if high < low:
            return None
        cpus.extend(range(low, high + 1))
    return tuple(sorted(set(cpus)))


def format_cpulist(cpus: Sequence[int]) -> str:
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif prev is not None and cpu == prev + 1:
            prev = cpu
        else:
            ranges.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = cpu
    if start is not None:
        ranges.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(ranges)


def builtin_profile_names() -> tuple[str, ...]:
    folder = importlib.resources.files("gputopo.mocks") / "profiles"
    return tuple(
        sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    )


def load_profile(name_or_path: str | Path) -> MachineProfile:
    """Load a built-in profile by name (``dgx-h100``) or a YAML file by path."""
    document, source, name = _read_with_bases(str(name_or_path), None, ())
    return parse_profile(document, source=source, name=name)


def parse_profile(
    document: Mapping[str, Any], *, source: str = "<profile>", name: str = ""
) -> MachineProfile:
    """Validate an already-merged profile mapping (``base:`` is not resolved here)."""
    return _Parser(source).profile(document, name or "profile")


# --------------------------------------------------------------------------- reading + bases


def _locate(reference: str, relative_to: Path | None) -> tuple[Path | None, str]:
    """(path or None for built-in, display source) for a profile reference."""
    looks_like_path = "/" in reference or reference.endswith((".yaml", ".yml"))
    if not looks_like_path:
        if reference in builtin_profile_names():
            return None, reference
        raise ProfileError(
            f"unknown profile {reference!r}: not a file path and not a built-in profile "
            f"(built-in: {', '.join(builtin_profile_names())})"
        )
    path = Path(reference)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    return path, str(path)


def _read_with_bases(
    reference: str, relative_to: Path | None, seen: tuple[str, ...]
) -> tuple[dict[str, Any], str, str]:
    path, source = _locate(reference, relative_to)
    if source in seen:
        raise ProfileError(f"{source}: base: inheritance cycle {' -> '.join((*seen, source))}")
    if path is None:
        text = (
            importlib.resources.files("gputopo.mocks") / "profiles" / f"{reference}.yaml"
        ).read_text()
        name = reference
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ProfileError(
                f"{source}: cannot read profile: {error.strerror or error}"
            ) from None
        name = path.name.removesuffix(".yaml").removesuffix(".yml")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ProfileError(f"{source}: malformed YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ProfileError(
            f"{source}: a profile must be a YAML mapping, got {type(document).__name__}"
        )
    base = document.pop("base", None)
    if base is None:
        return document, source, name
    if not isinstance(base, str):
        raise ProfileError(f"{source}: base: expected a profile name or path, got {base!r}")
    base_doc, _, _ = _read_with_bases(base, path.parent if path else None, (*seen, source))
    return _merge(base_doc, document, source, "profile"), source, name


def _merge(base: Any, override: Any, source: str, where: str) -> Any:
    if isinstance(base, list) and isinstance(override, dict) and where == "profile.gpus":
        return _merge_gpus(base, override, source)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, source, f"{where}.{key}")
            else:
                merged[key] = value
        return merged
    return override


def _merge_gpus(base: list[Any], override: dict[Any, Any], source: str) -> list[Any]:
    merged = list(base)
    for key, value in override.items():
        bus_id = normalise_bus_id(str(key))
        matches = [
            i
            for i, gpu in enumerate(merged)
            if isinstance(gpu, dict) and normalise_bus_id(str(gpu.get("bus_id", ""))) == bus_id
        ]
        if bus_id is None or not matches:
            raise ProfileError(f"{source}: gpus.{key}: no GPU with that bus id in the base profile")
        if not isinstance(value, dict):
            raise ProfileError(f"{source}: gpus.{key}: expected a mapping of overrides")
        merged[matches[0]] = _merge(merged[matches[0]], value, source, f"gpus.{key}")
    return merged


# --------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self._errors = nvml_error_names()
        self._functions = nvml_function_names()

    def fail(self, where: str, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: {where}: {message}")

    # -- primitives
    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        return value

    def known(self, data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})"
            )

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        where: str,
        default: int | None = None,
        minimum: int = 0,
    ) -> int:
        value = data.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "required field is missing")
        if isinstance(value, str) and value.lower().startswith("0x"):
            try:
                value = int(value, 16)
            except ValueError:
                raise self.fail(f"{where}.{key}", f"expected an integer, got {value!r}") from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(f"{where}.{key}", f"expected an integer >= {minimum}, got {value}")
        return value

    def optional_int(self, data: Mapping[str, Any], key: str, where: str) -> int | None:
        return None if data.get(key) is None else self.integer(data, key, where)

    def number(self, value: Any, where: str) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise self.fail(where, f"expected a non-negative number, got {value!r}")
        return float(value)

    def text(
        self, data: Mapping[str, Any], key: str, where: str, default: str | None = None
    ) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "required field is missing")
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", f"expected a non-empty string, got {value!r}")
        return value

    def optional_text(self, data: Mapping[str, Any], key: str, where: str) -> str | None:
        return None if data.get(key) is None else self.text(data, key, where)

    def flag(self, data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"expected true or false, got {value!r}")
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def bus_id(self, data: Mapping[str, Any], key: str, where: str) -> str:
        raw = self.text(data, key, where)
        normal = normalise_bus_id(raw)
        if normal is None:
            raise self.fail(
                f"{where}.{key}", f"expected a PCI bus id like 0000:18:00.0, got {raw!r}"
            )
        return normal

    def error_name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or value.removeprefix("NVML_ERROR_") not in self._errors:
            raise self.fail(
                where, f"{value!r} is not an NVML error name (e.g. NOT_SUPPORTED, GPU_IS_LOST)"
            )
        return value.removeprefix("NVML_ERROR_")

    def series(self, value: Any, where: str, *, floats: bool = False) -> tuple[Any, ...]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise self.fail(where, "expected a value or a non-empty list of values")
        result: list[Any] = []
        for i, item in enumerate(values):
            number = self.number(item, f"{where}[{i}]" if isinstance(value, list) else where)
            result.append(number if floats else int(number))
        return tuple(result)

    def errors(self, value: Any, where: str) -> Mapping[str, InjectedError]:
        result: dict[str, InjectedError] = {}
        for function, spec in self.mapping(value, where).items():
            at = f"{where}.{function}"
            if function not in self._functions:
                raise self.fail(at, "not a function of the real pynvml module")
            if isinstance(spec, dict):
                self.known(spec, at, {"error", "times"})
                times = self.integer(spec, "times", at, minimum=1)
                result[function] = InjectedError(
                    self.error_name(spec.get("error"), f"{at}.error"), times
                )
            else:
                result[function] = InjectedError(self.error_name(spec, at))
        return types.MappingProxyType(result)

    # -- sections
    def profile(self, doc: Mapping[str, Any], name: str) -> MachineProfile:
        self.known(
            doc,
            "profile",
            {
                "schema",
                "description",
                "node",
                "driver",
                "nvml",
                "numa",
                "pci",
                "gpu_defaults",
                "gpus",
                "nics",
                "nvswitches",
            },
        )
        schema = doc.get("schema", 1)
        if schema != 1:
            raise self.fail(
                "schema", f"profile schema {schema!r} is not supported (this build reads 1)"
            )
        node_doc = self.mapping(doc.get("node"), "node")
        self.known(node_doc, "node", {"hostname", "product_name", "vendor"})
        node = NodeSpec(
            hostname=self.text(node_doc, "hostname", "node", default=name),
            product_name=self.optional_text(node_doc, "product_name", "node"),
            vendor=self.optional_text(node_doc, "vendor", "node"),
        )
        driver_doc = self.mapping(doc.get("driver"), "driver")
        self.known(driver_doc, "driver", {"version", "cuda_version", "nvml_version"})
        defaults = DriverSpec()
        driver = DriverSpec(
            version=self.text(driver_doc, "version", "driver", defaults.version),
            cuda_version=self.integer(driver_doc, "cuda_version", "driver", defaults.cuda_version),
            nvml_version=self.text(driver_doc, "nvml_version", "driver", defaults.nvml_version),
        )
        nvml_doc = self.mapping(doc.get("nvml"), "nvml")
        self.known(nvml_doc, "nvml", {"load_error", "init_error", "errors"})
        load_error = nvml_doc.get("load_error")
        init_error = nvml_doc.get("init_error")
        nvml = NvmlSpec(
            load_error=None
            if load_error is None
            else self.error_name(load_error, "nvml.load_error"),
            init_error=None
            if init_error is None
            else self.error_name(init_error, "nvml.init_error"),
            errors=self.errors(nvml_doc.get("errors"), "nvml.errors"),
        )
        numa_nodes = self.numa(doc.get("numa"))
        pci_doc = self.mapping(doc.get("pci"), "pci")
        self.known(pci_doc, "pci", {"switches"})
        switches = tuple(
            self.switch(s, f"pci.switches[{i}]")
            for i, s in enumerate(self.items(pci_doc.get("switches"), "pci.switches"))
        )
        gpu_defaults = self.mapping(doc.get("gpu_defaults"), "gpu_defaults")
        raw_gpus = self.items(doc.get("gpus"), "gpus")
        gpus = [
            self.gpu(
                _merge(gpu_defaults, self.mapping(g, f"gpus[{i}]"), self.source, "gpu"),
                f"gpus[{i}]",
                node.hostname,
                numa_nodes,
            )
            for i, g in enumerate(raw_gpus)
        ]
        nics = tuple(
            self.nic(n, f"nics[{i}]", numa_nodes)
            for i, n in enumerate(self.items(doc.get("nics"), "nics"))
        )
        nvswitches = tuple(
            self.nvswitch(s, f"nvswitches[{i}]", numa_nodes)
            for i, s in enumerate(self.items(doc.get("nvswitches"), "nvswitches"))
        )
        gpus = self.expand_nvlinks(raw_gpus, gpu_defaults, gpus, nvswitches)
        profile = MachineProfile(
            name=name,
            source=self.source,
            description=str(doc.get("description", "")),
            node=node,
            driver=driver,
            nvml=nvml,
            numa_nodes=numa_nodes,
            switches=switches,
            gpus=tuple(sorted(gpus, key=lambda g: g.bus_id)),
            nics=nics,
            nvswitches=nvswitches,
        )
        self.check_references(profile)
        return profile

    def numa(self, value: Any) -> tuple[NumaNodeSpec, ...]:
        entries = self.items(value, "numa")
        if not entries:
            entries = [{"id": 0, "cpus": "0-7", "memory_mib": 65536}]
        nodes: list[NumaNodeSpec] = []
        for i, raw in enumerate(entries):
            where = f"numa[{i}]"
            entry = self.mapping(raw, where)
            self.known(entry, where, {"id", "cpus", "memory_mib", "distances"})
            cpus_text = entry.get("cpus", "")
            cpus = parse_cpulist(str(cpus_text)) if isinstance(cpus_text, str | int) else None
            if cpus is None:
                raise self.fail(
                    f"{where}.cpus", f"expected a cpulist like '0-55,112-167', got {cpus_text!r}"
                )
            distances_raw = entry.get("distances")
            if distances_raw is None:
                distances: tuple[int, ...] = ()
            else:
                distances = tuple(
                    self.integer({"d": d}, "d", f"{where}.distances[{j}]")
                    for j, d in enumerate(self.items(distances_raw, f"{where}.distances"))
                )
            nodes.append(
                NumaNodeSpec(
                    self.integer(entry, "id", where, default=i),
                    cpus,
                    self.integer(entry, "memory_mib", where, default=65536),
                    distances,
                )
            )
        ids = [n.id for n in nodes]
        if len(set(ids)) != len(ids):
            raise self.fail("numa", f"duplicate NUMA node ids {ids}")
        seen: set[int] = set()
        for node in nodes:
            if seen & set(node.cpus):
                raise self.fail(f"numa[{ids.index(node.id)}].cpus", "CPU listed on two NUMA nodes")
            seen |= set(node.cpus)
        result = []
        for i, node in enumerate(nodes):
            distances = node.distances or tuple(10 if j == i else 21 for j in range(len(nodes)))
            if len(distances) != len(nodes) or distances[i] != 10:
                raise self.fail(
                    f"numa[{i}].distances",
                    f"expected {len(nodes)} distances with 10 for the node itself, "
                    f"got {list(distances)}",
                )
            result.append(NumaNodeSpec(node.id, node.cpus, node.memory_mib, distances))
        return tuple(result)

    def switch(self, raw: Any, where: str) -> PcieSwitchSpec:
        entry = self.mapping(raw, where)
        self.known(entry, where, {"name", "upstream", "parent", "device_id", "ports"})
        parent = self.text(entry, "parent", where)
        ports: dict[str, str] = {}
        for child, port in self.mapping(entry.get("ports"), f"{where}.ports").items():
            pair = {"child": str(child), "port": port}
            ports[self.bus_id(pair, "child", f"{where}.ports")] = self.bus_id(
                pair, "port", f"{where}.ports"
            )
        return PcieSwitchSpec(
            name=self.text(entry, "name", where),
            upstream_bus_id=self.bus_id(entry, "upstream", where),
            parent=normalise_bus_id(parent) or parent,
            device_id=self.integer(entry, "device_id", where, default=0xC010),
            ports=types.MappingProxyType(ports),
        )

    def pcie(self, value: Any, where: str, default: PcieLinkSpec) -> PcieLinkSpec:
        entry = self.mapping(value, where)
        self.known(entry, where, {"gen", "gen_max", "width", "width_max"})
        gen = self.integer(entry, "gen", where, default.gen, minimum=1)
        width = self.integer(entry, "width", where, default.width, minimum=1)
        return PcieLinkSpec(
            gen=gen,
            gen_max=self.integer(entry, "gen_max", where, max(gen, default.gen_max), minimum=gen),
            width=width,
            width_max=self.integer(
                entry, "width_max", where, max(width, default.width_max), minimum=width
            ),
        )

    def endpoint_numa(
        self, entry: Mapping[str, Any], where: str, numa: tuple[NumaNodeSpec, ...]
    ) -> int:
        node = self.integer(
            entry, "numa_node", where, default=numa[0].id if len(numa) == 1 else None
        )
        if all(n.id != node for n in numa):
            raise self.fail(f"{where}.numa_node", f"NUMA node {node} is not declared under numa")
        return node

    def parent(self, entry: Mapping[str, Any], where: str) -> str | None:
        parent = self.optional_text(entry, "parent", where)
        return None if parent is None else (normalise_bus_id(parent) or parent)

    def gpu(
        self, entry: dict[str, Any], where: str, hostname: str, numa: tuple[NumaNodeSpec, ...]
    ) -> GpuSpec:
        self.known(
            entry,
            where,
            {
                "bus_id",
                "name",
                "uuid",
                "serial",
                "memory_mib",
                "compute_capability",
                "architecture",
                "pci_device_id",
                "pci_subsystem_id",
                "pcie",
                "numa_node",
                "memory_numa_node",
                "parent",
                "nvlink",
                "mig",
                "fabric",
                "health",
                "metrics",
                "errors",
                "lost",
                "hidden_from_nvml",
                "sysfs_driver",
                "vga",
            },
        )
        bus_id = self.bus_id(entry, "bus_id", where)
        name = self.text(entry, "name", where)
        cc_raw = str(entry.get("compute_capability", ""))
        cc_match = re.fullmatch(r"(\d+)\.(\d+)", cc_raw)
        if cc_match is None:
            raise self.fail(
                f"{where}.compute_capability", f"expected MAJOR.MINOR like '9.0', got {cc_raw!r}"
            )
        arch = self.text(entry, "architecture", where)
        if arch not in ARCHITECTURES:
            raise self.fail(
                f"{where}.architecture", f"{arch!r} is not one of {', '.join(ARCHITECTURES)}"
            )
        default_uuid = "GPU-" + str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"gputopo://{hostname}/{bus_id}")
        )
        memory_numa = self.optional_int(entry, "memory_numa_node", where)
        if memory_numa is not None and all(n.id != memory_numa for n in numa):
            raise self.fail(
                f"{where}.memory_numa_node", f"NUMA node {memory_numa} is not declared under numa"
            )
        mig = self.mig(entry.get("mig"), f"{where}.mig", name)
        fabric = self.fabric(entry.get("fabric"), f"{where}.fabric")
        health = self.health(entry.get("health"), f"{where}.health", arch)
        metrics = self.metrics(entry.get("metrics"), f"{where}.metrics")
        sysfs_driver = entry.get("sysfs_driver", "nvidia")
        if sysfs_driver is not None and not isinstance(sysfs_driver, str):
            raise self.fail(
                f"{where}.sysfs_driver", f"expected a driver name or null, got {sysfs_driver!r}"
            )
        return GpuSpec(
            bus_id=bus_id,
            name=name,
            uuid=self.text(entry, "uuid", where, default=default_uuid),
            serial=str(entry.get("serial", f"{1650000000000 + split_bus_id(bus_id)[1]}")),
            memory_mib=self.integer(entry, "memory_mib", where, minimum=1),
            compute_capability=(int(cc_match.group(1)), int(cc_match.group(2))),
            architecture=arch,
            pci_device_id=self.integer(entry, "pci_device_id", where),
            pci_subsystem_id=self.integer(entry, "pci_subsystem_id", where, default=0),
            pcie=self.pcie(entry.get("pcie"), f"{where}.pcie", PcieLinkSpec(4, 4, 16, 16)),
            numa_node=self.endpoint_numa(entry, where, numa),
            memory_numa_node=memory_numa,
            parent=self.parent(entry, where),
            nvlinks=None,  # filled by expand_nvlinks once every GPU's bus id is known
            mig=mig,
            fabric=fabric,
            health=health,
            metrics=metrics,
            errors=self.errors(entry.get("errors"), f"{where}.errors"),
            lost=self.flag(entry, "lost", where, False),
            hidden_from_nvml=self.flag(entry, "hidden_from_nvml", where, False),
            sysfs_driver=sysfs_driver,
            vga=self.flag(entry, "vga", where, False),
        )

    def mig(self, value: Any, where: str, gpu_name: str) -> MigSpec:
        if value is None:
            return MigSpec()
        entry = self.mapping(value, where)
        self.known(entry, where, {"capable", "mode", "pending", "table", "instances"})
        capable = self.flag(entry, "capable", where, True)
        modes = {"enabled": True, "disabled": False}
        mode_text = entry.get("mode", "disabled")
        if mode_text not in modes:
            raise self.fail(f"{where}.mode", f"expected enabled or disabled, got {mode_text!r}")
        pending_text = entry.get("pending", mode_text)
        if pending_text not in modes:
            raise self.fail(
                f"{where}.pending", f"expected enabled or disabled, got {pending_text!r}"
            )
        if not capable:
            if modes[mode_text] or modes[pending_text] or entry.get("instances"):
                raise self.fail(
                    where, "a GPU that is not MIG capable cannot have MIG enabled or instances"
                )
            return MigSpec()
        table_name = entry.get("table", mig_tables.TABLE_FOR_GPU_NAME.get(gpu_name))
        if table_name not in mig_tables.TABLES:
            raise self.fail(
                f"{where}.table",
                f"{table_name!r} is not a MIG table "
                f"(known: {', '.join(mig_tables.TABLES)}); name one for {gpu_name!r}",
            )
        table = mig_tables.TABLES[table_name]
        raw_instances = self.items(entry.get("instances"), f"{where}.instances")
        if raw_instances and not modes[mode_text]:
            raise self.fail(f"{where}.instances", "GPU instances need mode: enabled")
        used: set[int] = set()
        instances: list[GpuInstanceSpec] = []
        for i, raw in enumerate(raw_instances):
            at = f"{where}.instances[{i}]"
            item = {"profile": raw} if isinstance(raw, str) else self.mapping(raw, at)
            self.known(item, at, {"profile", "placement", "id", "compute_instances"})
            profile_name = self.text(item, "profile", at)
            gi_profile = table.by_name(profile_name)
            if gi_profile is None:
                raise self.fail(
                    f"{at}.profile",
                    f"{profile_name!r} is not offered by {table.name} "
                    f"({', '.join(p.name for p in table.profiles)})",
                )
            if item.get("placement") is None:
                free = [
                    s
                    for s in gi_profile.placement_starts
                    if not used & set(range(s, s + gi_profile.placement_size))
                ]
                if not free:
                    raise self.fail(at, f"no free placement left for {profile_name}")
                start = free[0]
            else:
                start = self.integer(item, "placement", at)
                if start not in gi_profile.placement_starts:
                    raise self.fail(
                        f"{at}.placement",
                        f"{profile_name} can start at "
                        f"{list(gi_profile.placement_starts)}, not {start}",
                    )
                if used & set(range(start, start + gi_profile.placement_size)):
                    raise self.fail(
                        f"{at}.placement", f"slices {start}.. overlap another GPU instance"
                    )
            used |= set(range(start, start + gi_profile.placement_size))
            gi_id = self.integer(item, "id", at, default=len(instances) + 1, minimum=0)
            cis = self.compute_instances(
                item.get("compute_instances"), f"{at}.compute_instances", gi_profile
            )
            instances.append(GpuInstanceSpec(gi_id, profile_name, start, cis))
        ids = [gi.id for gi in instances]
        if len(set(ids)) != len(ids):
            raise self.fail(f"{where}.instances", f"duplicate GPU instance ids {ids}")
        if len(instances) > table.max_gpu_instances:
            raise self.fail(
                f"{where}.instances", f"at most {table.max_gpu_instances} GPU instances"
            )
        return MigSpec(True, modes[mode_text], modes[pending_text], table.name, tuple(instances))

    def compute_instances(
        self, value: Any, where: str, gi: mig_tables.GpuInstanceProfile
    ) -> tuple[ComputeInstanceSpec, ...]:
        names = self.items(value, where) if value is not None else [gi.name]
        result: list[ComputeInstanceSpec] = []
        offset = 0
        for i, name in enumerate(names):
            sizes = {
                mig_tables.compute_instance_name(gi, s): s
                for s in mig_tables.compute_instance_sizes(gi.slices)
            }
            if name not in sizes:
                raise self.fail(
                    f"{where}[{i}]",
                    f"{name!r} is not a compute instance of {gi.name} ({', '.join(sizes)})",
                )
            slices = sizes[name]
            if offset + slices > gi.slices:
                raise self.fail(
                    f"{where}[{i}]",
                    f"compute instances need more than the {gi.slices} slices of {gi.name}",
                )
            result.append(ComputeInstanceSpec(i, slices, offset))
            offset += slices
        return tuple(result)

    def fabric(self, value: Any, where: str) -> FabricSpec | None:
        if value is None:
            return None
        entry = self.mapping(value, where)
        self.known(entry, where, {"cluster_uuid", "clique_id", "state", "status"})
        state = entry.get("state", "completed")
        if state not in FABRIC_STATES:
            raise self.fail(f"{where}.state", f"{state!r} is not one of {', '.join(FABRIC_STATES)}")
        status = entry.get("status", "SUCCESS")
        cluster = self.text(
            entry, "cluster_uuid", where, default="00000000-0000-0000-0000-000000000000"
        )
        try:
            uuid.UUID(cluster)
        except ValueError:
            raise self.fail(f"{where}.cluster_uuid", f"expected a UUID, got {cluster!r}") from None
        return FabricSpec(
            cluster_uuid=cluster,
            clique_id=self.integer(entry, "clique_id", where, default=0),
            state=state,
            status="SUCCESS" if status == "SUCCESS" else self.error_name(status, f"{where}.status"),
        )

    def health(self, value: Any, where: str, arch: str) -> HealthSpec:
        entry = self.mapping(value, where)
        self.known(
            entry,
            where,
            {"ecc", "retired_pages", "remapped_rows", "throttle_reasons", "xid_events"},
        )
        generation = ARCHITECTURES[arch]
        ecc: EccSpec | None = EccSpec()
        if "ecc" in entry:
            ecc = (
                None
                if entry["ecc"] is False
                else self.counters(EccSpec, entry["ecc"], f"{where}.ecc")
            )
        retired: RetiredPagesSpec | None = (
            RetiredPagesSpec() if generation < ARCHITECTURES["ampere"] else None
        )
        if "retired_pages" in entry:
            raw = entry["retired_pages"]
            if raw is False:
                retired = None
            else:
                pages = self.mapping(raw, f"{where}.retired_pages")
                self.known(pages, f"{where}.retired_pages", {"single_bit", "double_bit", "pending"})
                retired = RetiredPagesSpec(
                    single_bit=tuple(
                        self.integer({"a": a}, "a", f"{where}.retired_pages.single_bit")
                        for a in self.items(
                            pages.get("single_bit"), f"{where}.retired_pages.single_bit"
                        )
                    ),
                    double_bit=tuple(
                        self.integer({"a": a}, "a", f"{where}.retired_pages.double_bit")
                        for a in self.items(
                            pages.get("double_bit"), f"{where}.retired_pages.double_bit"
                        )
                    ),
                    pending=self.flag(pages, "pending", f"{where}.retired_pages", False),
                )
        remapped: RemappedRowsSpec | None = (
            RemappedRowsSpec() if generation >= ARCHITECTURES["ampere"] else None
        )
        if "remapped_rows" in entry:
            raw = entry["remapped_rows"]
            if raw is False:
                remapped = None
            else:
                rows = self.mapping(raw, f"{where}.remapped_rows")
                self.known(
                    rows,
                    f"{where}.remapped_rows",
                    {"correctable", "uncorrectable", "pending", "failure"},
                )
                remapped = RemappedRowsSpec(
                    correctable=self.integer(rows, "correctable", f"{where}.remapped_rows", 0),
                    uncorrectable=self.integer(rows, "uncorrectable", f"{where}.remapped_rows", 0),
                    pending=self.flag(rows, "pending", f"{where}.remapped_rows", False),
                    failure=self.flag(rows, "failure", f"{where}.remapped_rows", False),
                )
        xids = tuple(
            self.integer({"x": x}, "x", f"{where}.xid_events[{i}]", minimum=1)
            for i, x in enumerate(self.items(entry.get("xid_events"), f"{where}.xid_events"))
        )
        return HealthSpec(
            ecc, retired, remapped, self.integer(entry, "throttle_reasons", where, 0), xids
        )

    def counters(self, cls: type[EccSpec], value: Any, where: str) -> EccSpec:
        entry = self.mapping(value, where)
        names = {
            "volatile_corrected",
            "volatile_uncorrected",
            "aggregate_corrected",
            "aggregate_uncorrected",
        }
        self.known(entry, where, names)
        return cls(**{n: self.integer(entry, n, where, 0) for n in sorted(names)})

    def metrics(self, value: Any, where: str) -> MetricsSpec:
        entry = self.mapping(value, where)
        defaults = MetricsSpec()
        self.known(
            entry,
            where,
            {
                "utilization_gpu",
                "utilization_memory",
                "memory_used_mib",
                "temperature_c",
                "power_w",
                "power_limit_w",
            },
        )

        def get(key: str, default: tuple[Any, ...], floats: bool = False) -> tuple[Any, ...]:
            return (
                default
                if key not in entry
                else self.series(entry[key], f"{where}.{key}", floats=floats)
            )

        utilization_gpu = get("utilization_gpu", defaults.utilization_gpu)
        utilization_memory = get("utilization_memory", defaults.utilization_memory)
        for key, values in (
            ("utilization_gpu", utilization_gpu),
            ("utilization_memory", utilization_memory),
        ):
            if any(v > 100 for v in values):
                raise self.fail(
                    f"{where}.{key}", f"utilisation is a percentage 0..100, got {list(values)}"
                )
        return MetricsSpec(
            utilization_gpu=utilization_gpu,
            utilization_memory=utilization_memory,
            memory_used_mib=get("memory_used_mib", defaults.memory_used_mib),
            temperature_c=get("temperature_c", defaults.temperature_c),
            power_w=get("power_w", defaults.power_w, floats=True),
            power_limit_w=self.number(
                entry.get("power_limit_w", defaults.power_limit_w), f"{where}.power_limit_w"
            ),
        )

    def nic(self, raw: Any, where: str, numa: tuple[NumaNodeSpec, ...]) -> NicSpec:
        entry = self.mapping(raw, where)
        self.known(
            entry,
            where,
            {
                "name",
                "bus_id",
                "netdevs",
                "link_layer",
                "numa_node",
                "parent",
                "pci_device_id",
                "pcie",
            },
        )
        link_layer = entry.get("link_layer", "infiniband")
        if link_layer not in ("infiniband", "ethernet"):
            raise self.fail(
                f"{where}.link_layer", f"expected infiniband or ethernet, got {link_layer!r}"
            )
        netdevs = tuple(str(n) for n in self.items(entry.get("netdevs"), f"{where}.netdevs"))
        return NicSpec(
            name=self.text(entry, "name", where),
            bus_id=self.bus_id(entry, "bus_id", where),
            netdevs=netdevs,
            link_layer=link_layer,
            numa_node=self.endpoint_numa(entry, where, numa),
            parent=self.parent(entry, where),
            pci_device_id=self.integer(entry, "pci_device_id", where, 0x1021),
            pcie=self.pcie(entry.get("pcie"), f"{where}.pcie", PcieLinkSpec(5, 5, 16, 16)),
        )

    def nvswitch(self, raw: Any, where: str, numa: tuple[NumaNodeSpec, ...]) -> NvswitchSpec:
        entry = self.mapping(raw, where)
        self.known(entry, where, {"bus_id", "numa_node", "parent", "pci_device_id", "in_sysfs"})
        return NvswitchSpec(
            bus_id=self.bus_id(entry, "bus_id", where),
            numa_node=self.endpoint_numa(entry, where, numa),
            parent=self.parent(entry, where),
            pci_device_id=self.integer(entry, "pci_device_id", where, 0x22A3),
            in_sysfs=self.flag(entry, "in_sysfs", where, True),
        )

    def nvlink_version(self, value: Any, where: str) -> int:
        key = str(value)
        if key not in NVLINK_VERSIONS:
            raise self.fail(
                where, f"NVLink version {value!r} is not one of {', '.join(NVLINK_VERSIONS)}"
            )
        return NVLINK_VERSIONS[key]

    def expand_nvlinks(
        self,
        raw_gpus: list[Any],
        defaults: dict[str, Any],
        gpus: list[GpuSpec],
        nvswitches: tuple[NvswitchSpec, ...],
    ) -> list[GpuSpec]:
        by_bus = {g.bus_id: g for g in gpus}
        switch_buses = [s.bus_id for s in nvswitches]
        result: list[GpuSpec] = []
        for i, (raw, gpu) in enumerate(zip(raw_gpus, gpus, strict=True)):
            where = f"gpus[{i}].nvlink"
            value = _merge(defaults, raw, self.source, "gpu").get("nvlink")
            if value is None:
                result.append(gpu)
                continue
            entry = self.mapping(value, where)
            self.known(entry, where, {"nvswitch", "links", "version", "down"})
            version = self.nvlink_version(entry.get("version", 4), f"{where}.version")
            down = {
                self.integer({"d": d}, "d", f"{where}.down")
                for d in self.items(entry.get("down"), f"{where}.down")
            }
            links: list[NvlinkSpec] = []
            if self.flag(entry, "nvswitch", where, False):
                count = self.integer(entry, "links", where, minimum=1)
                if not switch_buses:
                    raise self.fail(
                        f"{where}.nvswitch",
                        "nvswitch: true needs at least one entry under nvswitches",
                    )
                for link in range(count):
                    links.append(
                        NvlinkSpec(
                            link,
                            version,
                            "nvswitch",
                            switch_buses[link % len(switch_buses)],
                            link not in down,
                        )
                    )
            else:
                for j, raw_link in enumerate(self.items(entry.get("links"), f"{where}.links")):
                    at = f"{where}.links[{j}]"
                    link_doc = self.mapping(raw_link, at)
                    self.known(link_doc, at, {"peer", "count", "active"})
                    peer = self.bus_id(link_doc, "peer", at)
                    if peer in by_bus:
                        kind = "gpu"
                    elif peer in switch_buses:
                        kind = "nvswitch"
                    else:
                        raise self.fail(
                            f"{at}.peer",
                            f"NVLink peer {peer} is neither a GPU nor an NVSwitch of this profile",
                        )
                    if peer == gpu.bus_id:
                        raise self.fail(f"{at}.peer", "a GPU cannot NVLink to itself")
                    active = self.flag(link_doc, "active", at, True)
                    for _ in range(self.integer(link_doc, "count", at, default=1, minimum=1)):
                        n = len(links)
                        links.append(NvlinkSpec(n, version, kind, peer, active and n not in down))
            if len(links) > 36:
                raise self.fail(
                    where, f"{len(links)} links; NVML allows at most 36 (NVML_NVLINK_MAX_LINKS)"
                )
            result.append(_replace(gpu, nvlinks=tuple(links)))
        # Direct GPU links must be declared from both ends.
        final = {g.bus_id: g for g in result}
        for i, gpu in enumerate(result):
            for peer in {
                link.remote_bus_id for link in gpu.nvlinks or () if link.remote_type == "gpu"
            }:
                mine = sum(1 for link in gpu.nvlinks or () if link.remote_bus_id == peer)
                theirs = sum(
                    1 for link in final[peer].nvlinks or () if link.remote_bus_id == gpu.bus_id
                )
                if mine != theirs:
                    raise self.fail(
                        f"gpus[{i}].nvlink",
                        f"{mine} links to {peer} but that GPU declares {theirs} back",
                    )
        return result

    def check_references(self, profile: MachineProfile) -> None:
        buses = [bus for bus, _ in profile.endpoints()]
        buses += [s.upstream_bus_id for s in profile.switches]
        for switch in profile.switches:
            for child in profile.switch_children(switch):
                buses.append(profile.downstream_port(switch, child))
        duplicates = sorted({b for b in buses if buses.count(b) > 1})
        if duplicates:
            raise self.fail("pci", f"bus id {duplicates[0]} is used by two devices")
        names = [s.name for s in profile.switches]
        if len(set(names)) != len(names):
            raise self.fail("pci.switches", f"duplicate switch names {names}")
        for i, switch in enumerate(profile.switches):
            seen = {switch.name}
            parent = switch.parent
            while profile.switch(parent) is not None:
                if parent in seen:
                    raise self.fail(f"pci.switches[{i}].parent", f"switch cycle through {parent}")
                seen.add(parent)
                parent = profile.switch(parent).parent  # type: ignore[union-attr]
            if normalise_bus_id(parent) is None:
                raise self.fail(
                    f"pci.switches[{i}].parent",
                    f"{parent!r} is neither a switch name nor a root-port bus id",
                )
        for bus, endpoint_parent in profile.endpoints():
            if (
                endpoint_parent is not None
                and profile.switch(endpoint_parent) is None
                and normalise_bus_id(endpoint_parent) is None
            ):
                raise self.fail(
                    f"device {bus}.parent",
                    f"{endpoint_parent!r} is neither a switch name nor a root-port bus id",
                )
        numa_of_bridge: dict[str, tuple[int, str]] = {}
        located = [(g.bus_id, g.numa_node) for g in profile.gpus] + [
            (n.bus_id, n.numa_node) for n in profile.nics
        ]
        located += [(s.bus_id, s.numa_node) for s in profile.nvswitches if s.in_sysfs]
        for bus, node in located:
            bridge = profile.host_bridge(bus)
            previous = numa_of_bridge.setdefault(bridge, (node, bus))
            if previous[0] != node:
                raise self.fail(
                    f"device {bus}.numa_node",
                    f"NUMA node {node}, but {previous[1]} under the same "
                    f"host bridge {bridge} is on NUMA node {previous[0]}",
                )
        uuids = [g.uuid for g in profile.gpus]
        if len(set(uuids)) != len(uuids):
            raise self.fail("gpus", "two GPUs share a uuid")


def _replace(gpu: GpuSpec, **changes: Any) -> GpuSpec:
    import dataclasses

    return dataclasses.replace(gpu, **changes)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
