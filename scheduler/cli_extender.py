"""`gputopo-scheduler extender`: serve kube-scheduler's extender verbs. Flags have env twins.

The verbs are served over mutual TLS (kube-scheduler presents the client certificate its
``tlsConfig`` names); plain, unauthenticated HTTP needs ``--insecure-no-auth``, because ``bind``
writes with a ServiceAccount that may bind any pod (docs/security.md)."""

from __future__ import annotations

import argparse
import logging
import ssl
from typing import TYPE_CHECKING, Any

from gputopo.core.flags import add_kubeconfig_arguments, apply_env_twins
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.cli_load import add_load_arguments, build_load_tracker
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.runtime.signals import stop_on_signals

if TYPE_CHECKING:
    from gputopo.scheduler.runtime.kube import JsonDict

log = logging.getLogger("gputopo.scheduler.cli")


def add_extender_parser(subparsers: Any) -> None:
    """Register `extender` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "extender",
        help="serve kube-scheduler's extender verbs (filter, prioritize, preempt, bind)",
        description=(
            "Answer kube-scheduler's extender calls (POST <urlPrefix>/filter, "
            "<urlPrefix>/prioritize, <urlPrefix>/preempt and <urlPrefix>/bind) with gputopo's "
            "filters and scores: preempt keeps only the candidate nodes whose victims, once "
            "gone, let the pod pass gputopo's filters; bind binds a pod only to a node those "
            "filters pass (docs/extender.md). All four answer from a cache of Nodes, "
            "Pods and Namespaces kept by list+watch (so nodeCacheCapable: true works). "
            "GET /healthz and /readyz (ready once the cache has listed everything; also on "
            "--probe-address, plain HTTP, for kubelet). Callers authenticate with a client "
            "certificate (mutual TLS); plain HTTP only with --insecure-no-auth. With "
            "--prometheus-url the scores are load-aware, as with `run`."
        ),
    )
    parser.add_argument(
        "--listen",
        default=":8888",
        metavar="HOST:PORT",
        help="address to serve on ($GPUTOPO_EXTENDER_LISTEN, default :8888)",
    )
    tls = parser.add_argument_group("authentication (mutual TLS; docs/extender.md)")
    tls.add_argument(
        "--tls-cert-file",
        default="",
        metavar="PATH",
        help="the server's certificate (PEM, with its chain)",
    )
    tls.add_argument(
        "--tls-private-key-file", default="", metavar="PATH", help="the server's private key"
    )
    tls.add_argument(
        "--client-ca-file",
        default="",
        metavar="PATH",
        help="CA bundle a caller's client certificate must chain to (kube-scheduler's tlsConfig "
        "certFile is signed by it); a caller without one cannot connect",
    )
    tls.add_argument(
        "--client-name",
        action="append",
        default=[],
        metavar="CN",
        help="accept only client certificates with this subject CN (repeatable; default: any "
        "the client CA signed)",
    )
    tls.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve plain HTTP to any caller, without TLS: anyone who reaches the port can bind "
        "any pod to any node gputopo's filters pass; for tests and a loopback-only --listen",
    )
    parser.add_argument(
        "--probe-address",
        default="",
        metavar="HOST:PORT",
        help="also serve GET /healthz and /readyz (only those) in plain HTTP here, for kubelet's "
        "probes, which cannot present a client certificate (default: off)",
    )
    add_kubeconfig_arguments(parser)
    parser.add_argument(
        "--profile",
        default=None,
        help="scoring profile YAML ($GPUTOPO_PROFILE; built-in defaults if unset)",
    )
    add_load_arguments(parser)
    add_logging_arguments(parser)
    apply_env_twins(
        parser,
        "gputopo-scheduler",
        {
            "--listen": "GPUTOPO_EXTENDER_LISTEN",
            "--tls-cert-file": "GPUTOPO_EXTENDER_TLS_CERT_FILE",
            "--tls-private-key-file": "GPUTOPO_EXTENDER_TLS_PRIVATE_KEY_FILE",
            "--client-ca-file": "GPUTOPO_EXTENDER_CLIENT_CA_FILE",
            "--client-name": "GPUTOPO_EXTENDER_CLIENT_NAME",
            "--insecure-no-auth": "GPUTOPO_EXTENDER_INSECURE_NO_AUTH",
            "--probe-address": "GPUTOPO_EXTENDER_PROBE_ADDRESS",
        },
    )
    parser.set_defaults(handler=extender_command)


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The mutual TLS context the flags ask for; None only with --insecure-no-auth.
    SchedulerInputError (one line, exit 2) for a half-given or unloadable set."""
    files = (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    if args.insecure_no_auth:
        if any(files):
            raise SchedulerInputError(
                "--insecure-no-auth: cannot be combined with --tls-cert-file, "
                "--tls-private-key-file or --client-ca-file"
            )
        return None
    if not all(files):
        raise SchedulerInputError(
            "the extender serves bind, which binds pods with its own credentials: give "
            "--tls-cert-file, --tls-private-key-file and --client-ca-file (mutual TLS, "
            "docs/extender.md), or --insecure-no-auth to serve any caller in plain HTTP"
        )
    from gputopo.core.tls import mutual_tls_context

    try:
        return mutual_tls_context(*files)
    except ValueError as err:
        raise SchedulerInputError(str(err)) from None


def extender_command(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    # Imported here: the kubernetes client costs `simulate` start-up time it does not need.
    from gputopo.core.serve import ProbeServer
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
    tls = tls_context(args)
    watch = ExtenderCache(api, framework)

    def read_pod(namespace: str, name: str) -> JsonDict:
        return api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    extender = Extender(framework, watch.cache.lock, binder=api.bind, pod_reader=read_pod)
    try:
        server = ExtenderServer(
            args.listen,
            extender,
            ready=watch.synced,
            healthy=watch.healthy,
            tls=tls,
            client_names=frozenset(args.client_name),
        )
    except ValueError as err:
        raise SchedulerInputError(str(err)) from None
    except OSError as err:
        raise SchedulerInputError(f"--listen {args.listen!r}: {err}") from None
    probe_server = None
    if args.probe_address:
        try:
            probe_server = ProbeServer.at(
                args.probe_address,
                flag="--probe-address",
                probes=server.probes,
                thread_name="extender-probes",
            )
        except ValueError as err:
            server.stop()
            raise SchedulerInputError(str(err)) from None
        except OSError as err:
            server.stop()
            raise SchedulerInputError(f"--probe-address {args.probe_address!r}: {err}") from None
    stopping = stop_on_signals()
    if load is not None:
        load.start()
    watch.start()
    server.start()
    if probe_server is not None:
        probe_server.start()
    log.info(
        "extender serving",
        extra={
            "listen": args.listen,
            "port": server.port,
            "tls": tls is not None,
            "probe_address": args.probe_address or None,
            "prometheus": args.prometheus_url,
        },
    )
    gctune.tune()
    frozen = False
    while not stopping.wait(0.2 if not frozen else 1.0):
        if not frozen and watch.synced():
            gctune.freeze_startup_heap()
            frozen = True
    server.stop()
    if probe_server is not None:
        probe_server.stop()
    watch.stop()
    if load is not None:
        load.stop()
    return 0
