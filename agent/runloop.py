"""``gputopo-agent run`` without ``--once``: the run loop's flags (each with its ``GPUTOPO_*``
environment twin), logging, and the wiring around :class:`agent.loop.Agent` — the metrics and
probe server, the kubelet's pod-resources client and the signal handlers."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import DEFAULT_POD_RESOURCES_INTERVAL_S, Agent, RunLoopConfig
from gputopo.agent.metrics import MetricsCollector, MetricsServer, Probes, build_registry
from gputopo.agent.nvml import DEFAULT_XID_WINDOW_S, XidDecay
from gputopo.agent.podresources import DEFAULT_SOCKET, PodResourcesClient
from gputopo.agent.publish.cycle import NrtWriter
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.triggers import signal_handlers
from gputopo.core.flags import apply_env_twins, env_name

log = logging.getLogger(__name__)

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


# -- flags with environment twins -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run loop's flags. Added last to ``run``'s parser, they end by giving every option on
    it (the publishing and machine flags too) its ``GPUTOPO_*`` environment twin."""
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0:9465",
        metavar="HOST:PORT",
        help=f"serve /metrics, /healthz, /readyz here (env {env_name('--metrics-address')}; "
        "default 0.0.0.0:9465)",
    )
    parser.add_argument(
        "--pod-resources-socket",
        default=DEFAULT_SOCKET,
        metavar="PATH",
        help="the kubelet's pod-resources socket; empty to not read it "
        f"(env {env_name('--pod-resources-socket')}; default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--pod-resources-interval",
        type=float,
        default=DEFAULT_POD_RESOURCES_INTERVAL_S,
        metavar="SECONDS",
        help="how often to ask the kubelet which GPUs are allocated, between discoveries "
        f"(env {env_name('--pod-resources-interval')}; "
        f"default {DEFAULT_POD_RESOURCES_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--health-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help=f"health and load poll period (env {env_name('--health-interval')}; default 1)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help=f"random spread of the discovery interval, 0..0.5 (env {env_name('--jitter')}; "
        "default 0.1)",
    )
    parser.add_argument(
        "--min-trigger-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="least time between two event-triggered cycles "
        f"(env {env_name('--min-trigger-interval')}; default 5)",
    )
    parser.add_argument(
        "--xid-window",
        type=float,
        default=DEFAULT_XID_WINDOW_S,
        metavar="SECONDS",
        help="an XID not seen again for this long stops counting for GPU health, except XIDs "
        "that need a GPU reset (48, 63, 64, 79, 94, 95); 0: XIDs count until the agent "
        f"restarts (env {env_name('--xid-window')}; default {DEFAULT_XID_WINDOW_S:g})",
    )
    parser.add_argument(
        "--no-udev",
        action="store_true",
        help=f"do not watch udev for GPU hotplug (env {env_name('--no-udev')})",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="json",
        help=f"log line format (env {env_name('--log-format')}; default json)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help=f"(env {env_name('--log-level')}; default info)",
    )
    apply_env_twins(parser, "gputopo-agent")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (all interfaces); a clear error for anything else."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--metrics-address {text!r}: expected HOST:PORT, e.g. 0.0.0.0:9465")
    return (host.strip("[]") or "0.0.0.0", int(port_text))


# -- logging ------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, separators=(",", ":"))


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# -- the wiring around the loop -------------------------------------------------------------------


def serve(agent: Agent, address: str, *, registry_version: str | None = None) -> MetricsServer:
    """The metrics/probe server for ``agent`` on ``address``, started."""
    host, port = parse_address(address)
    collector = MetricsCollector(agent.holder, agent.stats, version=registry_version)
    probes = Probes(liveness=agent.liveness, readiness=agent.readiness)
    return MetricsServer(build_registry(collector), host=host, port=port, probes=probes).start()


def run_agent(
    discoverer: Discoverer,
    publisher: Publisher | None,
    args: argparse.Namespace,
    *,
    nrt: NrtWriter | None = None,
) -> int:
    """``gputopo-agent run`` (not ``--once``): the parsed flags of :func:`add_arguments` plus
    ``--interval`` and ``--dry-run``; ``discoverer`` is open; returns the exit status."""
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
        )
        xid_decay = XidDecay(window_s=args.xid_window)
        parse_address(args.metrics_address)
    except ValueError as error:
        raise SystemExit(f"gputopo-agent run: {error}") from None
    discoverer.adapter.xid_decay = xid_decay
    socket_path = args.pod_resources_socket
    # A channel per poll: between polls gRPC has none and its own threads stop; reconnecting to
    # a local unix socket every --pod-resources-interval is cheaper than keeping them.
    pod_client = PodResourcesClient(socket_path, keep_open=False) if socket_path else None
    agent = Agent(discoverer, publisher=publisher, nrt=nrt, pod_resources=pod_client, config=config)
    try:
        server = serve(agent, args.metrics_address)
    except OSError as error:
        raise SystemExit(
            f"gputopo-agent run: --metrics-address {args.metrics_address}: {error.strerror}"
        ) from None
    log.info("serving /metrics, /healthz, /readyz on %s", server.url)
    try:
        with signal_handlers(agent):
            return agent.run()
    finally:
        server.stop()
        if pod_client is not None:
            pod_client.close()
