"""`gputopo-scheduler extender`: serve kube-scheduler's extender verbs. Flags have env twins."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from agent.envtwins import apply_env_twins
from scheduler.errors import SchedulerInputError
from scheduler.runtime.logs import configure_json_logging
from scheduler.runtime.signals import stop_on_signals

log = logging.getLogger("gputopo.scheduler.cli")


def add_extender_parser(subparsers: Any) -> None:
    """Register `extender` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "extender",
        help="serve kube-scheduler's extender filter and prioritize verbs over HTTP",
        description=(
            "Answer kube-scheduler's extender calls (POST <urlPrefix>/filter and "
            "<urlPrefix>/prioritize) with gputopo's filters and scores, on a cache of Nodes, "
            "Pods and Namespaces kept by list+watch (so nodeCacheCapable: true works). "
            "GET /healthz and /readyz (ready once the cache has listed everything)."
        ),
    )
    parser.add_argument(
        "--listen",
        default=":8888",
        metavar="HOST:PORT",
        help="address to serve on ($GPUTOPO_EXTENDER_LISTEN, default :8888)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file ($GPUTOPO_KUBECONFIG; else in-cluster, $KUBECONFIG, ~/.kube/config)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="scoring profile YAML ($GPUTOPO_PROFILE; built-in defaults if unset)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="JSON log verbosity ($GPUTOPO_LOG_LEVEL)",
    )
    apply_env_twins(parser, "gputopo-scheduler extender", {"--listen": "GPUTOPO_EXTENDER_LISTEN"})
    parser.set_defaults(handler=extender_command)


def extender_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    configure_json_logging(args.log_level)
    # Imported here: the kubernetes client costs `simulate` start-up time it does not need.
    from scheduler.extender import Extender, ExtenderCache, ExtenderServer
    from scheduler.runtime.framework import CoreFramework
    from scheduler.runtime.kube import KubeApi, load_api_client

    framework = CoreFramework.from_profile(args.profile)
    try:
        api = KubeApi(load_api_client(args.kubeconfig))
    except ValueError as err:
        raise SchedulerInputError(str(err)) from None
    watch = ExtenderCache(api, framework)
    extender = Extender(framework, watch.cache.lock, binder=api.bind)
    try:
        server = ExtenderServer(args.listen, extender, ready=watch.synced, healthy=watch.healthy)
    except ValueError as err:
        raise SchedulerInputError(str(err)) from None
    except OSError as err:
        raise SchedulerInputError(f"--listen {args.listen!r}: {err}") from None
    stopping = stop_on_signals()
    watch.start()
    server.start()
    log.info("extender serving", extra={"listen": args.listen, "port": server.port})
    while not stopping.wait(1.0):
        pass
    server.stop()
    watch.stop()
    return 0
