"""The load-aware flags, one definition shared by `run` and `extender`.

Both subcommands score with the same core, so they read Prometheus the same way; a flag added
here reaches both, each with its environment twin (the caller applies `apply_env_twins` after
adding these).
"""

from __future__ import annotations

import argparse

from gputopo.scheduler.prometheus_load import DEFAULT_QUERIES, LoadConfig, LoadTracker


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--prometheus-url and the load query, window, timeout, age and threshold flags."""
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus base URL for load-aware scoring ($GPUTOPO_PROMETHEUS_URL; off if unset)",
    )
    parser.add_argument(
        "--load-window",
        type=float,
        default=60.0,
        help="seconds of samples averaged per load query ($GPUTOPO_LOAD_WINDOW)",
    )
    parser.add_argument(
        "--load-timeout",
        type=float,
        default=2.0,
        help="seconds one PromQL query may take ($GPUTOPO_LOAD_TIMEOUT)",
    )
    parser.add_argument(
        "--load-refresh-interval",
        type=float,
        default=10.0,
        help="seconds between background load reads ($GPUTOPO_LOAD_REFRESH_INTERVAL)",
    )
    parser.add_argument(
        "--load-max-age",
        type=float,
        default=120.0,
        help="seconds after which load is unknown, i.e. neutral ($GPUTOPO_LOAD_MAX_AGE)",
    )
    parser.add_argument(
        "--load-threshold",
        action="append",
        default=[],
        metavar="RESOURCE=RATIO",
        help="refuse nodes above this load: gpu_utilization, gpu_memory or node_cpu "
        "(repeatable; none by default)",
    )
    parser.add_argument(
        "--load-query",
        action="append",
        default=[],
        metavar="RESOURCE=PROMQL",
        help="replace a resource's PromQL ({window} is substituted; result labels node[, gpu])",
    )


def _pairs(flag: str, values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"{flag} {value!r}: expected NAME=VALUE")
        out[name.strip()] = rest
    return out


def build_load_tracker(args: argparse.Namespace) -> LoadTracker | None:
    """The Prometheus load tracker the flags describe; None without --prometheus-url.

    ValueError (a bad threshold or query name) and SchedulerInputError (LoadConfig's checks)
    name the flag."""
    if not args.prometheus_url:
        return None
    thresholds: dict[str, float] = {}
    for name, text in _pairs("--load-threshold", args.load_threshold).items():
        try:
            thresholds[name] = float(text)
        except ValueError:
            raise ValueError(f"--load-threshold {name}={text}: expected a ratio") from None
    queries = dict(DEFAULT_QUERIES)
    for name, promql in _pairs("--load-query", args.load_query).items():
        if name not in queries:
            raise ValueError(f"--load-query {name}: expected one of {', '.join(queries)}")
        queries[name] = promql
    return LoadTracker(
        LoadConfig(
            url=args.prometheus_url,
            queries=queries,
            window_s=args.load_window,
            timeout_s=args.load_timeout,
            refresh_interval_s=args.load_refresh_interval,
            max_age_s=args.load_max_age,
            thresholds=thresholds,
        )
    )
