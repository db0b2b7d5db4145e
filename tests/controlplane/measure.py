"""`python -m tests.controlplane.measure [runs]`: how long the real control plane takes to start.

Each run starts etcd + kube-apiserver in a fresh temporary directory (as the `control_plane`
fixture does), then kube-scheduler and kwok, and prints the seconds each took to answer ready;
the summary is the median and the worst run. Needs `make tools` first.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from hack.testenv import ToolsMissingError, locate
from tests.controlplane.cluster import running_control_plane
from tests.controlplane.processes import ComponentFailedError

COLUMNS = ("etcd", "kube-apiserver", "etcd+apiserver", "kube-scheduler", "kwok")


def measure_once() -> tuple[float, ...]:
    tools = locate()
    with (
        tempfile.TemporaryDirectory(prefix="gputopo-measure-") as workdir,
        running_control_plane(tools, Path(workdir)) as plane,
    ):
        assert plane.startup is not None
        started = time.monotonic()
        plane.start_scheduler()
        scheduler = time.monotonic() - started
        started = time.monotonic()
        plane.start_kwok()
        kwok = time.monotonic() - started
        startup = plane.startup
        return (startup.etcd, startup.kube_apiserver, startup.total, scheduler, kwok)


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    rows: list[tuple[float, ...]] = []
    try:
        for run in range(runs):
            rows.append(measure_once())
            print(
                f"run {run + 1}: "
                + "  ".join(f"{c} {v:.2f}s" for c, v in zip(COLUMNS, rows[-1], strict=True))
            )
    except (ToolsMissingError, ComponentFailedError) as error:
        print(f"measure: {error}", file=sys.stderr)
        return 1
    for column, values in zip(COLUMNS, zip(*rows, strict=True), strict=True):
        print(f"{column:<15} median {statistics.median(values):.2f} s  max {max(values):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
