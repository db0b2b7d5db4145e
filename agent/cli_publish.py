"""``gputopo-agent labels`` and ``gputopo-agent run``: what would be published, and publishing it.

``labels`` prints exactly what ``run`` would leave on a Node that carries none of it yet —
labels, taints and annotations, ownership bookkeeping included — without a cluster.
``run --once`` does one discovery + publish cycle (:func:`agent.publish.cycle.run_cycle`);
without ``--once`` it hands over to the long-running loop in :mod:`agent.runloop`
(interval with jitter, health poll, XID watcher, udev hotplug, metrics, signals), whose flags
are declared here with the rest of ``run``'s. Registered by :mod:`agent.cli`; imports only the
machine source (:mod:`agent.cli_machine`), never the CLI that lists it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from gputopo.agent.cli_machine import (
    add_machine_arguments,
    check_machine_arguments,
    discover_topology,
    machine_source,
    node_name,
)
from gputopo.agent.device_taints import (
    DEFAULT_DRIVER,
    DEVICE_TAINT_EFFECTS,
    DeviceTaintOptions,
    DeviceTaintPublisher,
)
from gputopo.agent.driver_upgrade import DEFAULT_UPGRADE_POLL_S
from gputopo.agent.loop import DEFAULT_POD_RESOURCES_INTERVAL_S
from gputopo.agent.nvml import DEFAULT_XID_WINDOW_S
from gputopo.agent.podresources import DEFAULT_SOCKET
from gputopo.agent.publish.calls import PublishResult
from gputopo.agent.publish.cycle import CycleResult, run_cycle
from gputopo.agent.publish.desired import PublishOptions, desired_state
from gputopo.agent.publish.nvidia_labels import DEFAULT_NVIDIA_LABEL_MODE, NVIDIA_LABEL_MODES
from gputopo.agent.publish.plan import fresh_node_publication
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.topology import NodeTopology
from gputopo.core.address import parse_address
from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.core.contract import DEFAULT_PREFIX, MIG_STRATEGIES, TAINT_EFFECTS, Contract
from gputopo.core.flags import (
    Bounded,
    add_kubeconfig_arguments,
    add_output_argument,
    apply_env_twins,
    seconds,
)
from gputopo.core.logs import add_logging_arguments
from gputopo.core.validate import ValidationError, ValidationGate, is_qualified_name

if TYPE_CHECKING:
    from gputopo.core.kube import KubeClient

# The run loop's ranges (docs/operations.md, "Limits"): finite, positive where zero would spin,
# and at most a week (a day for the fast polls), so ``nan``, ``inf``, ``1e309`` or ``1e-9`` is a
# usage error instead of a loop that never waits or never wakes. A discovery below 1 s and a
# health or pod-resources poll below 0.1 s would keep a CPU busy with NVML and gRPC calls.
WEEK_S = 7 * 86400.0
INTERVAL = seconds(1.0, WEEK_S, low_open=False)
HEALTH_INTERVAL = seconds(0.1, 3600.0, low_open=False)
POD_RESOURCES_INTERVAL = seconds(0.1, 86400.0, low_open=False)
MIN_TRIGGER_INTERVAL = Bounded(float, 0.0, 86400.0)
JITTER = Bounded(float, 0.0, 0.5)
XID_WINDOW = Bounded(float, 0.0, WEEK_S)  # 0: until the agent restarts
UPGRADE_POLL = Bounded(float, 0.0, 3600.0)  # 0: the driver-upgrade label is not read


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mig-strategy",
        choices=MIG_STRATEGIES,
        default="none",
        help="GFD MIG labelling strategy (default none)",
    )
    parser.add_argument(
        "--sla-taint-effect",
        choices=TAINT_EFFECTS,
        default="PreferNoSchedule",
        help="effect of the <prefix>/sla taint (default PreferNoSchedule)",
    )
    parser.add_argument(
        "--health-taint-effect",
        choices=TAINT_EFFECTS,
        default="NoSchedule",
        help="effect of the <prefix>/gpu-health taint (default NoSchedule)",
    )
    parser.add_argument(
        "--nvidia-labels",
        choices=NVIDIA_LABEL_MODES,
        default=DEFAULT_NVIDIA_LABEL_MODE,
        help="who writes the GFD-compatible nvidia.com/* labels: own (gputopo keeps the ones it "
        "wrote), defer (only where no other writer such as GPU Feature Discovery holds the key) "
        f"or off (none; removes only its own); default {DEFAULT_NVIDIA_LABEL_MODE} "
        "(docs/coexistence.md)",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"prefix of gputopo's own keys (default {DEFAULT_PREFIX})",
    )


def publish_options(args: argparse.Namespace) -> PublishOptions:
    if not is_qualified_name(f"{args.prefix}/x") or "/" in args.prefix:
        raise CliError(f"--prefix {args.prefix!r}: not a DNS subdomain like gputopo.io")
    return PublishOptions(
        contract=Contract(prefix=args.prefix),
        mig_strategy=args.mig_strategy,
        sla_taint_effect=args.sla_taint_effect,
        health_taint_effect=args.health_taint_effect,
        nvidia_labels=args.nvidia_labels,
    )


# -- labels ---------------------------------------------------------------------------------------


def add_labels_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "labels",
        help="print the labels, taints and annotations this node would get",
        description="Discover this node and print exactly what `run` would publish on a Node "
        "that has none of it yet. Talks to no cluster.",
    )
    add_machine_arguments(parser)
    add_publish_arguments(parser)
    add_output_argument(parser, ("json",), "json")
    add_logging_arguments(parser)
    parser.set_defaults(handler=run_labels)


def run_labels(args: argparse.Namespace) -> int:
    options = publish_options(args)
    with machine_source(args) as source:
        topology = discover_topology(source)
    try:
        document = labels_document(topology, options)
    except ValidationError as error:
        raise CliError(str(error), EXIT_FAILURE) from None
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


def labels_document(topology: NodeTopology, options: PublishOptions) -> dict[str, Any]:
    """``{"labels", "taints", "annotations"}``: what ``run`` leaves on a Node that had none."""
    desired = desired_state(topology, options, ValidationGate())
    labels, taints, annotations = fresh_node_publication(desired, options.contract)
    return {"labels": labels, "taints": taints, "annotations": annotations}


# -- run ------------------------------------------------------------------------------------------


def add_run_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="discover and publish labels, taints and annotations to this node",
        description="Discover this node and publish to its Node object (and optionally its "
        "NodeResourceTopology). Writes only what changed and only keys it owns.",
    )
    add_machine_arguments(parser)
    add_publish_arguments(parser)
    parser.add_argument("--once", action="store_true", help="one cycle, then exit")
    parser.add_argument(
        "--interval",
        type=INTERVAL,
        default=60.0,
        metavar="SECONDS",
        help="seconds between cycles without --once, 1..604800 (default 60)",
    )
    add_kubeconfig_arguments(parser)
    parser.add_argument("--publish-nrt", action="store_true", help="also apply the NRT object")
    add_device_taint_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    parser.add_argument("--prune", action="store_true", help="remove everything gputopo owns")
    add_runloop_arguments(parser)
    add_logging_arguments(parser)
    # Last: every option on `run` (the publishing and machine flags too) gets its twin.
    apply_env_twins(parser, "gputopo-agent")
    parser.set_defaults(handler=run_run)


def add_device_taint_arguments(parser: argparse.ArgumentParser) -> None:
    """Per-GPU health as DRA DeviceTaintRules (agent.device_taints, docs/dra.md)."""
    parser.add_argument(
        "--publish-device-taints",
        action="store_true",
        help="also mark sick GPUs with DeviceTaintRules on the node's DRA devices",
    )
    parser.add_argument(
        "--dra-driver",
        default=DEFAULT_DRIVER,
        metavar="NAME",
        help=f"the DRA driver whose ResourceSlices publish the GPUs (default {DEFAULT_DRIVER})",
    )
    for health, default in (
        ("degraded", "None"),
        ("failed", "NoSchedule"),
        ("reset-required", "NoExecute"),
    ):
        parser.add_argument(
            f"--device-taint-effect-{health}",
            choices=DEVICE_TAINT_EFFECTS,
            default=default,
            help=f"effect of the device taint of a {health} GPU (default {default})",
        )


def device_taint_options(
    args: argparse.Namespace, options: PublishOptions
) -> DeviceTaintOptions | None:
    """The device-taint flags, checked before any API call; None without the flag."""
    if not args.publish_device_taints:
        return None
    try:
        return DeviceTaintOptions(
            degraded_effect=args.device_taint_effect_degraded,
            failed_effect=args.device_taint_effect_failed,
            reset_required_effect=args.device_taint_effect_reset_required,
            driver=args.dra_driver,
            removal_after=options.removal_after,
            contract=options.contract,
        )
    except ValueError as error:
        raise CliError(str(error)) from None


def add_runloop_arguments(parser: argparse.ArgumentParser) -> None:
    """The long-running loop's own flags (:func:`agent.runloop.run_agent` reads them)."""
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0:9465",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /readyz here (default 0.0.0.0:9465)",
    )
    parser.add_argument(
        "--pod-resources-socket",
        default=DEFAULT_SOCKET,
        metavar="PATH",
        help=f"the kubelet's pod-resources socket; empty to not read it (default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--pod-resources-interval",
        type=POD_RESOURCES_INTERVAL,
        default=DEFAULT_POD_RESOURCES_INTERVAL_S,
        metavar="SECONDS",
        help="how often to ask the kubelet which GPUs are allocated, between discoveries, "
        f"0.1..86400 (default {DEFAULT_POD_RESOURCES_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--health-interval",
        type=HEALTH_INTERVAL,
        default=1.0,
        metavar="SECONDS",
        help="health and load poll period, 0.1..3600 (default 1)",
    )
    parser.add_argument(
        "--jitter",
        type=JITTER,
        default=0.1,
        metavar="FRACTION",
        help="random spread of the discovery interval, 0..0.5 (default 0.1)",
    )
    parser.add_argument(
        "--min-trigger-interval",
        type=MIN_TRIGGER_INTERVAL,
        default=5.0,
        metavar="SECONDS",
        help="least time between two event-triggered cycles, 0..86400 (default 5)",
    )
    parser.add_argument(
        "--xid-window",
        type=XID_WINDOW,
        default=DEFAULT_XID_WINDOW_S,
        metavar="SECONDS",
        help="an XID not seen again for this long stops counting for GPU health, except XIDs "
        "that need a GPU reset (48, 63, 64, 79, 94, 95); 0: XIDs count until the agent "
        f"restarts; at most 604800, a week (default {DEFAULT_XID_WINDOW_S:g})",
    )
    parser.add_argument("--no-udev", action="store_true", help="do not watch udev for GPU hotplug")
    parser.add_argument(
        "--driver-upgrade-poll-interval",
        type=UPGRADE_POLL,
        default=DEFAULT_UPGRADE_POLL_S,
        metavar="SECONDS",
        help="how often to read the GPU Operator's nvidia.com/gpu-driver-upgrade-state label on "
        "this Node; NVML is released while the driver is being replaced (docs/coexistence.md); "
        f"0: never read it; at most 3600 (default {DEFAULT_UPGRADE_POLL_S:g})",
    )


def _api_client(kubeconfig: str | None, context: str | None = None) -> KubeClient:
    """The agent's own small REST client (:mod:`gputopo.core.kube`), not the ``kubernetes``
    package: importing that costs about 30 MiB on every node."""
    from gputopo.core.kube import KubeConfigError, client_from_config

    try:
        return client_from_config(kubeconfig, context=context)
    except KubeConfigError as error:
        if kubeconfig:
            raise CliError(f"--kubeconfig {kubeconfig!r}: {error.detail}") from None
        raise CliError(str(error)) from None


def _print_result(what: str, result: PublishResult | None) -> None:
    if result is None:
        return
    for change in result.changes:
        print(change.describe())
    line = f"{what}: {result.status}"
    if result.message:
        line += f" ({result.message})"
    print(line)


def _node_name_from_environment() -> str | None:
    """``NODE_NAME`` (the DaemonSet's downward API), checked as ``--node-name`` is."""
    value = os.environ.get("NODE_NAME")
    if not value:
        return None
    try:
        return node_name(value)
    except argparse.ArgumentTypeError as error:
        raise CliError(f"NODE_NAME: {error}") from None


def run_run(args: argparse.Namespace) -> int:
    options = publish_options(args)
    taint_options = device_taint_options(args, options)
    check_machine_arguments(args)
    node = args.node_name or _node_name_from_environment()
    if not node:
        raise CliError("no node to publish to: pass --node-name or set NODE_NAME")
    if not args.once and not args.prune:
        try:
            parse_address(args.metrics_address)  # before any API call
        except ValueError as error:
            raise CliError(str(error)) from None
    from gputopo.agent.publish.nrt import NrtPublisher

    api = _api_client(args.kubeconfig, args.context)
    from gputopo.agent.publish.events import NodeEvents

    publisher = Publisher(api, node, options, events=NodeEvents(api, node))
    nrt = NrtPublisher(api, node) if args.publish_nrt else None
    device_taints = None
    if taint_options is not None:
        device_taints = DeviceTaintPublisher(api, node, taint_options)

    if args.prune:
        result = publisher.prune(dry_run=args.dry_run)
        _print_result(f"Node {node}", result)
        nrt_result = nrt.prune(dry_run=args.dry_run) if nrt is not None else None
        _print_result(f"NodeResourceTopology {node}", nrt_result)
        taints = device_taints.prune(dry_run=args.dry_run) if device_taints is not None else None
        _print_result(f"DeviceTaintRules of {node}", taints)
        return 0 if CycleResult(result, nrt_result, taints).ok else EXIT_FAILURE

    with machine_source(args) as source:
        if not args.once:
            from gputopo.agent.driver_upgrade import UpgradeStateReader
            from gputopo.agent.runloop import run_agent

            upgrade_state = (
                UpgradeStateReader(api, node) if args.driver_upgrade_poll_interval > 0 else None
            )
            return run_agent(
                source.discoverer,
                publisher,
                args,
                nrt=nrt,
                device_taints=device_taints,
                upgrade_state=upgrade_state,
            )
        cycle = run_cycle(
            lambda: discover_topology(source),
            publisher,
            nrt=nrt,
            device_taints=device_taints,
            dry_run=args.dry_run,
        )
        _print_result(f"Node {node}", cycle.node)
        _print_result(f"NodeResourceTopology {node}", cycle.nrt)
        _print_result(f"DeviceTaintRules of {node}", cycle.device_taints)
        return 0 if cycle.ok else EXIT_FAILURE
