"""The end-to-end benchmark's round bookkeeping: the order, the bar, and the verdicts read over
many rounds (`tests/bench/rounds.py`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.bench.rounds import (
    CEILING,
    CONTROL,
    GPUTOPO,
    KUBE,
    add_ceiling_fractions,
    add_target_verdicts,
    main,
    median_interval,
    round_bar,
    round_orders,
    rounds_of,
)


def _round(kube: float, gputopo: float, ceiling: float, control: float | None = None) -> list[Any]:
    rates = {KUBE: kube, GPUTOPO: gputopo, CEILING: ceiling}
    if control is not None:
        rates[CONTROL] = control
    return [{"scheduler": name, "steady_pods_per_s": rate} for name, rate in rates.items()]


def test_orders_alternate_so_every_run_has_the_same_mean_position() -> None:
    orders = round_orders(4, ("variant",), control=True)
    assert orders[0] == (KUBE, GPUTOPO, "variant", CEILING, CONTROL)
    assert orders[1] == orders[0][::-1]
    assert orders[2] == orders[0] and orders[3] == orders[1]
    for name in orders[0]:
        assert sum(order.index(name) for order in orders) / len(orders) == 2.0


def test_the_bar_is_the_lower_of_the_two_targets() -> None:
    ceiling_bound, kube_bound = _round(300.0, 0.0, 600.0), _round(500.0, 0.0, 600.0)
    assert round_bar({r["scheduler"]: r for r in ceiling_bound}) == pytest.approx(390.0)
    assert round_bar({r["scheduler"]: r for r in kube_bound}) == pytest.approx(540.0)


def test_verdicts_mark_each_round_and_summarise_them() -> None:
    results = [*_round(400, 530, 600), *_round(400, 500, 600), *_round(300, 400, 700)]
    add_ceiling_fractions(results, 3)
    lines = add_target_verdicts(results, 3)
    gputopo = [r for r in results if r["scheduler"] == GPUTOPO]
    assert [r["bar"] for r in gputopo] == [520.0, 520.0, 390.0]
    assert [r["meets_target"] for r in gputopo] == [True, False, True]
    assert gputopo[2]["of_ceiling"] == pytest.approx(400 / 700, abs=1e-3)
    assert lines[0] == f"{GPUTOPO}: target met in 2 of 3 rounds"
    assert lines[1].startswith(f"{GPUTOPO} / bar: median 1.02 (too few rounds")
    assert len(lines) == 2  # no control ran


def test_the_control_is_judged_by_the_same_bar_and_against_the_ceiling() -> None:
    results = [
        *_round(400, 530, 600, control=560),
        *_round(400, 530, 600, control=520),
        *_round(400, 530, 600, control=500),
    ]
    lines = add_target_verdicts(results, 4)
    controls = [r for r in results if r["scheduler"] == CONTROL]
    assert [r["meets_target"] for r in controls] == [True, True, False]
    assert f"{CONTROL}: target met in 2 of 3 rounds" in lines
    assert lines[-1].endswith("at least 0.9 in 1 of 3 rounds")  # 0.93, 0.87, 0.83


def test_rounds_must_be_whole_and_hold_every_run() -> None:
    with pytest.raises(ValueError, match="not rounds of 3"):
        rounds_of(_round(1, 2, 3)[:2], 3)
    broken = [*_round(1, 2, 3)[:2], {"scheduler": KUBE, "steady_pods_per_s": 1.0}]
    with pytest.raises(ValueError, match="round 1 lacks a run"):
        rounds_of(broken, 3)


@pytest.mark.parametrize("count", [6, 8, 9, 16, 39, 100])
def test_the_median_interval_is_the_widest_order_statistics_with_95_percent_coverage(
    count: int,
) -> None:
    values = [float(v) for v in range(count)]
    median, interval = median_interval(values)
    assert median == (count - 1) / 2
    assert interval is not None
    k = int(interval[0]) + 1  # the interval is the k-th smallest to the k-th largest value
    assert interval[1] == count - k

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(count, i) for i in range(k)) / 2**count

    assert coverage(k) >= 0.95 > coverage(k + 1)


def test_the_median_interval_needs_six_values_at_95_percent() -> None:
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, None)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (3.5, (1.0, 6.0))
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def _saved(path: Path, rounds: list[list[Any]]) -> Path:
    lines = ["=== bench output ===", *(json.dumps(r) for batch in rounds for r in batch), "x"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_main_pools_saved_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _saved(tmp_path / "a.txt", [_round(400, 530, 600)] * 3)
    second = _saved(tmp_path / "b.txt", [_round(400, 500, 600)] * 4)
    assert main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"{GPUTOPO}: target met in 3 of 7 rounds" in out
    assert "median 0.96 (95 % interval 0.96-1.02)" in out


def test_main_refuses_files_that_do_not_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = _saved(tmp_path / "plain.txt", [_round(400, 530, 600)])
    with_control = _saved(tmp_path / "control.txt", [_round(400, 530, 600, control=500)])
    assert main([str(plain), str(with_control)]) == 2
    assert "4 runs per round, the first file has 3" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("no results\n")
    assert main([str(empty)]) == 2
    assert "no end-to-end results with a ceiling run" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.txt")]) == 2
