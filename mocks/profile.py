"""Machine profiles: read and validate the YAML of one GPU machine (format: docs/profiles.md).

A profile becomes a :class:`~gputopo.mocks.spec.MachineProfile`, what the fake ``pynvml`` and the
fake sysfs tree are built from. Loading resolves ``base:`` inheritance, validates everything once
(types, references, MIG placements, NVLink symmetry) and reports the first problem as one line
naming the file and the field.

Why one file over 500 lines: the parser is one pass over one document with one error context
(the source and the field path); each section's checks refer to sections read before it (NUMA
nodes, NVSwitches, bus ids), so splitting it would spread one grammar over several files.

Hostile input ends in one :class:`ProfileError` naming the file, in bounded time and memory
(docs/operations.md, "Limits"): a profile is read through :mod:`gputopo.core.documents` (at most
:data:`MAX_PROFILE_BYTES`, UTF-8, nesting, aliases and numbers bounded), a ``base:`` chain is at
most :data:`MAX_BASE_DEPTH` long, a document holds at most :data:`MAX_PROFILE_VALUES` values once
aliases are expanded, and the device counts are capped (:data:`gputopo.mocks.spec.LIMITS`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
import types
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from gputopo.core import documents
from gputopo.core.decode import DecodeError, decode
from gputopo.core.grammar import GrammarError, normalize_bus_id, parse_cpulist, split_bus_id
from gputopo.mocks import mig as mig_tables
from gputopo.mocks.spec import (
    ARCHITECTURES,
    FABRIC_STATES,
    INT64_MAX,
    LIMITS,
    MAX_NVLINKS,
    ComputeInstanceSpec,
    DriverSpec,
    EccSpec,
    FabricSpec,
    GpuInstanceSpec,
    GpuSpec,
    HealthSpec,
    InjectedError,
    MachineProfile,
    MetricsSpec,
    MigSpec,
    NicSpec,
    NodeSpec,
    NumaNodeSpec,
    NvlinkSpec,
    NvmlSpec,
    NvswitchSpec,
    PcieLinkSpec,
    PcieSwitchSpec,
    RemappedRowsSpec,
    RetiredPagesSpec,
    unsafe_name_reason,
)

# NVLink generation as written in a profile -> NVML's nvmlNvlinkVersion_t value.
NVLINK_VERSIONS = {"1": 1, "2": 2, "2.2": 3, "3": 4, "3.1": 5, "4": 6, "5": 7, "6": 8}


_Section = TypeVar("_Section")

# A real profile is a few KiB (the largest built-in, dgx-a100-mig, is 4.5 KiB; 64 GPUs with
# their NICs about 20 KiB); 256 KiB leaves room for recorded machines and still parses in about
# a second on a busy machine (PyYAML builds every value in Python, about 10 us each), while
# /dev/zero or a 100 MB file is refused after reading 256 KiB.
MAX_PROFILE_BYTES: Final = 256 * 1024
# ``base:`` chains of real profiles are one or two deep; a longer one is a loop of files or a
# hostile chain (``base:`` 1000 deep would otherwise recurse 1000 files deep).
MAX_BASE_DEPTH: Final = 16
# Values in one profile once YAML aliases are expanded: the documents' own bound (5 million) is
# for cluster files; a profile at the device caps holds a few thousand, and the parser walks
# this many in about a second.
MAX_PROFILE_VALUES: Final = 100_000
# Entries in any one list (a metrics series, XID events, retired pages, distances): real ones
# hold a few dozen; gpu_defaults copies its lists into every GPU, so this bounds the parser's
# work at 64 GPUs x 1024 values per list.
MAX_LIST_LENGTH: Final = 1024
# Downstream ports a generated switch can give its children: one bus of device numbers.
_SWITCH_PORTS: Final = 256

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def bus_id_or_none(text: str) -> str | None:
    """The normalised PCI bus id, or None where the text may name something else (a switch)."""
    try:
        return normalize_bus_id(text)
    except GrammarError:
        return None


def builtin_profile_names() -> tuple[str, ...]:
    folder = importlib.resources.files("gputopo.mocks") / "profiles"
    return tuple(
        sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    )


def load_profile(name_or_path: str | Path) -> MachineProfile:
    """Load a built-in profile by name (``dgx-h100``) or a YAML file by path."""
    document, source, name = _read_with_bases(str(name_or_path), None, ())
    _check_list_lengths(document, source)
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
    if len(seen) >= MAX_BASE_DEPTH:
        raise ProfileError(
            f"{seen[0]}: base: chain longer than {MAX_BASE_DEPTH} profiles (at {source})"
        )
    try:
        if path is None:
            text = (
                importlib.resources.files("gputopo.mocks") / "profiles" / f"{reference}.yaml"
            ).read_text(encoding="utf-8")
            name = reference
        else:
            text = _read_profile_text(path, source)
            name = path.name.removesuffix(".yaml").removesuffix(".yml")
        document = _parse_yaml(text, source)
        documents.check_bounds(document, source=source, max_nodes=MAX_PROFILE_VALUES)
    except documents.DocumentError as error:
        raise ProfileError(str(error)) from None
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


def _check_list_lengths(document: Any, source: str) -> None:
    """Refuse a list longer than :data:`MAX_LIST_LENGTH` anywhere (iterative: depth is bounded
    already, but a walk needs no stack either way)."""
    pending: list[tuple[Any, str]] = [(document, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            pending += [
                (item, f"{path}.{key}" if path else str(key)) for key, item in value.items()
            ]
        elif isinstance(value, list):
            if len(value) > MAX_LIST_LENGTH:
                raise ProfileError(
                    f"{source}: {path}: {len(value)} entries; a list in a profile holds at most "
                    f"{MAX_LIST_LENGTH}"
                )
            pending += [(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _parse_yaml(text: str, source: str) -> Any:
    """The YAML document, or a ProfileError naming the line; bounds are checked by the caller.

    libyaml's C loader where PyYAML has it: its own nesting limit answers deep input with an
    error where the pure-Python loader overflows Python's stack."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        raise ProfileError(f"{source}: malformed YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit integer: Python's digit limit
        problem = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "integer string conversion" in problem:
            problem = "an integer of more than 4300 digits"
        raise ProfileError(f"{source}: malformed YAML: {problem or type(error).__name__}") from None


def _read_profile_text(path: Path, source: str) -> str:
    """The profile's text, at most :data:`MAX_PROFILE_BYTES` read (``/dev/zero`` included)."""
    try:
        data = documents.read_limited(path, MAX_PROFILE_BYTES)
    except OSError as error:
        raise ProfileError(f"{source}: cannot read profile: {error.strerror or error}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{source}: larger than {MAX_PROFILE_BYTES} bytes, the limit for a profile"
        )
    return documents.decode_utf8(data, source)


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
        bus_id = bus_id_or_none(str(key))
        matches = [
            i
            for i, gpu in enumerate(merged)
            if isinstance(gpu, dict) and bus_id_or_none(str(gpu.get("bus_id", ""))) == bus_id
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
        maximum: int = INT64_MAX,
    ) -> int:
        value = data.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "required field is missing")
        if isinstance(value, str) and value.lower().startswith("0x"):
            if len(value) > 18:  # more than 16 hex digits cannot be an int64
                raise self.fail(f"{where}.{key}", f"integer {_short(value)} is out of range")
            try:
                value = int(value, 16)
            except ValueError:
                raise self.fail(f"{where}.{key}", f"expected an integer, got {value!r}") from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(f"{where}.{key}", f"expected an integer >= {minimum}, got {value}")
        if value > maximum:
            raise self.fail(f"{where}.{key}", f"expected an integer <= {maximum}, got {value}")
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

    def items(self, value: Any, where: str, limit: str | None = None) -> list[Any]:
        """A list; ``limit`` names its cap in :data:`LIMITS` (GPUs, NICs, ...)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        if limit is not None and len(value) > LIMITS[limit]:
            raise self.fail(
                where, f"{len(value)} entries; a profile may declare at most {LIMITS[limit]}"
            )
        return value

    def choice(self, value: Any, where: str, allowed: Mapping[str, Any] | tuple[str, ...]) -> str:
        """One of ``allowed`` (a string: a list or a mapping in the YAML is refused, not hashed)."""
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(where, f"{_short(value)} is not one of {', '.join(allowed)}")
        return value

    def name(self, value: Any, where: str) -> str:
        """A name the fake sysfs tree joins into a path: one safe path component."""
        reason = unsafe_name_reason(value)
        if reason is not None:
            raise self.fail(where, reason)
        return str(value)

    def bus_id(self, data: Mapping[str, Any], key: str, where: str) -> str:
        raw = self.text(data, key, where)
        normal = bus_id_or_none(raw)
        if normal is None:
            raise self.fail(
                f"{where}.{key}", f"expected a PCI bus id like 0000:18:00.0, got {raw!r}"
            )
        return normal

    def cpulist(self, value: Any, where: str) -> tuple[int, ...]:
        if isinstance(value, str | int):  # YAML reads a lone CPU as an integer
            try:
                return parse_cpulist(str(value))
            except GrammarError:
                pass
        raise self.fail(where, f"expected a cpulist like '0-55,112-167', got {value!r}")

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
        self.known(pci_doc, "pci", {"switches", "numa_node_unknown"})
        switches = tuple(
            self.switch(s, f"pci.switches[{i}]")
            for i, s in enumerate(
                self.items(pci_doc.get("switches"), "pci.switches", "pci.switches")
            )
        )
        gpu_defaults = self.mapping(doc.get("gpu_defaults"), "gpu_defaults")
        raw_gpus = self.items(doc.get("gpus"), "gpus", "gpus")
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
            for i, n in enumerate(self.items(doc.get("nics"), "nics", "nics"))
        )
        nvswitches = tuple(
            self.nvswitch(s, f"nvswitches[{i}]", numa_nodes)
            for i, s in enumerate(self.items(doc.get("nvswitches"), "nvswitches", "nvswitches"))
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
            pci_numa_unknown=self.flag(pci_doc, "numa_node_unknown", "pci", False),
        )
        self.check_references(profile)
        return profile

    def numa(self, value: Any) -> tuple[NumaNodeSpec, ...]:
        entries = self.items(value, "numa", "numa")
        if not entries:
            entries = [{"id": 0, "cpus": "0-7", "memory_mib": 65536}]
        nodes: list[NumaNodeSpec] = []
        for i, raw in enumerate(entries):
            where = f"numa[{i}]"
            entry = self.mapping(raw, where)
            self.known(entry, where, {"id", "cpus", "memory_mib", "distances"})
            cpus = self.cpulist(entry.get("cpus", ""), f"{where}.cpus")
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
            parent=bus_id_or_none(parent) or parent,
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
        return None if parent is None else (bus_id_or_none(parent) or parent)

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
        cc_match = re.fullmatch(r"(\d{1,3})\.(\d{1,3})", cc_raw)
        if cc_match is None:
            raise self.fail(
                f"{where}.compute_capability",
                f"expected MAJOR.MINOR like '9.0', got {_short(cc_raw)}",
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
        if sysfs_driver is not None:
            sysfs_driver = self.name(sysfs_driver, f"{where}.sysfs_driver")
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
        if not isinstance(mode_text, str) or mode_text not in modes:
            raise self.fail(
                f"{where}.mode", f"expected enabled or disabled, got {_short(mode_text)}"
            )
        pending_text = entry.get("pending", mode_text)
        if not isinstance(pending_text, str) or pending_text not in modes:
            raise self.fail(
                f"{where}.pending", f"expected enabled or disabled, got {_short(pending_text)}"
            )
        if not capable:
            if modes[mode_text] or modes[pending_text] or entry.get("instances"):
                raise self.fail(
                    where, "a GPU that is not MIG capable cannot have MIG enabled or instances"
                )
            return MigSpec()
        table_name = entry.get("table", mig_tables.TABLE_FOR_GPU_NAME.get(gpu_name))
        if not isinstance(table_name, str) or table_name not in mig_tables.TABLES:
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
            if not isinstance(name, str) or name not in sizes:
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
        state = self.choice(entry.get("state", "completed"), f"{where}.state", FABRIC_STATES)
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
                else self.section(EccSpec, entry["ecc"], f"{where}.ecc")
            )
        retired: RetiredPagesSpec | None = (
            RetiredPagesSpec() if generation < ARCHITECTURES["ampere"] else None
        )
        if "retired_pages" in entry:
            raw = entry["retired_pages"]
            retired = (
                None
                if raw is False
                else self.section(RetiredPagesSpec, raw, f"{where}.retired_pages")
            )
        remapped: RemappedRowsSpec | None = (
            RemappedRowsSpec() if generation >= ARCHITECTURES["ampere"] else None
        )
        if "remapped_rows" in entry:
            raw = entry["remapped_rows"]
            remapped = (
                None
                if raw is False
                else self.section(RemappedRowsSpec, raw, f"{where}.remapped_rows")
            )
        xids = tuple(
            self.integer({"x": x}, "x", f"{where}.xid_events[{i}]", minimum=1)
            for i, x in enumerate(self.items(entry.get("xid_events"), f"{where}.xid_events"))
        )
        return HealthSpec(
            ecc, retired, remapped, self.integer(entry, "throttle_reasons", where, 0), xids
        )

    def section(self, cls: type[_Section], value: Any, where: str) -> _Section:
        """A section whose YAML is exactly its dataclass: decoded from the type hints."""
        try:
            return decode(cls, {} if value is None else value, where, unknown="reject")
        except DecodeError as error:
            raise ProfileError(f"{self.source}: {error}") from None

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
        netdevs = tuple(
            self.name(n, f"{where}.netdevs[{i}]")
            for i, n in enumerate(self.items(entry.get("netdevs"), f"{where}.netdevs", "netdevs"))
        )
        return NicSpec(
            name=self.name(self.text(entry, "name", where), f"{where}.name"),
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
                count = self.integer(entry, "links", where, minimum=1, maximum=MAX_NVLINKS)
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
                    repeat = self.integer(
                        link_doc, "count", at, default=1, minimum=1, maximum=MAX_NVLINKS
                    )
                    for _ in range(repeat):
                        n = len(links)
                        links.append(NvlinkSpec(n, version, kind, peer, active and n not in down))
                    if len(links) > MAX_NVLINKS:
                        break
            if len(links) > MAX_NVLINKS:
                raise self.fail(
                    where,
                    f"{len(links)} links or more; NVML allows at most {MAX_NVLINKS} "
                    "(NVML_NVLINK_MAX_LINKS)",
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
        """Every bus id names one device and every parent exists. A bus id used twice would
        put two devices at one sysfs path (one device's files written over the other's)."""
        buses = [bus for bus, _ in profile.endpoints()]
        buses += [s.upstream_bus_id for s in profile.switches]
        for i, switch in enumerate(profile.switches):
            children = profile.switch_children(switch)
            if len(children) > _SWITCH_PORTS:
                raise self.fail(
                    f"pci.switches[{i}]",
                    f"{len(children)} devices below one switch; at most {_SWITCH_PORTS}",
                )
            for child in children:
                buses.append(profile.downstream_port(switch, child))
        counts = Counter(buses)
        duplicates = sorted(bus for bus, used in counts.items() if used > 1)
        if duplicates:
            raise self.fail("pci", f"bus id {duplicates[0]} is used by two devices")
        endpoints = dict(profile.endpoints())
        for bus, parent in endpoints.items():
            if parent in endpoints:  # a device below another device: a bridge at its path
                raise self.fail(
                    f"device {bus}.parent",
                    f"{parent} is a device of this profile, not a root port or a switch",
                )
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
            if bus_id_or_none(parent) is None:
                raise self.fail(
                    f"pci.switches[{i}].parent",
                    f"{parent!r} is neither a switch name nor a root-port bus id",
                )
        for bus, endpoint_parent in profile.endpoints():
            if (
                endpoint_parent is not None
                and profile.switch(endpoint_parent) is None
                and bus_id_or_none(endpoint_parent) is None
            ):
                raise self.fail(
                    f"device {bus}.parent",
                    f"{endpoint_parent!r} is neither a switch name nor a root-port bus id",
                )
        root_ports = {profile.pci_path(bus)[0] for bus in endpoints}
        taken = sorted(root_ports & set(buses))
        if taken:
            raise self.fail(
                "pci", f"bus id {taken[0]} is both a device and the root port above another"
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
    return dataclasses.replace(gpu, **changes)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut short so an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
