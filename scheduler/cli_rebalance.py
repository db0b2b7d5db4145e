"""`gputopo-scheduler rebalance --cluster FILE`: plan the moves that make room, offline.

Reads what `simulate` reads (Nodes, Namespaces, PriorityClasses, Pods) plus
PodDisruptionBudgets, and prints the plan of `scheduler/rebalance.py`: which pods to evict from
which node for which waiting pod, and where each evicted pod then goes. Nothing is evicted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gputopo.core.flags import add_output_argument
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.rebalance import (
    RebalancePlan,
    RebalancePolicy,
    Rebalancer,
    budgets_from_objects,
)
from gputopo.scheduler.scheduling_profile import default_profile, load_profile


def add_rebalance_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rebalance",
        help="plan the fewest evictions that make room for waiting multi-GPU pods (offline)",
        description=(
            "For each pending pod asking for at least --min-gpus GPUs that fits nowhere although "
            "the cluster has the GPUs free, find the smallest set of lower-priority pods to evict "
            "from one node so it fits there, with no PodDisruptionBudget exceeded and every "
            "evicted pod proven to fit on another node. Prints the plan; evicts nothing."
        ),
    )
    parser.add_argument(
        "--cluster",
        action="append",
        required=True,
        metavar="FILE",
        help="Kubernetes YAML (as simulate reads it, plus PodDisruptionBudgets); repeatable",
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
    add_logging_arguments(parser)
    parser.set_defaults(handler=rebalance_command)


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
