"""`gputopo-scheduler extender`: serve kube-scheduler's extender verbs. Flags have env twins."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gputopo.core.flags import add_kubeconfig_arguments, apply_env_twins
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.cli_load import add_load_arguments, build_load_tracker
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.runtime.signals import stop_on_signals

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
            "GET /healthz and /readyz (ready once the cache has listed everything). With "
            "--prometheus-url the scores are load-aware, as with `run`."
        ),
    )
    parser.add_argument(
        "--listen",
        default=":8888",
        metavar="HOST:PORT",
        help="address to serve on ($GPUTOPO_EXTENDER_LISTEN, default :8888)",
    )
    add_kubeconfig_arguments(parser)
    parser.add_argument(
        "--profile",
        default=None,
        help="scoring profile YAML ($GPUTOPO_PROFILE; built-in defaults if unset)",
    )
    add_load_arguments(parser)
    add_logging_arguments(parser)
    apply_env_twins(parser, "gputopo-scheduler", {"--listen": "GPUTOPO_EXTENDER_LISTEN"})
    parser.set_defaults(handler=extender_command)


def extender_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    # Imported here: the kubernetes client costs `simulate` start-up time it does not need.
    from gputopo.scheduler.extender import Extender, ExtenderCache, ExtenderServer
    from gputopo.scheduler.runtime import gctune
    from gputopo.scheduler.runtime.core_adapter import CoreFramework
    from gputopo.scheduler.runtime.kube import load_kube_api

    try:
        load = build_load_tracker(args)
        framework = CoreFramework.from_profile(args.profile, load)
        api = load_kube_api(args.kubeconfig, context=args.context)
    except SchedulerInputError:
        raise
    except ValueError as err:  # a bad --load-* flag, an unreadable kubeconfig
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
    if load is not None:
        load.start()
    watch.start()
    server.start()
    log.info(
        "extender serving",
        extra={"listen": args.listen, "port": server.port, "prometheus": args.prometheus_url},
    )
    gctune.tune()
    frozen = False
    while not stopping.wait(0.2 if not frozen else 1.0):
        if not frozen and watch.synced():
            gctune.freeze_startup_heap()
            frozen = True
    server.stop()
    watch.stop()
    if load is not None:
        load.stop()
    return 0
