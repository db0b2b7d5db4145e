"""`gputopo-scheduler run`: the in-cluster scheduler. Every flag has an environment twin."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
from typing import TYPE_CHECKING, Any, Final

from gputopo.core.address import parse_address
from gputopo.core.flags import add_kubeconfig_arguments, apply_env_twins, count, seconds
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.cli_load import add_load_arguments, build_load_tracker
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.runtime import gctune
from gputopo.scheduler.runtime.signals import stop_on_signals

if TYPE_CHECKING:
    from gputopo.scheduler.runtime.leader import LeaseConfig
    from gputopo.scheduler.runtime.runner import RuntimeConfig, SchedulerRuntime

log = logging.getLogger("gputopo.scheduler.cli")

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


_DNS_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN: Final = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")

# Leader election's periods: at least 0.1 s (a smaller retry period is a loop against the API
# server), at most an hour.
LEASE_SECONDS: Final = seconds(0.1, 3600.0, low_open=False)
# Binding workers are threads, each with a request in flight.
BIND_WORKERS: Final = count(1, 256)
# Zero is meaningful for these two (no backoff; no age limit).
GANG_BACKOFF: Final = seconds(0.0, 86400.0, low_open=False)
NRT_MAX_AGE: Final = seconds(0.0, 7 * 86400.0, low_open=False)


def dns_subdomain(text: str) -> str:
    """An argparse type: a DNS-1123 subdomain (a Lease name, a spec.schedulerName), as the
    API server validates it."""
    if len(text) > 253 or not _DNS_SUBDOMAIN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            f"at most 253 characters), got {text[:80]!r}"
        )
    return text


dns_subdomain.__name__ = "a DNS-1123 subdomain"  # what an environment twin's error says


def dns_label(text: str) -> str:
    """An argparse type: a DNS-1123 label (a namespace)."""
    if len(text) > 63 or not re.fullmatch(_DNS_LABEL, text):
        raise argparse.ArgumentTypeError(
            f"expected a DNS-1123 label (lower-case letters, digits and '-', at most 63 "
            f"characters), got {text[:80]!r}"
        )
    return text


dns_label.__name__ = "a DNS-1123 label"


def default_lease_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or "kube-system"
    except OSError:
        return "kube-system"


def add_leader_election_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, lease_name: str, doing: str
) -> None:
    """The Lease flags every leader-elected command has (`run`, `rebalance`); their environment
    twins come from `apply_env_twins`."""
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"elect a leader on a Lease before {doing} (default on)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=default_lease_namespace(),
        type=dns_label,
        help="namespace of the leader Lease (default: own namespace)",
    )
    parser.add_argument(
        "--lease-name", default=lease_name, type=dns_subdomain, help="name of the leader Lease"
    )
    parser.add_argument(
        "--identity",
        default=f"{socket.gethostname()}_{os.getpid()}",
        help="holderIdentity in the Lease (default hostname_pid)",
    )
    parser.add_argument(
        "--lease-duration",
        type=LEASE_SECONDS,
        default=15.0,
        help="seconds a standby waits before taking an unrenewed Lease",
    )
    parser.add_argument(
        "--renew-deadline",
        type=LEASE_SECONDS,
        default=10.0,
        help="seconds the leader may fail to renew before it stops",
    )
    parser.add_argument(
        "--retry-period",
        type=LEASE_SECONDS,
        default=2.0,
        help="seconds between Lease attempts and renewals",
    )


def lease_config(args: argparse.Namespace) -> LeaseConfig | None:
    """The Lease of `add_leader_election_arguments`' flags; None with --no-leader-elect.
    ValueError (one line) for inconsistent durations."""
    from gputopo.scheduler.runtime.leader import LeaseConfig

    if not args.leader_elect:
        return None
    return LeaseConfig(
        namespace=args.lease_namespace,
        name=args.lease_name,
        identity=args.identity,
        lease_duration_s=args.lease_duration,
        renew_deadline_s=args.renew_deadline,
        retry_period_s=args.retry_period,
    )


def add_run_parser(subparsers: Any) -> None:
    """Register `run` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="watch the cluster and schedule pods that name this scheduler",
        description=(
            "Schedule pending pods whose spec.schedulerName matches, bind them through "
            "pods/binding, record events; leader-elected on a Lease. Flags default to the "
            "environment variable named in each help text."
        ),
    )
    add_kubeconfig_arguments(parser)
    parser.add_argument(
        "--scheduler-name",
        default="gputopo-scheduler",
        type=dns_subdomain,
        help="spec.schedulerName this scheduler serves ($GPUTOPO_SCHEDULER_NAME)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="scoring weights profile YAML ($GPUTOPO_PROFILE; built-in defaults if unset)",
    )
    add_leader_election_arguments(parser, "gputopo-scheduler", "scheduling")
    parser.add_argument(
        "--metrics-address",
        default=":10259",
        help="HOST:PORT for /metrics, /healthz, /readyz ($GPUTOPO_METRICS_ADDRESS); '' disables",
    )
    parser.add_argument(
        "--bind-workers",
        type=BIND_WORKERS,
        default=16,
        help="concurrent pods/binding requests ($GPUTOPO_BIND_WORKERS)",
    )
    parser.add_argument(
        "--gang-backoff",
        type=GANG_BACKOFF,
        default=10.0,
        help="seconds a pod group waits as a whole after a failed attempt "
        "($GPUTOPO_GANG_BACKOFF; Coscheduling's podGroupBackoffSeconds)",
    )
    parser.add_argument(
        "--nrt-max-age",
        type=NRT_MAX_AGE,
        default=0.0,
        help="seconds after which a watched NodeResourceTopology is ignored ($GPUTOPO_NRT_MAX_AGE; "
        "0, the default: no age limit, the agent rewrites it whenever it changes)",
    )
    add_load_arguments(parser)
    add_logging_arguments(parser)
    apply_env_twins(parser, "gputopo-scheduler")
    parser.set_defaults(handler=run_command)


def runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    """The runtime's settings from `run`'s flags; ValueError (one line) names a bad one."""
    from gputopo.scheduler.runtime.runner import RuntimeConfig

    lease = lease_config(args)
    if args.metrics_address:
        parse_address(args.metrics_address, example=":10259")  # before any API call
    return RuntimeConfig(
        scheduler_name=args.scheduler_name,
        lease=lease,
        metrics_address=args.metrics_address or None,
        bind_workers=args.bind_workers,
        gang_backoff_s=args.gang_backoff,
    )


def _build_runtime(args: argparse.Namespace) -> SchedulerRuntime:
    # Imported here, not at module level: the kubernetes client costs every other subcommand
    # (`simulate`) half a second of start-up it does not need.
    from gputopo.scheduler.runtime.core_adapter import CoreFramework
    from gputopo.scheduler.runtime.kube import load_kube_api
    from gputopo.scheduler.runtime.runner import SchedulerRuntime

    config = runtime_config(args)
    load = build_load_tracker(args)
    framework = CoreFramework.from_profile(
        args.profile, load, nrt_max_age_s=args.nrt_max_age or None
    )
    api = load_kube_api(args.kubeconfig, context=args.context)
    if load is not None:
        load.start()
    return SchedulerRuntime(api, framework, config)


def run_command(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; then stop scheduling, finish binds and release the Lease."""
    try:
        runtime = _build_runtime(args)
    except SchedulerInputError:
        raise
    except ValueError as err:  # bad flag combination, unreadable kubeconfig
        raise SchedulerInputError(str(err)) from None
    stopping = stop_on_signals()
    gctune.tune()
    try:
        runtime.start()
    except OSError as err:
        raise SchedulerInputError(f"--metrics-address {args.metrics_address!r}: {err}") from None
    frozen = False
    while not stopping.wait(0.2 if not frozen else 1.0):
        if not frozen and runtime.ready():
            gctune.freeze_startup_heap()  # the initial lists are in the cache now
            frozen = True
    runtime.stop()
    return 0
