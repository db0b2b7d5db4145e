"""``gputopo-agent run`` without ``--once``: the wiring around :class:`agent.loop.Agent` — the
metrics and probe server, the kubelet's pod-resources client and the signal handlers. The run
loop's flags live with the other ``run`` flags (:mod:`agent.cli_publish`); logging and the probe
server are the ground floor's (:mod:`gputopo.core.logs`, :mod:`gputopo.core.serve`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from gputopo.agent.discovery import Discoverer
from gputopo.agent.driver_upgrade import DEFAULT_UPGRADE_POLL_S
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.metrics import MetricsCollector, build_registry
from gputopo.agent.nvml import XidDecay
from gputopo.agent.podresources import PodResourcesClient
from gputopo.agent.publish.cycle import DeviceTaintWriter, NrtWriter
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.triggers import signal_handlers
from gputopo.core.address import parse_address
from gputopo.core.flags import UsageError
from gputopo.core.logs import configure_logging
from gputopo.core.serve import Probes, ProbeServer

log = logging.getLogger(__name__)


def serve(agent: Agent, address: str, *, registry_version: str | None = None) -> ProbeServer:
    """The metrics/probe server for ``agent`` on ``address``, started."""
    collector = MetricsCollector(agent.holder, agent.stats, version=registry_version)
    probes = Probes(liveness=agent.liveness, readiness=agent.readiness)
    return ProbeServer.at(address, registry=build_registry(collector), probes=probes).start()


def run_agent(
    discoverer: Discoverer,
    publisher: Publisher | None,
    args: argparse.Namespace,
    *,
    nrt: NrtWriter | None = None,
    device_taints: DeviceTaintWriter | None = None,
    upgrade_state: Callable[[], str | None] | None = None,
) -> int:
    """``gputopo-agent run`` (not ``--once``): the parsed flags of
    :func:`agent.cli_publish.add_runloop_arguments` plus ``--interval``, ``--dry-run`` and
    ``--log-format``/``--log-level``; ``discoverer`` is open; ``upgrade_state`` reads the GPU
    Operator's upgrade state of this node (:mod:`agent.driver_upgrade`); returns the exit
    status."""
    configure_logging(args.log_format, args.log_level)
    try:
        config = RunLoopConfig(
            interval_s=args.interval,
            jitter=args.jitter,
            health_interval_s=args.health_interval,
            pod_resources_interval_s=args.pod_resources_interval,
            min_trigger_interval_s=args.min_trigger_interval,
            dry_run=getattr(args, "dry_run", False),
            udev=not args.no_udev,
            upgrade_poll_interval_s=args.driver_upgrade_poll_interval or DEFAULT_UPGRADE_POLL_S,
        )
        xid_decay = XidDecay(window_s=args.xid_window)
        parse_address(args.metrics_address)
    except ValueError as error:
        raise UsageError(f"gputopo-agent: error: {error}") from None
    discoverer.adapter.xid_decay = xid_decay
    socket_path = args.pod_resources_socket
    # A channel per poll: between polls gRPC has none and its own threads stop; reconnecting to
    # a local unix socket every --pod-resources-interval is cheaper than keeping them.
    pod_client = PodResourcesClient(socket_path, keep_open=False) if socket_path else None
    agent = Agent(
        discoverer,
        publisher=publisher,
        nrt=nrt,
        device_taints=device_taints,
        pod_resources=pod_client,
        config=config,
        upgrade_state=upgrade_state,
    )
    try:
        server = serve(agent, args.metrics_address)
    except OSError as error:
        raise UsageError(
            f"gputopo-agent: error: --metrics-address {args.metrics_address}: {error.strerror}"
        ) from None
    log.info("serving /metrics, /healthz, /readyz on %s", server.url)
    try:
        with signal_handlers(agent):
            return agent.run()
    finally:
        server.stop()
        if pod_client is not None:
            pod_client.close()
