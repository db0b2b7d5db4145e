"""The DRA objects the allocator reads (``resource.k8s.io/v1``), as frozen values.

Field names are those of k8s.io/api/resource/v1 (Kubernetes v1.37): a ResourceClaim's
``spec.devices.requests[]`` hold either ``exactly`` or ``firstAvailable`` (sub-requests),
``spec.devices.constraints[]`` ``matchAttribute``/``distinctAttribute``; a ResourceSlice's
``spec.devices[]`` carry ``attributes``, ``capacity``, ``consumesCounters`` and ``taints``, its
``spec.sharedCounters`` the counter sets; ``status.allocation.devices.results[]`` name
``request``, ``driver``, ``pool`` and ``device``. Values are decoded once, with every error a
one-line :class:`~gputopo.scheduler.errors.SchedulerInputError` naming the object and field.

What the allocator does not implement is kept, not dropped, so that it can refuse by name:
admin access, consumable capacity requests, binding conditions, per-device node selection,
``allowMultipleAllocations`` devices and device configs that need a driver's opinion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.quantity import parse_quantity

API_GROUP: Final = "resource.k8s.io"
API_VERSION: Final = "resource.k8s.io/v1"
# kube-scheduler's limits on ResourceClaims (k8s.io/api/resource/v1 validation)
MAX_REQUESTS: Final = 32
MAX_COUNT: Final = 128  # AllocationResultsMaxSize: devices in one allocation
ALLOCATION_MODES: Final = ("ExactCount", "All")
TAINT_EFFECTS: Final = ("NoSchedule", "NoExecute", "None")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One typed attribute value; exactly one of the four kinds, as the API has it."""

    kind: str  # "int" | "bool" | "string" | "version"
    value: int | bool | str

    def same(self, other: Attribute) -> bool:
        return self.kind == other.kind and self.value == other.value


@dataclass(frozen=True, slots=True)
class DeviceTaint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True, eq=False)
class Device:
    """One device of a pool; ``attributes``/``capacity`` keys are fully qualified.

    Compared and hashed by identity: a slice update builds new devices, so caches keyed by a
    device never answer for its older version."""

    driver: str
    pool: str
    name: str
    attributes: Mapping[str, Attribute]
    capacity: Mapping[str, Fraction]
    consumes: Mapping[str, Mapping[str, int]]  # counter set -> counter -> amount (rounded up)
    taints: tuple[DeviceTaint, ...] = ()
    unsupported: str | None = None  # a feature this device needs that gputopo does not do

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.name)

    def attribute(self, name: str) -> Attribute | None:
        """By qualified name; an unqualified name is in the driver's domain (the API's rule)."""
        return self.attributes.get(qualify(name, self.driver))


@dataclass(frozen=True, slots=True)
class ResourceSlice:
    name: str
    driver: str
    pool: str
    generation: int
    slice_count: int
    node_name: str | None
    devices: tuple[Device, ...]
    counters: Mapping[str, Mapping[str, int]]  # counter set -> counter -> available
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    selectors: tuple[str, ...]  # CEL expressions
    extended_resource_name: str | None = None
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceToleration:
    key: str
    operator: str  # Equal | Exists
    value: str
    effect: str  # "" matches every effect

    def tolerates(self, taint: DeviceTaint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True, slots=True)
class SubRequest:
    """``exactly`` of a request, or one entry of its ``firstAvailable``."""

    name: str  # "<request>" or "<request>/<subrequest>" as allocation results name it
    device_class: str
    selectors: tuple[str, ...]
    mode: str  # ExactCount | All
    count: int
    tolerations: tuple[DeviceToleration, ...] = ()
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    alternatives: tuple[SubRequest, ...]  # one for ``exactly``; firstAvailable's in order


@dataclass(frozen=True, slots=True)
class Constraint:
    requests: tuple[str, ...]  # empty: all requests of the claim
    match_attribute: str | None
    distinct_attribute: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationResult:
    request: str
    driver: str
    pool: str
    device: str

    @property
    def device_key(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.device)

    def wire(self) -> dict[str, str]:
        return {
            "request": self.request,
            "driver": self.driver,
            "pool": self.pool,
            "device": self.device,
        }


@dataclass(frozen=True, slots=True)
class Consumer:
    """One ``status.reservedFor`` entry."""

    resource: str
    name: str
    uid: str
    api_group: str = ""


@dataclass(frozen=True, slots=True)
class ResourceClaim:
    namespace: str
    name: str
    uid: str
    resource_version: str
    requests: tuple[Request, ...]
    constraints: tuple[Constraint, ...]
    allocation: tuple[AllocationResult, ...] | None = None
    allocated_node: str | None = None  # from status.allocation.nodeSelector, when one node
    reserved_for: tuple[Consumer, ...] = ()
    unsupported: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class DeviceTaintRule:
    name: str
    driver: str | None
    pool: str | None
    device: str | None
    taint: DeviceTaint

    def selects(self, device: Device) -> bool:
        return (
            (self.driver is None or self.driver == device.driver)
            and (self.pool is None or self.pool == device.pool)
            and (self.device is None or self.device == device.name)
        )


def qualify(name: str, driver: str) -> str:
    return name if "/" in name else f"{driver}/{name}"


class _Reader:
    """Path-naming accessors for one object: every error names ``Kind ns/name`` and the field."""

    def __init__(self, what: str) -> None:
        self.what = what

    def error(self, path: str, problem: str) -> SchedulerInputError:
        return SchedulerInputError(f"{self.what}: {path}: {problem}")

    def obj(self, parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected an object, got {type(value).__name__}")
        return value

    def seq(self, parent: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {type(value).__name__}")
        return value

    def item(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected an object, got {type(value).__name__}")
        return value

    def text(self, parent: Mapping[str, Any], key: str, path: str, required: bool = False) -> str:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.error(path, "required field is missing")
            return ""
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {type(value).__name__}")
        return value

    def integer(self, parent: Mapping[str, Any], key: str, path: str, default: int) -> int:
        value = parent.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {value!r}")
        return value

    def quantity(self, value: Any, path: str) -> Fraction:
        try:
            return parse_quantity(value)
        except SchedulerInputError as error:
            raise self.error(path, str(error)) from None


def _identity(obj: Mapping[str, Any], kind: str) -> tuple[_Reader, str, str]:
    if not isinstance(obj, Mapping):
        raise SchedulerInputError(f"{kind}: expected an object, got {type(obj).__name__}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise SchedulerInputError(f"{kind}: metadata.name: required field is missing")
    namespace = meta.get("namespace") or ""
    if not isinstance(namespace, str):
        raise SchedulerInputError(f"{kind} {meta['name']}: metadata.namespace: expected a string")
    shown = f"{namespace}/{meta['name']}" if namespace else str(meta["name"])
    return _Reader(f"{kind} {shown}"), namespace, str(meta["name"])


def _attribute(r: _Reader, raw: Any, path: str) -> Attribute:
    value = r.item(raw, path)
    kinds = [k for k in ("int", "bool", "string", "version") if k in value]
    if len(kinds) != 1:
        raise r.error(path, "expected exactly one of int, bool, string, version")
    kind = kinds[0]
    v = value[kind]
    ok = {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "string": isinstance(v, str),
        "version": isinstance(v, str),
    }[kind]
    if not ok:
        raise r.error(f"{path}.{kind}", f"expected a {kind}, got {v!r}")
    return Attribute(kind, v)


def _taints(r: _Reader, raw: Mapping[str, Any], path: str) -> tuple[DeviceTaint, ...]:
    taints = []
    for i, item in enumerate(r.seq(raw, "taints", f"{path}.taints")):
        taint = r.item(item, f"{path}.taints[{i}]")
        effect = r.text(taint, "effect", f"{path}.taints[{i}].effect", required=True)
        if effect not in TAINT_EFFECTS:
            raise r.error(f"{path}.taints[{i}].effect", f"unknown effect {effect!r}")
        taints.append(
            DeviceTaint(
                r.text(taint, "key", f"{path}.taints[{i}].key", required=True),
                r.text(taint, "value", f"{path}.taints[{i}].value"),
                effect,
            )
        )
    return tuple(taints)


def _device(r: _Reader, raw: Any, path: str, driver: str, pool: str) -> Device:
    d = r.item(raw, path)
    name = r.text(d, "name", f"{path}.name", required=True)
    attributes = {
        qualify(str(k), driver): _attribute(r, v, f"{path}.attributes[{k}]")
        for k, v in r.obj(d, "attributes", f"{path}.attributes").items()
    }
    capacity = {}
    for k, v in r.obj(d, "capacity", f"{path}.capacity").items():
        entry = r.item(v, f"{path}.capacity[{k}]")
        capacity[qualify(str(k), driver)] = r.quantity(entry.get("value"), f"{path}.capacity[{k}]")
    consumes: dict[str, dict[str, int]] = {}
    for i, item in enumerate(r.seq(d, "consumesCounters", f"{path}.consumesCounters")):
        c = r.item(item, f"{path}.consumesCounters[{i}]")
        counter_set = r.text(c, "counterSet", f"{path}.consumesCounters[{i}].counterSet", True)
        counters = consumes.setdefault(counter_set, {})
        for k, v in r.obj(c, "counters", f"{path}.consumesCounters[{i}].counters").items():
            entry = r.item(v, f"{path}.consumesCounters[{i}].counters[{k}]")
            counters[str(k)] = math.ceil(r.quantity(entry.get("value"), f"{path}.counters[{k}]"))
    unsupported = None
    if d.get("allowMultipleAllocations"):
        unsupported = "devices with allowMultipleAllocations (consumable capacity)"
    elif d.get("bindingConditions"):
        unsupported = "devices with bindingConditions"
    elif any(k in d for k in ("nodeName", "nodeSelector", "allNodes")):
        unsupported = "per-device node selection"
    return Device(
        driver, pool, name, attributes, capacity, consumes, _taints(r, d, path), unsupported
    )


def parse_resource_slice(obj: Mapping[str, Any]) -> ResourceSlice:
    r, _, name = _identity(obj, "ResourceSlice")
    spec = r.obj(obj, "spec", "spec")
    driver = r.text(spec, "driver", "spec.driver", required=True)
    pool = r.obj(spec, "pool", "spec.pool")
    pool_name = r.text(pool, "name", "spec.pool.name", required=True)
    devices = tuple(
        _device(r, d, f"spec.devices[{i}]", driver, pool_name)
        for i, d in enumerate(r.seq(spec, "devices", "spec.devices"))
    )
    counters: dict[str, dict[str, int]] = {}
    for i, item in enumerate(r.seq(spec, "sharedCounters", "spec.sharedCounters")):
        counter_set = r.item(item, f"spec.sharedCounters[{i}]")
        set_name = r.text(counter_set, "name", f"spec.sharedCounters[{i}].name", required=True)
        values = counters.setdefault(set_name, {})
        for k, v in r.obj(counter_set, "counters", f"spec.sharedCounters[{i}].counters").items():
            entry = r.item(v, f"spec.sharedCounters[{i}].counters[{k}]")
            values[str(k)] = math.floor(
                r.quantity(entry.get("value"), f"spec.sharedCounters[{i}][{k}]")
            )
    node_name = r.text(spec, "nodeName", "spec.nodeName") or None
    unsupported = None
    if node_name is None and not counters:
        unsupported = "ResourceSlices not bound to one node (nodeSelector, allNodes)"
    return ResourceSlice(
        name=name,
        driver=driver,
        pool=pool_name,
        generation=r.integer(pool, "generation", "spec.pool.generation", 0),
        slice_count=r.integer(pool, "resourceSliceCount", "spec.pool.resourceSliceCount", 1),
        node_name=node_name,
        devices=devices,
        counters=counters,
        unsupported=unsupported,
    )


def _selectors(r: _Reader, raw: Mapping[str, Any], path: str) -> tuple[str, ...]:
    expressions = []
    for i, item in enumerate(r.seq(raw, "selectors", f"{path}.selectors")):
        selector = r.item(item, f"{path}.selectors[{i}]")
        cel = r.obj(selector, "cel", f"{path}.selectors[{i}].cel")
        expressions.append(r.text(cel, "expression", f"{path}.selectors[{i}].cel.expression", True))
    return tuple(expressions)


def parse_device_class(obj: Mapping[str, Any]) -> DeviceClass:
    r, _, name = _identity(obj, "DeviceClass")
    spec = r.obj(obj, "spec", "spec")
    return DeviceClass(
        name,
        _selectors(r, spec, "spec"),
        r.text(spec, "extendedResourceName", "spec.extendedResourceName") or None,
    )


def _tolerations(r: _Reader, raw: Mapping[str, Any], path: str) -> tuple[DeviceToleration, ...]:
    result = []
    for i, item in enumerate(r.seq(raw, "tolerations", f"{path}.tolerations")):
        t = r.item(item, f"{path}.tolerations[{i}]")
        operator = r.text(t, "operator", f"{path}.tolerations[{i}].operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            raise r.error(f"{path}.tolerations[{i}].operator", f"unknown operator {operator!r}")
        result.append(
            DeviceToleration(
                r.text(t, "key", f"{path}.tolerations[{i}].key"),
                operator,
                r.text(t, "value", f"{path}.tolerations[{i}].value"),
                r.text(t, "effect", f"{path}.tolerations[{i}].effect"),
            )
        )
    return tuple(result)


def _sub_request(r: _Reader, raw: Mapping[str, Any], path: str, name: str) -> SubRequest:
    mode = r.text(raw, "allocationMode", f"{path}.allocationMode") or "ExactCount"
    if mode not in ALLOCATION_MODES:
        raise r.error(f"{path}.allocationMode", f"unknown allocation mode {mode!r}")
    count = r.integer(raw, "count", f"{path}.count", 1)
    if mode == "ExactCount" and not 1 <= count <= MAX_COUNT:
        raise r.error(f"{path}.count", f"must be between 1 and {MAX_COUNT}, got {count}")
    unsupported = None
    if raw.get("adminAccess"):
        unsupported = "adminAccess requests"
    elif raw.get("capacity"):
        unsupported = "capacity requests (consumable capacity)"
    return SubRequest(
        name=name,
        device_class=r.text(raw, "deviceClassName", f"{path}.deviceClassName", required=True),
        selectors=_selectors(r, raw, path),
        mode=mode,
        count=count,
        tolerations=_tolerations(r, raw, path),
        unsupported=unsupported,
    )


def parse_claim_spec(
    r: _Reader, spec: Mapping[str, Any], path: str
) -> tuple[tuple[Request, ...], tuple[Constraint, ...], str | None]:
    devices = r.obj(spec, "devices", f"{path}.devices")
    requests = []
    raw_requests = r.seq(devices, "requests", f"{path}.devices.requests")
    if len(raw_requests) > MAX_REQUESTS:
        raise r.error(f"{path}.devices.requests", f"at most {MAX_REQUESTS} requests")
    for i, item in enumerate(raw_requests):
        where = f"{path}.devices.requests[{i}]"
        request = r.item(item, where)
        name = r.text(request, "name", f"{where}.name", required=True)
        alternatives: tuple[SubRequest, ...]
        if "exactly" in request:
            exactly = r.obj(request, "exactly", f"{where}.exactly")
            alternatives = (_sub_request(r, exactly, f"{where}.exactly", name),)
        elif "firstAvailable" in request:
            subs = r.seq(request, "firstAvailable", f"{where}.firstAvailable")
            if not subs:
                raise r.error(f"{where}.firstAvailable", "must not be empty")
            found = []
            for j, sub in enumerate(subs):
                at = f"{where}.firstAvailable[{j}]"
                raw_sub = r.item(sub, at)
                sub_name = r.text(raw_sub, "name", f"{at}.name", True)
                found.append(_sub_request(r, raw_sub, at, f"{name}/{sub_name}"))
            alternatives = tuple(found)
        else:
            raise r.error(where, "expected exactly or firstAvailable")
        requests.append(Request(name, alternatives))
    constraints = []
    for i, item in enumerate(r.seq(devices, "constraints", f"{path}.devices.constraints")):
        where = f"{path}.devices.constraints[{i}]"
        c = r.item(item, where)
        names = r.seq(c, "requests", f"{where}.requests")
        if not all(isinstance(n, str) for n in names):
            raise r.error(f"{where}.requests", "expected a list of request names")
        constraints.append(
            Constraint(
                tuple(names),
                r.text(c, "matchAttribute", f"{where}.matchAttribute") or None,
                r.text(c, "distinctAttribute", f"{where}.distinctAttribute") or None,
            )
        )
    unsupported = None
    if r.seq(devices, "config", f"{path}.devices.config"):
        unsupported = None  # opaque config goes to the driver; allocation does not read it
    return tuple(requests), tuple(constraints), unsupported


def parse_resource_claim(obj: Mapping[str, Any]) -> ResourceClaim:
    r, namespace, name = _identity(obj, "ResourceClaim")
    meta = r.obj(obj, "metadata", "metadata")
    requests, constraints, unsupported = parse_claim_spec(r, r.obj(obj, "spec", "spec"), "spec")
    status = r.obj(obj, "status", "status")
    allocation = None
    allocated_node = None
    if "allocation" in status:
        raw_allocation = r.obj(status, "allocation", "status.allocation")
        results = []
        raw_devices = r.obj(raw_allocation, "devices", "status.allocation.devices")
        for i, item in enumerate(
            r.seq(raw_devices, "results", "status.allocation.devices.results")
        ):
            where = f"status.allocation.devices.results[{i}]"
            res = r.item(item, where)
            results.append(
                AllocationResult(
                    r.text(res, "request", f"{where}.request", True),
                    r.text(res, "driver", f"{where}.driver", True),
                    r.text(res, "pool", f"{where}.pool", True),
                    r.text(res, "device", f"{where}.device", True),
                )
            )
        allocation = tuple(results)
        allocated_node = _selector_node(raw_allocation.get("nodeSelector"))
    reserved = []
    for i, item in enumerate(r.seq(status, "reservedFor", "status.reservedFor")):
        c = r.item(item, f"status.reservedFor[{i}]")
        reserved.append(
            Consumer(
                r.text(c, "resource", f"status.reservedFor[{i}].resource"),
                r.text(c, "name", f"status.reservedFor[{i}].name"),
                r.text(c, "uid", f"status.reservedFor[{i}].uid"),
                r.text(c, "apiGroup", f"status.reservedFor[{i}].apiGroup"),
            )
        )
    return ResourceClaim(
        namespace=namespace,
        name=name,
        uid=r.text(meta, "uid", "metadata.uid"),
        resource_version=r.text(meta, "resourceVersion", "metadata.resourceVersion"),
        requests=requests,
        constraints=constraints,
        allocation=allocation,
        allocated_node=allocated_node,
        reserved_for=tuple(reserved),
        unsupported=unsupported,
        raw=obj,
    )


def _selector_node(selector: Any) -> str | None:
    """The node an allocation's nodeSelector pins, when it is the one-node form we write."""
    if not isinstance(selector, Mapping):
        return None
    terms = selector.get("nodeSelectorTerms")
    if not isinstance(terms, list) or len(terms) != 1 or not isinstance(terms[0], Mapping):
        return None
    for key in ("matchFields", "matchExpressions"):
        for expression in terms[0].get(key) or []:
            if (
                isinstance(expression, Mapping)
                and expression.get("key") in ("metadata.name", "kubernetes.io/hostname")
                and expression.get("operator") == "In"
                and isinstance(expression.get("values"), list)
                and len(expression["values"]) == 1
            ):
                return str(expression["values"][0])
    return None


@dataclass(frozen=True, slots=True)
class ClaimTemplate:
    namespace: str
    name: str
    spec: Mapping[str, Any]  # the ResourceClaim spec a claim made from it gets


def parse_claim_template(obj: Mapping[str, Any]) -> ClaimTemplate:
    r, namespace, name = _identity(obj, "ResourceClaimTemplate")
    spec = r.obj(obj, "spec", "spec")
    claim_spec = r.obj(spec, "spec", "spec.spec")
    parse_claim_spec(r, claim_spec, "spec.spec")  # validate now, name errors by the template
    return ClaimTemplate(namespace, name, claim_spec)


def parse_device_taint_rule(obj: Mapping[str, Any]) -> DeviceTaintRule:
    r, _, name = _identity(obj, "DeviceTaintRule")
    spec = r.obj(obj, "spec", "spec")
    selector = r.obj(spec, "deviceSelector", "spec.deviceSelector")
    raw = r.obj(spec, "taint", "spec.taint")
    effect = r.text(raw, "effect", "spec.taint.effect", required=True)
    if effect not in TAINT_EFFECTS:
        raise r.error("spec.taint.effect", f"unknown effect {effect!r}")
    return DeviceTaintRule(
        name,
        r.text(selector, "driver", "spec.deviceSelector.driver") or None,
        r.text(selector, "pool", "spec.deviceSelector.pool") or None,
        r.text(selector, "device", "spec.deviceSelector.device") or None,
        DeviceTaint(
            r.text(raw, "key", "spec.taint.key", required=True),
            r.text(raw, "value", "spec.taint.value"),
            effect,
        ),
    )
