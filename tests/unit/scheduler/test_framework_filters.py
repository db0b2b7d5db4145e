"""Each filter against kube-scheduler's semantics and reason strings."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.framework import fit_error_message
from gputopo.scheduler.model import Taint, Toleration
from tests.unit.scheduler.sched_builders import cluster, namespace, node, pod, reasons, schedule

SLA = "gputopo.io/sla"
ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


# ------------------------------------------------------------------ NodeName / NodeUnschedulable


def test_node_name_must_match() -> None:
    snapshot = cluster([node("a"), node("b")])
    result = schedule(pod("p", nodeName="b"), snapshot)
    assert result.node == "b"
    assert reasons(result) == {"a": ("node(s) didn't match the requested node name",)}


def test_cordoned_node_is_unschedulable() -> None:
    snapshot = cluster([node("a", unschedulable=True)])
    result = schedule(pod("p"), snapshot)
    assert result.node is None
    assert result.message == "0/1 nodes are available: 1 node(s) were unschedulable."


def test_unschedulable_taint_toleration_allows_cordoned_node() -> None:
    snapshot = cluster([node("a", unschedulable=True)])
    toleration = {
        "key": "node.kubernetes.io/unschedulable",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    assert schedule(pod("p", tolerations=[toleration]), snapshot).node == "a"


# ------------------------------------------------------------------ TaintToleration


def _taint(key: str, value: str, effect: str = "NoSchedule") -> dict[str, str]:
    return {"key": key, "value": value, "effect": effect}


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "k", "operator": "Equal", "value": "v"}, ("k", "v", "NoSchedule"), True),
        ({"key": "k", "value": "v"}, ("k", "v", "NoSchedule"), True),  # operator defaults Equal
        ({"key": "k", "operator": "Equal", "value": "w"}, ("k", "v", "NoSchedule"), False),
        ({"key": "k", "operator": "Exists"}, ("k", "anything", "NoExecute"), True),
        ({"operator": "Exists"}, ("any-key", "v", "NoSchedule"), True),  # empty key tolerates all
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, ("k", "", "NoSchedule"), False),
        ({"key": "other", "operator": "Exists"}, ("k", "v", "NoSchedule"), False),
        # KEP-5471: Gt tolerates a taint whose value is greater than the toleration's
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "960", "NoSchedule"), True),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "950", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "900", "NoSchedule"), False),
        ({"key": SLA, "operator": "Lt", "value": "950"}, (SLA, "900", "NoSchedule"), True),
        ({"key": SLA, "operator": "Lt", "value": "950"}, (SLA, "950", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "950"}, (SLA, "high", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "x"}, (SLA, "990", "NoSchedule"), False),
        ({"key": SLA, "operator": "Gt", "value": "-5"}, (SLA, "+0", "NoSchedule"), True),
    ],
)
def test_toleration_matching(
    toleration: dict[str, str], taint: tuple[str, str, str], tolerated: bool
) -> None:
    parsed = Toleration(
        toleration.get("key", ""),
        toleration.get("operator", ""),
        toleration.get("value", ""),
        toleration.get("effect", ""),
    )
    assert parsed.tolerates(Taint(*taint)) is tolerated


def test_untolerated_taint_reason_names_key_and_value() -> None:
    snapshot = cluster([node("a", taints=[_taint(SLA, "900")])])
    result = schedule(pod("p"), snapshot)
    assert result.message == (
        "0/1 nodes are available: 1 node(s) had untolerated taint {gputopo.io/sla: 900}."
    )


def test_first_untolerated_taint_in_node_order_is_reported() -> None:
    taints = [_taint("a", "1"), _taint("b", "2")]
    snapshot = cluster([node("n", taints=taints)])
    tolerate_a = [{"key": "a", "operator": "Exists"}]
    assert reasons(schedule(pod("p", tolerations=tolerate_a), snapshot)) == {
        "n": ("node(s) had untolerated taint {b: 2}",)
    }


def test_no_execute_blocks_and_prefer_no_schedule_does_not() -> None:
    snapshot = cluster(
        [
            node("exec", taints=[_taint("k", "v", "NoExecute")]),
            node("prefer", taints=[_taint("k", "v", "PreferNoSchedule")]),
        ]
    )
    result = schedule(pod("p"), snapshot)
    assert result.node == "prefer"
    assert reasons(result) == {"exec": ("node(s) had untolerated taint {k: v}",)}


def test_sla_gt_toleration_selects_nodes_above_threshold() -> None:
    snapshot = cluster(
        [
            node("gold", taints=[_taint(SLA, "990")]),
            node("silver", taints=[_taint(SLA, "950")]),
            node("bronze", taints=[_taint(SLA, "800")]),
        ]
    )
    tolerations = [{"key": SLA, "operator": "Gt", "value": "950", "effect": "NoSchedule"}]
    result = schedule(pod("p", tolerations=tolerations), snapshot)
    assert result.node == "gold"
    assert reasons(result) == {
        "bronze": ("node(s) had untolerated taint {gputopo.io/sla: 800}",),
        "silver": ("node(s) had untolerated taint {gputopo.io/sla: 950}",),
    }


def test_brief_example_message_is_formatted_like_kube_scheduler() -> None:
    gpu_nodes = [
        node(
            f"gpu-{i}",
            allocatable={"cpu": "8", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "1"},
        )
        for i in range(4)
    ]
    sla_nodes = [node(f"sla-{i}", taints=[_taint(SLA, "900")]) for i in range(8)]
    result = schedule(pod("p", limits={"nvidia.com/gpu": "2"}), cluster(gpu_nodes + sla_nodes))
    assert result.message == (
        "0/12 nodes are available: 4 Insufficient nvidia.com/gpu, "
        "8 node(s) had untolerated taint {gputopo.io/sla: 900}."
    )


def test_fit_error_sorts_entries_as_strings() -> None:
    assert fit_error_message(16, {"x": 12, "y": 4}) == ("0/16 nodes are available: 12 x, 4 y.")
    assert fit_error_message(3, {}) == "0/3 nodes are available:"


# ------------------------------------------------------------------ NodeAffinity


GPU = "nvidia.com/gpu.product"


def _required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"


@pytest.fixture
def labelled() -> Any:
    return cluster(
        [
            node("h100", labels={GPU: "H100", "gpu.count": "8"}),
            node("a100", labels={GPU: "A100", "gpu.count": "4"}),
            node("cpu", labels={"gpu.count": "none"}),
        ]
    )


def _feasible(result: Any) -> set[str]:
    return {name for name, d in result.diagnosis().items() if d.feasible}


@pytest.mark.parametrize(
    ("affinity", "feasible"),
    [
        (_required({"matchExpressions": [_expr(GPU, "In", "H100", "A100")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr(GPU, "NotIn", "H100")]}), {"a100", "cpu"}),
        (_required({"matchExpressions": [_expr(GPU, "Exists")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr(GPU, "DoesNotExist")]}), {"cpu"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "4")]}), {"h100"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "3")]}), {"h100", "a100"}),
        (_required({"matchExpressions": [_expr("gpu.count", "Lt", "8")]}), {"a100"}),
        # terms are ORed
        (
            _required(
                {"matchExpressions": [_expr(GPU, "In", "H100")]},
                {"matchExpressions": [_expr(GPU, "DoesNotExist")]},
            ),
            {"h100", "cpu"},
        ),
        # expressions are ANDed
        (
            _required({"matchExpressions": [_expr(GPU, "Exists"), _expr("gpu.count", "Lt", "5")]}),
            {"a100"},
        ),
        # an empty term matches nothing
        (_required({}), set()),
        (_required({"matchExpressions": []}), set()),
        # a Gt value that is not an integer makes its term match nothing
        (_required({"matchExpressions": [_expr("gpu.count", "Gt", "four")]}), set()),
        # matchFields on metadata.name (NotIn: no PreFilter pinning, plain filter)
        (_required({"matchFields": [_expr("metadata.name", "NotIn", "a100")]}), {"h100", "cpu"}),
    ],
)
def test_required_node_affinity(
    labelled: Any, affinity: dict[str, Any], feasible: set[str]
) -> None:
    result = schedule(pod("p", affinity=affinity), labelled)
    assert _feasible(result) == feasible
    for reason in reasons(result).values():
        assert reason == (AFFINITY_REASON,)


PINNED_REASON = "node(s) didn't satisfy plugin(s) [NodeAffinity]"


def test_match_fields_pinning_reports_other_nodes_like_prefilter(labelled: Any) -> None:
    # how the DaemonSet controller pins its pods to one node
    pinned = _required({"matchFields": [_expr("metadata.name", "In", "a100")]})
    result = schedule(pod("p", affinity=pinned), labelled)
    assert result.node == "a100"
    assert reasons(result) == {"h100": (PINNED_REASON,), "cpu": (PINNED_REASON,)}
    full = schedule(pod("p", affinity=pinned, requests={"cpu": "100"}), labelled)
    assert full.message == f"0/3 nodes are available: 1 Insufficient cpu, 2 {PINNED_REASON}."


def test_match_fields_pinning_in_every_term_unions_names(labelled: Any) -> None:
    terms = _required(
        {"matchFields": [_expr("metadata.name", "In", "a100")]},
        {
            "matchFields": [_expr("metadata.name", "In", "h100", "cpu")],
            "matchExpressions": [_expr(GPU, "Exists")],
        },
    )
    result = schedule(pod("p", affinity=terms), labelled)
    assert reasons(result) == {"cpu": (AFFINITY_REASON,)}  # pinned, but fails the expression


def test_conflicting_match_fields_pinning(labelled: Any) -> None:
    conflict = _required(
        {
            "matchFields": [
                _expr("metadata.name", "In", "a100"),
                _expr("metadata.name", "In", "h100"),
            ]
        }
    )
    result = schedule(pod("p", affinity=conflict), labelled)
    assert result.message == "0/3 nodes are available: pod affinity terms conflict."


def test_node_selector_and_affinity_must_both_match(labelled: Any) -> None:
    affinity = _required({"matchExpressions": [_expr(GPU, "Exists")]})
    result = schedule(pod("p", nodeSelector={"gpu.count": "4"}, affinity=affinity), labelled)
    assert result.node == "a100"
    assert result.message == ""


def test_node_selector_mismatch_message(labelled: Any) -> None:
    result = schedule(pod("p", nodeSelector={GPU: "B200"}), labelled)
    assert result.message == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )


# ------------------------------------------------------------------ NodeResourcesFit


def _gpu_node(name: str, gpus: str = "8", cpu: str = "32", pods: str = "110") -> dict[str, Any]:
    return node(
        name,
        allocatable={
            "cpu": cpu,
            "memory": "64Gi",
            "ephemeral-storage": "100Gi",
            "pods": pods,
            "nvidia.com/gpu": gpus,
        },
    )


def test_request_that_exactly_fits_is_feasible() -> None:
    snapshot = cluster([_gpu_node("a")], [pod("old", node_name="a", requests={"cpu": "31500m"})])
    assert schedule(pod("p", requests={"cpu": "500m"}), snapshot).node == "a"
    assert schedule(pod("p", requests={"cpu": "501m"}), snapshot).message == (
        "0/1 nodes are available: 1 Insufficient cpu."
    )


def test_every_insufficient_resource_is_counted() -> None:
    snapshot = cluster([_gpu_node("a"), _gpu_node("b", gpus="1")])
    result = schedule(
        pod("p", requests={"cpu": "64", "memory": "100Gi", "nvidia.com/gpu": "2"}), snapshot
    )
    assert result.message == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "2 Insufficient cpu, 2 Insufficient memory."
    )
    assert reasons(result)["b"] == (
        "Insufficient cpu",
        "Insufficient memory",
        "Insufficient nvidia.com/gpu",
    )


def test_extended_resource_missing_on_node_is_insufficient() -> None:
    snapshot = cluster([_gpu_node("a")])
    result = schedule(pod("p", limits={"nvidia.com/mig-1g.10gb": "1"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient nvidia.com/mig-1g.10gb."


def test_too_many_pods() -> None:
    snapshot = cluster([_gpu_node("a", pods="1")], [pod("old", node_name="a")])
    assert schedule(pod("p"), snapshot).message == "0/1 nodes are available: 1 Too many pods."


def test_node_without_pods_allocatable_fits_no_pod() -> None:
    snapshot = cluster([node("a", allocatable={"cpu": "8", "memory": "8Gi"})])
    assert schedule(pod("p"), snapshot).message == "0/1 nodes are available: 1 Too many pods."


def test_limits_only_container_requests_its_limits() -> None:
    snapshot = cluster([_gpu_node("a", gpus="1")])
    snapshot.add_pod(pod("old", node_name="a", limits={"nvidia.com/gpu": "1"}))
    result = schedule(pod("p", limits={"nvidia.com/gpu": "1"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def test_terminal_pods_are_not_load() -> None:
    snapshot = cluster([_gpu_node("a", gpus="1")])
    done = pod("done", node_name="a", limits={"nvidia.com/gpu": "1"})
    done["status"] = {"phase": "Succeeded"}
    snapshot.add_pod(done)
    assert schedule(pod("p", limits={"nvidia.com/gpu": "1"}), snapshot).node == "a"


def test_pod_overhead_is_added() -> None:
    snapshot = cluster([_gpu_node("a", cpu="1")])
    result = schedule(pod("p", requests={"cpu": "900m"}, overhead={"cpu": "200m"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_allocatable_falls_back_to_capacity() -> None:
    item = node("a")
    item["status"] = {"capacity": {"cpu": "1", "memory": "1Gi", "pods": "10"}}
    snapshot = cluster([item])
    assert schedule(pod("p", requests={"cpu": "1"}), snapshot).node == "a"
    assert schedule(pod("q", requests={"cpu": "2"}), snapshot).node is None


def test_ephemeral_storage_is_checked() -> None:
    snapshot = cluster([_gpu_node("a")])
    result = schedule(pod("p", requests={"ephemeral-storage": "200Gi"}), snapshot)
    assert result.message == "0/1 nodes are available: 1 Insufficient ephemeral-storage."


# ------------------------------------------------------------------ NodePorts


def _port(port: int, protocol: str = "TCP", ip: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": port, "hostPort": port, "protocol": protocol}
    if ip:
        out["hostIP"] = ip
    return out


PORT_REASON = "node(s) didn't have free ports for the requested pod ports"


@pytest.mark.parametrize(
    ("existing", "wanted", "conflict"),
    [
        (_port(9400), _port(9400), True),
        (_port(9400), _port(9401), False),
        (_port(9400, "TCP"), _port(9400, "UDP"), False),
        (_port(9400, ip="10.0.0.1"), _port(9400, ip="10.0.0.2"), False),
        (_port(9400, ip="10.0.0.1"), _port(9400, ip="10.0.0.1"), True),
        (_port(9400, ip="10.0.0.1"), _port(9400), True),  # wanted 0.0.0.0 conflicts with any IP
        (_port(9400), _port(9400, ip="10.0.0.1"), True),  # existing 0.0.0.0 conflicts too
    ],
)
def test_host_port_conflicts(
    existing: dict[str, Any], wanted: dict[str, Any], conflict: bool
) -> None:
    snapshot = cluster([node("a")], [pod("old", node_name="a", ports=[existing])])
    result = schedule(pod("p", ports=[wanted]), snapshot)
    if conflict:
        assert result.message == f"0/1 nodes are available: 1 {PORT_REASON}."
    else:
        assert result.node == "a"


def test_host_network_container_ports_are_host_ports() -> None:
    snapshot = cluster([node("a")], [pod("old", node_name="a", ports=[_port(9400)])])
    wanted = pod("p", hostNetwork=True, ports=[{"containerPort": 9400}])
    assert reasons(schedule(wanted, snapshot)) == {"a": (PORT_REASON,)}


# ------------------------------------------------------------------ InterPodAffinity


def _term(labels: dict[str, str], key: str = ZONE, **extra: Any) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **extra}


def _pod_affinity(kind: str, *terms: dict[str, Any]) -> dict[str, Any]:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


AFF = "node(s) didn't match pod affinity rules"
ANTI = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"


@pytest.fixture
def zones() -> Any:
    return cluster(
        [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"), node("nozone")],
        [pod("db", labels={"app": "db"}, node_name="a1")],
    )


def test_pod_affinity_requires_a_matching_pod_in_the_domain(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAffinity", _term({"app": "db"}))), zones
    )
    assert _feasible(result) == {"a1", "a2"}
    assert reasons(result) == {"b1": (AFF,), "nozone": (AFF,)}


def test_pod_affinity_without_any_match_fails_everywhere(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAffinity", _term({"app": "cache"}))), zones
    )
    assert result.message == f"0/4 nodes are available: 4 {AFF}."


def test_first_pod_of_a_group_may_schedule_on_labelled_nodes(zones: Any) -> None:
    affinity = _pod_affinity("podAffinity", _term({"app": "cache"}))
    result = schedule(pod("cache-0", labels={"app": "cache"}, affinity=affinity), zones)
    assert _feasible(result) == {"a1", "a2", "b1"}  # every node carrying the topology key
    assert reasons(result) == {"nozone": (AFF,)}


def test_pod_affinity_only_counts_its_namespace_by_default(zones: Any) -> None:
    affinity = _pod_affinity("podAffinity", _term({"app": "db"}))
    result = schedule(pod("web", namespace="other", affinity=affinity), zones)
    assert result.node is None


def test_pod_affinity_namespaces_and_namespace_selector() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("db", namespace="data", labels={"app": "db"}, node_name="b1")],
        namespaces=[namespace("data", {"team": "storage"}), namespace("web")],
    )
    explicit = _pod_affinity("podAffinity", _term({"app": "db"}, namespaces=["data"]))
    assert schedule(pod("w", namespace="web", affinity=explicit), snapshot).node == "b1"
    by_label = _pod_affinity(
        "podAffinity",
        _term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "storage"}}),
    )
    assert schedule(pod("w", namespace="web", affinity=by_label), snapshot).node == "b1"
    everywhere = _pod_affinity("podAffinity", _term({"app": "db"}, namespaceSelector={}))
    assert schedule(pod("w", namespace="web", affinity=everywhere), snapshot).node == "b1"
    wrong_team = _pod_affinity(
        "podAffinity",
        _term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "web"}}),
    )
    assert schedule(pod("w", namespace="web", affinity=wrong_team), snapshot).node is None


def test_pod_anti_affinity_blocks_the_whole_domain(zones: Any) -> None:
    result = schedule(
        pod("web", affinity=_pod_affinity("podAntiAffinity", _term({"app": "db"}))), zones
    )
    assert _feasible(result) == {"b1", "nozone"}
    assert reasons(result) == {"a1": (ANTI,), "a2": (ANTI,)}


def test_existing_pods_anti_affinity_is_symmetric() -> None:
    loner = pod(
        "loner",
        labels={"app": "loner"},
        node_name="a1",
        affinity=_pod_affinity("podAntiAffinity", _term({"app": "web"})),
    )
    snapshot = cluster([node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b")], [loner])
    result = schedule(pod("web", labels={"app": "web"}), snapshot)
    assert result.node == "b1"
    assert reasons(result) == {"a1": (EXISTING_ANTI,), "a2": (EXISTING_ANTI,)}
    # a pod the term does not select is unaffected
    assert schedule(pod("db", labels={"app": "db"}), snapshot).node in {"a1", "a2", "b1"}


def test_anti_affinity_match_expressions_and_mismatch_label_keys() -> None:
    snapshot = cluster(
        [node("n1"), node("n2")],
        [pod("t-a", labels={"tenant": "a", "app": "x"}, node_name="n1")],
    )
    # NotIn via mismatchLabelKeys: keep away from other tenants' pods
    term = {
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        "mismatchLabelKeys": ["tenant"],
        "topologyKey": HOST,
    }
    result = schedule(
        pod(
            "t-b",
            labels={"tenant": "b", "app": "x"},
            affinity=_pod_affinity("podAntiAffinity", term),
        ),
        snapshot,
    )
    assert result.node == "n2"
    same_tenant = schedule(
        pod(
            "t-a2",
            labels={"tenant": "a", "app": "x"},
            affinity=_pod_affinity("podAntiAffinity", term),
        ),
        snapshot,
    )
    assert _feasible(same_tenant) == {"n1", "n2"}


def test_affinity_match_label_keys_narrow_the_selector() -> None:
    snapshot = cluster(
        [node("n1", zone="a"), node("n2", zone="b")],
        [
            pod("v1", labels={"app": "x", "rev": "1"}, node_name="n1"),
            pod("v2", labels={"app": "x", "rev": "2"}, node_name="n2"),
        ],
    )
    term = _term({"app": "x"}, matchLabelKeys=["rev"])
    result = schedule(
        pod("new", labels={"app": "x", "rev": "2"}, affinity=_pod_affinity("podAffinity", term)),
        snapshot,
    )
    assert result.node == "n2"


# ------------------------------------------------------------------ PodTopologySpread

SPREAD = "node(s) didn't match pod topology spread constraints"
MISSING = "node(s) didn't match pod topology spread constraints (missing required label)"


def _spread(key: str = ZONE, max_skew: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
            **extra,
        }
    ]


def _web(name: str, node_name: str | None = None, **spec: Any) -> dict[str, Any]:
    return pod(name, labels={"app": "web"}, node_name=node_name, **spec)


def test_spread_rejects_skew_above_max_and_nodes_missing_the_key() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b"), node("nozone")],
        [_web("w0", "a1")],
    )
    result = schedule(_web("w1", topologySpreadConstraints=_spread()), snapshot)
    assert result.node == "b1"
    assert reasons(result) == {"a1": (SPREAD,), "nozone": (MISSING,)}


def test_spread_max_skew_two_allows_imbalance() -> None:
    snapshot = cluster([node("a1", zone="a"), node("b1", zone="b")], [_web("w0", "a1")])
    result = schedule(_web("w1", topologySpreadConstraints=_spread(max_skew=2)), snapshot)
    assert _feasible(result) == {"a1", "b1"}


def test_spread_counts_only_same_namespace_pods() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("w0", namespace="other", labels={"app": "web"}, node_name="a1")],
    )
    result = schedule(_web("w1", topologySpreadConstraints=_spread()), snapshot)
    assert _feasible(result) == {"a1", "b1"}


def test_spread_min_domains_treats_global_minimum_as_zero() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    # two domains each holding one pod: fine without minDomains ...
    assert _feasible(schedule(_web("w2", topologySpreadConstraints=_spread()), snapshot)) == {
        "a1",
        "b1",
    }
    # ... but minDomains 3 makes the minimum 0, so 1 + 1 - 0 > 1 everywhere
    result = schedule(_web("w2", topologySpreadConstraints=_spread(minDomains=3)), snapshot)
    assert result.message == f"0/2 nodes are available: 2 {SPREAD}."


def test_spread_node_affinity_policy_honor_ignores_other_nodes_pods() -> None:
    snapshot = cluster(
        [
            node("a1", zone="a", labels={"pool": "gpu"}),
            node("b1", zone="b", labels={"pool": "gpu"}),
            node("c1", zone="c", labels={"pool": "cpu"}),
        ],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    selector = {"pool": "gpu"}
    # Honor (default): zone c is not eligible, so the minimum is 1 and a1/b1 stay feasible.
    honor = schedule(
        _web("w2", nodeSelector=selector, topologySpreadConstraints=_spread()), snapshot
    )
    assert _feasible(honor) == {"a1", "b1"}
    # Ignore: zone c counts with 0 pods, so a1/b1 would have skew 2.
    ignore = schedule(
        _web(
            "w2",
            nodeSelector=selector,
            topologySpreadConstraints=_spread(nodeAffinityPolicy="Ignore"),
        ),
        snapshot,
    )
    assert ignore.message == (
        f"0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 {SPREAD}."
    )


def test_spread_node_taints_policy_honor_skips_tainted_domains() -> None:
    snapshot = cluster(
        [
            node("a1", zone="a"),
            node("b1", zone="b"),
            node(
                "c1", zone="c", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
            ),
        ],
        [_web("w0", "a1"), _web("w1", "b1")],
    )
    ignore = schedule(_web("w2", topologySpreadConstraints=_spread()), snapshot)
    assert ignore.node is None  # tainted zone c (0 pods) keeps the minimum at 0
    honor = schedule(
        _web("w2", topologySpreadConstraints=_spread(nodeTaintsPolicy="Honor")), snapshot
    )
    assert _feasible(honor) == {"a1", "b1"}


def test_spread_match_label_keys() -> None:
    snapshot = cluster(
        [node("a1", zone="a"), node("b1", zone="b")],
        [pod("old", labels={"app": "web", "rev": "1"}, node_name="a1")],
    )
    new = pod(
        "new",
        labels={"app": "web", "rev": "2"},
        topologySpreadConstraints=_spread(matchLabelKeys=["rev"]),
    )
    assert _feasible(schedule(new, snapshot)) == {"a1", "b1"}


# ------------------------------------------------------------------ gates and unsupported


def test_scheduling_gates_hold_the_pod() -> None:
    result = schedule(pod("p", schedulingGates=[{"name": "quota"}]), cluster([node("a")]))
    assert result.node is None
    assert result.message == "Scheduling is blocked due to non-empty scheduling gates"


def test_dra_resource_claims_are_reported_not_ignored() -> None:
    claims = [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
    result = schedule(pod("p", resourceClaims=claims), cluster([node("a")]))
    assert result.node is None
    assert "resourceClaims" in result.message


def test_pvc_volumes_schedule_with_a_warning() -> None:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    result = schedule(pod("p", volumes=volumes), cluster([node("a")]))
    assert result.node == "a"
    assert len(result.warnings) == 1
    assert "VolumeBinding" in result.warnings[0]


def test_no_nodes() -> None:
    result = schedule(pod("p"), cluster([]))
    assert result.message == "no nodes available to schedule pods"
