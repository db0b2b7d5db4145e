"""A Prometheus server scraping given loopback targets, and a small PromQL client (urllib)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.processes import ComponentFailedError, ManagedProcess, free_port


class PromQLError(RuntimeError):
    """The query API answered with an error (bad PromQL, timeout, ...)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant-vector result."""

    labels: dict[str, str]
    value: float
    timestamp: float


def query(base_url: str, promql: str, timeout: float = 5.0) -> list[Sample]:
    """Instant query via /api/v1/query; a vector or scalar result as samples."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
        raise PromQLError(f"query {promql!r}: {body.get('error', error)}") from error
    if body.get("status") != "success":
        raise PromQLError(f"query {promql!r}: {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] == "scalar":
        timestamp, value = data["result"]
        return [Sample(labels={}, value=float(value), timestamp=float(timestamp))]
    if data["resultType"] != "vector":
        raise PromQLError(f"query {promql!r}: expected a vector, got {data['resultType']}")
    return [
        Sample(
            labels=dict(series["metric"]),
            value=float(series["value"][1]),
            timestamp=float(series["value"][0]),
        )
        for series in data["result"]
    ]


class PrometheusServer:
    """`prometheus` with a generated scrape config: one job per entry of `jobs`, and the rule
    files given (evaluated every scrape interval)."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        jobs: Mapping[str, Sequence[str]],
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {
                    "job_name": job,
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    "static_configs": [{"targets": list(targets)}],
                }
                for job, targets in jobs.items()
            ],
        }
        if rule_files:
            config["rule_files"] = [str(path) for path in rule_files]
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        # Debian's Prometheus 2.42 has been seen to die of SIGSEGV while starting on a loaded
        # 2-core machine (rarely: 0 of 15 quiet starts). A start killed by a signal before it
        # was ready is retried once, with a fresh data directory, and said so on stderr.
        for attempt in (1, 2):
            self.process = ManagedProcess(
                "prometheus",
                [
                    str(binary),
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={workdir / f'data-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                workdir / "prometheus.log",
                workdir,
            )
            try:
                self.startup_seconds = self.process.wait_until(
                    lambda: _status(f"{self.url}/-/ready") == 200, 30.0, "ready (/-/ready)"
                )
                break
            except ComponentFailedError:
                status = self.process.popen.returncode
                self.process.stop()
                if attempt == 2 or status is None or status >= 0:
                    raise
                print(
                    f"prometheus died of signal {-status} while starting; "
                    f"retrying once (log {workdir / 'prometheus.log'})",
                    file=sys.stderr,
                )

    def query(self, promql: str) -> list[Sample]:
        return query(self.url, promql)

    def wait_for(self, promql: str, timeout: float = 15.0) -> list[Sample]:
        """Poll until the query returns at least one series (e.g. after the first scrape)."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(promql)
            if samples:
                return samples
            if time.monotonic() > deadline:
                raise self.process.failure(f"returned nothing for {promql!r} within {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.stop()


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)
