"""The end-to-end benchmark's rounds: who runs when, and what the rounds say together.

`tests/bench/test_e2e_scheduler_bench.py` runs kube-scheduler, gputopo-scheduler and the ceiling
binder (`tests/bench/ceiling_binder.py`) once per round on one control plane, each for about
two seconds of binding at 200 nodes. One round's rates move with whatever else the control
plane does in those seconds (kwok's status updates for the pods just bound, for one): run twice
per round (the control, below), the ceiling binder bound at 0.57-1.54 x its other run's rate
(docs/performance.md, "Reading the rounds together"). So a round's verdict is a coin with a
bias, and the rounds are read together here:

* `add_target_verdicts`: issue 21's bar per round, the lower of 0.9 x the ceiling and 1.3 x
  kube-scheduler, how many rounds met it, and the median of gputopo / bar with its
  distribution-free 95 % interval (`median_interval`): when the interval's low end is above 1,
  gputopo beat the bar in more rounds than chance gives (the sign test).
* The control (``GPUTOPO_BENCH_CONTROL=1``): a second ceiling binder run per round, judged by
  the same bar. It costs what the ceiling costs, so how often it misses the bar is the rounds'
  noise floor: no scheduler can be expected to meet a per-round bar more often.

``python -m tests.bench.rounds FILE...`` pools the result lines (one JSON object per run, as
the benchmark prints them) of several runs' saved output and prints the same summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KUBE = "kube-scheduler"
GPUTOPO = "gputopo-scheduler"
CEILING = "ceiling"  # tests/bench/ceiling_binder.py
CONTROL = "ceiling-control"  # the ceiling binder again, judged as a scheduler


def round_orders(
    rounds: int, extra: Sequence[str] = (), *, control: bool = False
) -> list[tuple[str, ...]]:
    """Who goes when in each round: kube-scheduler, gputopo, ``extra``, the ceiling (and the
    control), then the other way round (ABBA), so every run's mean position over two rounds
    is the same. Rates drift down over consecutive runs on one control plane (etcd and the
    watch cache grow; measured 531 -> 484 -> 380 pods/s for kube-scheduler over three rounds),
    so a fixed order hands the earlier slot's advantage to one scheduler every round."""
    order = (KUBE, GPUTOPO, *extra, CEILING, *((CONTROL,) if control else ()))
    return [order if index % 2 == 0 else order[::-1] for index in range(rounds)]


def rounds_of(results: Sequence[dict[str, Any]], per_round: int) -> list[dict[str, Any]]:
    """The results grouped per round, by scheduler name (each round has every name once)."""
    if per_round <= 0 or len(results) % per_round:
        raise ValueError(f"{len(results)} results are not rounds of {per_round}")
    grouped = []
    for start in range(0, len(results), per_round):
        batch = {result["scheduler"]: result for result in results[start : start + per_round]}
        if len(batch) != per_round or CEILING not in batch:
            raise ValueError(f"round {start // per_round + 1} lacks a run: {sorted(batch)}")
        grouped.append(batch)
    return grouped


def add_ceiling_fractions(results: Sequence[dict[str, Any]], per_round: int) -> None:
    """``of_ceiling`` on every result: its steady rate / the ceiling's in the same round."""
    for batch in rounds_of(results, per_round):
        ceiling = batch[CEILING]["steady_pods_per_s"]
        for result in batch.values():
            result["of_ceiling"] = round(result["steady_pods_per_s"] / ceiling, 3)


def round_bar(batch: dict[str, Any]) -> float:
    """Issue 21's bar in one round: the lower of 0.9 x the ceiling's steady rate and 1.3 x
    kube-scheduler's."""
    ceiling = float(batch[CEILING]["steady_pods_per_s"])
    return min(0.9 * ceiling, 1.3 * float(batch[KUBE]["steady_pods_per_s"]))


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, tuple[float, float] | None]:
    """The median of ``values`` and a distribution-free interval around it: the k-th smallest
    and k-th largest value, k the largest whose interval covers the true median with at least
    ``confidence`` (the number of values below the median is binomial(n, 1/2)); None when
    even the whole range does not (at 95 %: fewer than 6 values)."""
    ordered = sorted(values)
    count = len(ordered)
    if not count:
        raise ValueError("no values")
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    tail = 0.0  # P(fewer than k values below the median), k = 1, 2, ...
    k = 0
    while k < middle:
        below = tail + math.comb(count, k) / 2**count
        if 1 - 2 * below < confidence:
            break
        tail = below
        k += 1
    if k == 0:
        return median, None
    return median, (ordered[k - 1], ordered[count - k])


def _verdicts(ratios: list[float]) -> str:
    median, interval = median_interval(ratios)
    spread = (
        f"95 % interval {interval[0]:.2f}-{interval[1]:.2f}"
        if interval
        else "too few rounds for a 95 % interval"
    )
    return f"median {median:.2f} ({spread}), lowest {min(ratios):.2f}, highest {max(ratios):.2f}"


def add_target_verdicts(results: Sequence[dict[str, Any]], per_round: int) -> list[str]:
    """Issue 21's target on every gputopo result (and the control's, when it ran): ``bar``
    (`round_bar`) and ``meets_target``; returns the summary lines."""
    rounds = rounds_of(results, per_round)
    lines = []
    for name in (GPUTOPO, CONTROL):
        if name not in rounds[0]:
            continue
        ratios = []
        for batch in rounds:
            bar = round_bar(batch)
            ours = batch[name]
            ours["bar"] = round(bar, 1)
            ours["meets_target"] = ours["steady_pods_per_s"] >= bar
            ratios.append(ours["steady_pods_per_s"] / bar)
        met = sum(ratio >= 1 for ratio in ratios)
        lines.append(f"{name}: target met in {met} of {len(ratios)} rounds")
        lines.append(f"{name} / bar: {_verdicts(ratios)}")
    if CONTROL in rounds[0]:
        fractions = [
            batch[CONTROL]["steady_pods_per_s"] / batch[CEILING]["steady_pods_per_s"]
            for batch in rounds
        ]
        reached = sum(fraction >= 0.9 for fraction in fractions)
        lines.append(
            f"{CONTROL} / ceiling: {_verdicts(fractions)}; "
            f"at least 0.9 in {reached} of {len(fractions)} rounds"
        )
    return lines


def read_results(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], int]:
    """The result lines of saved benchmark output, pooled, and the runs per round (the
    scheduler names of the first file's lines; every file must have the same)."""
    pooled: list[dict[str, Any]] = []
    per_round = 0
    for path in paths:
        results = [
            json.loads(line)
            for line in path.read_text().splitlines()
            if line.startswith('{"scheduler"')
        ]
        names = {result["scheduler"] for result in results}
        if not results or CEILING not in names:
            raise ValueError(f"{path}: no end-to-end results with a ceiling run")
        if per_round and len(names) != per_round:
            raise ValueError(f"{path}: {len(names)} runs per round, the first file has {per_round}")
        per_round = len(names)
        rounds_of(results, per_round)  # whole rounds only
        pooled.extend(results)
    return pooled, per_round


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.bench.rounds", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="saved output of benchmark runs")
    args = parser.parse_args(argv)
    try:
        results, per_round = read_results(args.files)
        add_ceiling_fractions(results, per_round)
        lines = add_target_verdicts(results, per_round)
    except (OSError, ValueError, KeyError) as err:
        print(f"tests.bench.rounds: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
