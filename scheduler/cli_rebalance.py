"""`gputopo-scheduler rebalance`: plan the moves that make room, offline or live.

With ``--cluster FILE``: reads what `simulate` reads (Nodes, Namespaces, PriorityClasses, Pods)
plus PodDisruptionBudgets, and prints the plan of `scheduler/rebalance.py`: which pods to evict
from which node for which waiting pod, and where each evicted pod then goes. Nothing is evicted.

Without it: the leader-elected controller of `scheduler/rebalance_controller.py` on the cluster
the kubeconfig names, dry-run unless ``--dry-run=false``. Every flag has an environment twin.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Final

from gputopo.core.address import parse_address
from gputopo.core.flags import (
    Bounded,
    add_kubeconfig_arguments,
    add_output_argument,
    apply_env_twins,
)
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.rebalance import (
    RebalancePlan,
    RebalancePolicy,
    Rebalancer,
    budgets_from_objects,
)
from gputopo.scheduler.scheduling_profile import default_profile, load_profile

if TYPE_CHECKING:
    from gputopo.scheduler.rebalance_controller import RebalanceSettings

log = logging.getLogger("gputopo.scheduler.rebalance")

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def boolean(text: str) -> bool:
    """An argparse type: true or false (``--dry-run=false``)."""
    word = text.strip().lower()
    if word not in _TRUE | _FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text[:80]!r}")
    return word in _TRUE


boolean.__name__ = "true or false"


class Duration(Bounded):
    """Seconds, or a Go-style duration of one unit: ``300``, ``30s``, ``5m``, ``1h``."""

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        super().__init__(float, low, high, low_open=low_open)
        left = "(" if low_open else "["
        self.__name__ = f"a duration (300, 30s, 5m, 1h) in {left}{low:g}s, {high:g}s]"

    def __call__(self, text: str) -> float:
        match = _DURATION.fullmatch(text.strip())
        if match is None:
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {text[:80]!r}")
        value = float(match.group(1)) * _UNIT_S[match.group(2)]
        return float(super().__call__(repr(value)))


WAIT: Final = Duration(0.0, 7 * 86400.0)
INTERVAL: Final = Duration(0.1, 86400.0)
COOLDOWN: Final = Duration(0.0, 7 * 86400.0)
PER_MINUTE: Final = Bounded(float, 0.0, 10000.0, low_open=True)


def add_rebalance_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rebalance",
        help="make room for waiting multi-GPU pods: plan offline (--cluster) or run the controller",
        description=(
            "For each pending pod asking for at least --min-gpus GPUs that fits nowhere although "
            "the cluster has the GPUs free, find the smallest set of lower-priority pods to evict "
            "from one node so it fits there, with no PodDisruptionBudget exceeded and every "
            "evicted pod proven to fit on another node. With --cluster: print the plan, evict "
            "nothing. Without: run the leader-elected controller on the live cluster (dry-run, "
            "Events only, unless --dry-run=false)."
        ),
    )
    parser.add_argument(
        "--cluster",
        action="append",
        metavar="FILE",
        help="plan offline on Kubernetes YAML (as simulate reads it, plus "
        "PodDisruptionBudgets); repeatable",
    )
    parser.add_argument("--profile", metavar="FILE", help="scoring profile YAML")
    parser.add_argument(
        "--min-gpus",
        type=int,
        default=2,
        metavar="N",
        help="only pods asking for at least N GPUs trigger a move (default 2)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="evict only from these namespaces (repeatable; default: any)",
    )
    parser.add_argument(
        "--priority-class",
        action="append",
        metavar="NAME",
        help="evict only pods of these priority classes (repeatable; default: any)",
    )
    parser.add_argument(
        "--max-evictions",
        type=int,
        default=8,
        metavar="N",
        help="at most N evictions per move (default 8)",
    )
    add_output_argument(parser, ("json", "text"), "json")
    _add_live_arguments(parser)
    add_logging_arguments(parser)
    apply_env_twins(parser, "gputopo-scheduler")
    parser.set_defaults(handler=rebalance_command)


def _add_live_arguments(parser: argparse.ArgumentParser) -> None:
    from gputopo.scheduler.cli_run import add_leader_election_arguments, dns_subdomain

    live = parser.add_argument_group("the live controller (without --cluster)")
    add_kubeconfig_arguments(parser)
    live.add_argument(
        "--dry-run",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="Events and metrics only, never an eviction (default true; --dry-run=false acts)",
    )
    live.add_argument(
        "--wait",
        type=WAIT,
        default=300.0,
        metavar="DURATION",
        help="how long a pod must have been Unschedulable before a move is planned for it "
        "(default 5m)",
    )
    live.add_argument(
        "--interval",
        type=INTERVAL,
        default=30.0,
        metavar="DURATION",
        help="time between planning rounds (default 30s)",
    )
    live.add_argument(
        "--evictions-per-minute",
        type=PER_MINUTE,
        default=4.0,
        metavar="N",
        help="token bucket: evictions a minute, a minute's worth saved up (default 4)",
    )
    live.add_argument(
        "--node-cooldown",
        type=COOLDOWN,
        default=600.0,
        metavar="DURATION",
        help="no second move freeing the same node within this time (default 10m)",
    )
    live.add_argument(
        "--cooldown",
        type=COOLDOWN,
        default=60.0,
        metavar="DURATION",
        help="no move at all within this time after a move (default 1m)",
    )
    live.add_argument(
        "--scheduler-name",
        default="gputopo-scheduler",
        type=dns_subdomain,
        help="waiting pods of this spec.schedulerName only (it honours the nomination)",
    )
    add_leader_election_arguments(live, "gputopo-rebalance", "planning")
    live.add_argument(
        "--metrics-address",
        default=":10262",
        help="HOST:PORT for /metrics, /healthz, /readyz; '' disables",
    )


def policy_from_args(args: argparse.Namespace) -> RebalancePolicy:
    if args.min_gpus < 1:
        raise SchedulerInputError(f"--min-gpus {args.min_gpus}: expected at least 1")
    if args.max_evictions < 1:
        raise SchedulerInputError(f"--max-evictions {args.max_evictions}: expected at least 1")
    return RebalancePolicy(
        min_gpus=args.min_gpus,
        namespaces=frozenset(args.namespace) if args.namespace else None,
        priority_classes=frozenset(args.priority_class) if args.priority_class else None,
        max_evictions=args.max_evictions,
    )


def rebalance_command(args: argparse.Namespace) -> int:
    if not args.cluster:
        return controller_command(args)
    from gputopo.scheduler.simulate import build_snapshot, load_cluster

    policy = policy_from_args(args)
    profile = load_profile(args.profile) if args.profile else default_profile()
    cluster = load_cluster(args.cluster)
    budgets = budgets_from_objects(cluster.disruption_budgets, cluster.bound_pods)
    rebalancer = Rebalancer(build_snapshot(cluster), budgets, policy, profile)
    plan = rebalancer.plan(cluster.pending_pods)
    print(json.dumps(plan.to_json(), indent=2) if args.output == "json" else render_text(plan))
    return 0


def render_text(plan: RebalancePlan) -> str:
    lines: list[str] = []
    for move in plan.moves:
        lines.append(f"for {move.for_pod}: free {move.frees} by evicting {len(move.evict)} pod(s)")
        lines.extend(f"  evict {pod} -> {move.then[pod]}" for pod in move.evict)
    for item in plan.unresolved:
        lines.append(f"unresolved {item.pod}: {item.reason}")
    return "\n".join(lines) if lines else "nothing to rebalance"


def controller_settings(args: argparse.Namespace) -> RebalanceSettings:
    from gputopo.scheduler.rebalance_controller import RebalanceSettings

    return RebalanceSettings(
        policy=policy_from_args(args),
        dry_run=args.dry_run,
        wait_s=args.wait,
        interval_s=args.interval,
        evictions_per_minute=args.evictions_per_minute,
        node_cooldown_s=args.node_cooldown,
        cooldown_s=args.cooldown,
        scheduler_name=args.scheduler_name,
    )


def controller_command(args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM/SIGINT; then stop and release the Lease."""
    from gputopo.scheduler.cli_run import lease_config
    from gputopo.scheduler.rebalance_controller import RebalanceService
    from gputopo.scheduler.runtime.kube import load_kube_api
    from gputopo.scheduler.runtime.signals import stop_on_signals

    settings = controller_settings(args)
    profile = load_profile(args.profile) if args.profile else default_profile()
    try:
        lease = lease_config(args)
        if args.metrics_address:
            parse_address(args.metrics_address, example=":10262")
        api = load_kube_api(args.kubeconfig, context=args.context)
    except ValueError as err:  # bad flag combination, unreadable kubeconfig
        raise SchedulerInputError(str(err)) from None
    service = RebalanceService(
        api, settings, profile, lease=lease, metrics_address=args.metrics_address or None
    )
    stopping = stop_on_signals()
    try:
        service.start()
    except OSError as err:
        raise SchedulerInputError(f"--metrics-address {args.metrics_address!r}: {err}") from None
    mode = "dry run" if settings.dry_run else "acting"
    log.info("rebalance controller started", extra={"mode": mode})
    stopping.wait()
    service.stop()
    return 0
