"""The load-aware flags, one definition shared by `run` and `extender`.

Both subcommands score with the same core, so they read Prometheus the same way; a flag added
here reaches both, each with its environment twin (the caller applies `apply_env_twins` after
adding these).
"""

from __future__ import annotations

import argparse
import math
from typing import Final

from gputopo.core.flags import seconds
from gputopo.scheduler.prometheus_load import (
    DEFAULT_QUERIES,
    RESOURCES,
    LoadConfig,
    LoadTracker,
    check_query,
)

# A window of samples Prometheus averages (it keeps 15 days by default).
LOAD_WINDOW: Final = seconds(0.0, 7 * 86400.0)
# One query's timeout; the refresh thread waits up to five of them when it stops.
LOAD_TIMEOUT: Final = seconds(0.0, 600.0)
# At least 0.1 s between reads: a smaller interval is a loop against Prometheus.
LOAD_REFRESH_INTERVAL: Final = seconds(0.1, 86400.0, low_open=False)
LOAD_MAX_AGE: Final = seconds(0.0, 7 * 86400.0)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--prometheus-url and the load query, window, timeout, age and threshold flags."""
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus base URL for load-aware scoring ($GPUTOPO_PROMETHEUS_URL; off if unset)",
    )
    parser.add_argument(
        "--load-window",
        type=LOAD_WINDOW,
        default=60.0,
        help="seconds of samples averaged per load query ($GPUTOPO_LOAD_WINDOW)",
    )
    parser.add_argument(
        "--load-timeout",
        type=LOAD_TIMEOUT,
        default=2.0,
        help="seconds one PromQL query may take ($GPUTOPO_LOAD_TIMEOUT)",
    )
    parser.add_argument(
        "--load-refresh-interval",
        type=LOAD_REFRESH_INTERVAL,
        default=10.0,
        help="seconds between background load reads ($GPUTOPO_LOAD_REFRESH_INTERVAL)",
    )
    parser.add_argument(
        "--load-max-age",
        type=LOAD_MAX_AGE,
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


def load_flags(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str]]:
    """The thresholds and queries the repeatable flags name, checked whether or not
    --prometheus-url is set: a bad flag is refused even where it would go unused.

    ValueError and SchedulerInputError name the flag and its value."""
    thresholds: dict[str, float] = {}
    for name, text in _pairs("--load-threshold", args.load_threshold).items():
        if name not in RESOURCES:
            raise ValueError(f"--load-threshold {name}: expected one of {', '.join(RESOURCES)}")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--load-threshold {name}={text}: expected a ratio") from None
        if not math.isfinite(value) or not 0 < value <= 1:
            raise ValueError(f"--load-threshold {name}={text}: expected a ratio in (0, 1]")
        thresholds[name] = value
    queries = dict(DEFAULT_QUERIES)
    for name, promql in _pairs("--load-query", args.load_query).items():
        if name not in queries:
            raise ValueError(f"--load-query {name}: expected one of {', '.join(queries)}")
        check_query(name, promql)
        queries[name] = promql
    return thresholds, queries


def build_load_tracker(args: argparse.Namespace) -> LoadTracker | None:
    """The Prometheus load tracker the flags describe; None without --prometheus-url.

    ValueError (a bad threshold or query) and SchedulerInputError (LoadConfig's checks) name
    the flag; both are raised with or without --prometheus-url."""
    thresholds, queries = load_flags(args)
    if not args.prometheus_url:
        return None
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
