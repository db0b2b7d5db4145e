"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

* A candidate takes the Lease when it is absent, released (empty holderIdentity) or expired.
  Expiry is judged on the local clock from when this candidate last *saw the record change*
  (client-go's observedTime), so clock skew between replicas does not matter.
* Every write is a PUT guarded by the resourceVersion just read: two candidates racing for an
  expired Lease cannot both win — the loser gets 409 Conflict.
* The holder renews every ``retry_period_s``; if it has not renewed successfully for
  ``renew_deadline_s`` it stops leading *before* the Lease can expire for others
  (renew deadline < lease duration), so two leaders never overlap.
* ``release`` (on SIGTERM) clears holderIdentity so a standby takes over at its next retry.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError

log = logging.getLogger("gputopo.scheduler.leader")


def micro_time(now: datetime | None = None) -> str:
    """RFC 3339 with exactly six fractional digits: the API server's MicroTime format."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election: expected retry period < renew deadline < lease duration, got "
                f"{self.retry_period_s}s / {self.renew_deadline_s}s / {self.lease_duration_s}s"
            )
        if not self.identity:
            raise ValueError("leader election: identity must not be empty")


@dataclass
class LeaderElector:
    """Runs the election loop in a thread and tells the runtime when it gains or loses the lead."""

    api: KubeApi
    config: LeaseConfig
    on_started_leading: Callable[[], None]
    on_stopped_leading: Callable[[], None]
    clock: Callable[[], float] = time.monotonic
    _leading: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _observed_spec: JsonDict | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    _last_renew: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def path(self) -> str:
        return (
            f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases/"
            f"{self.config.name}"
        )

    def is_leader(self) -> bool:
        """True only while the last successful renewal is within the renew deadline."""
        if not self._leading.is_set():
            return False
        return self.clock() - self._last_renew < self.config.renew_deadline_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; with ``release`` give the Lease up so a standby takes over now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.retry_period_s + 5)
        was_leading = self._leading.is_set()
        self._lose()
        if release and was_leading:
            self._release()

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            acquired = self._try_acquire_or_renew()
            now = self.clock()
            if acquired:
                self._last_renew = now
                if not self._leading.is_set():
                    self._leading.set()
                    log.info(
                        "became leader",
                        extra={"lease": self.path, "identity": self.config.identity},
                    )
                    self.on_started_leading()
            elif self._leading.is_set() and now - self._last_renew >= self.config.renew_deadline_s:
                log.warning(
                    "lost leadership: renew deadline exceeded",
                    extra={"lease": self.path, "identity": self.config.identity},
                )
                self._lose()
            jitter = 1.0 if self._leading.is_set() else 1.0 + random.uniform(0, 0.2)
            self._stop.wait(self.config.retry_period_s * jitter)

    def _lose(self) -> None:
        with self._lock:
            if not self._leading.is_set():
                return
            self._leading.clear()
        self.on_stopped_leading()

    def _try_acquire_or_renew(self) -> bool:
        try:
            lease = self.api.request("GET", self.path, timeout_s=self.config.retry_period_s * 2)
        except KubeApiError as err:
            if err.status != 404:
                log.warning("lease read failed", extra={"lease": self.path, "error": str(err)})
                return False
            return self._create()
        except Exception as err:  # network errors: keep campaigning
            log.warning("lease read failed", extra={"lease": self.path, "error": str(err)})
            return False
        spec: JsonDict = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec = dict(spec)
            self._observed_at = self.clock()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration_s)
        if (
            holder
            and holder != self.config.identity
            and self._observed_at + duration > self.clock()
        ):
            if self._leading.is_set():
                log.warning("lease taken by another holder", extra={"holder": holder})
                self._lose()
            return False
        now = micro_time()
        new_spec: JsonDict = dict(spec)
        new_spec["holderIdentity"] = self.config.identity
        new_spec["leaseDurationSeconds"] = max(1, math.ceil(self.config.lease_duration_s))
        new_spec["renewTime"] = now
        if holder != self.config.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        return self._put(lease)

    def _create(self) -> bool:
        now = micro_time()
        body: JsonDict = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": max(1, math.ceil(self.config.lease_duration_s)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        collection = self.path.rsplit("/", 1)[0]
        try:
            created = self.api.request("POST", collection, body=body)
        except KubeApiError as err:
            if err.status != 409:
                log.warning("lease create failed", extra={"lease": self.path, "error": str(err)})
            return False
        except Exception as err:
            log.warning("lease create failed", extra={"lease": self.path, "error": str(err)})
            return False
        self._remember(created)
        return True

    def _put(self, lease: JsonDict) -> bool:
        try:
            updated = self.api.request(
                "PUT", self.path, body=lease, timeout_s=self.config.retry_period_s * 2
            )
        except KubeApiError as err:
            if err.status != 409:
                log.warning("lease update failed", extra={"lease": self.path, "error": str(err)})
            return False
        except Exception as err:
            log.warning("lease update failed", extra={"lease": self.path, "error": str(err)})
            return False
        self._remember(updated)
        return True

    def _remember(self, lease: JsonDict) -> None:
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_at = self.clock()

    def _release(self) -> None:
        """Hand the Lease back (client-go's ReleaseOnCancel): empty holder, 1 s duration."""
        try:
            lease = self.api.request("GET", self.path, timeout_s=5)
            spec: JsonDict = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            now = micro_time()
            spec.update(
                {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "renewTime": now,
                    "acquireTime": now,
                }
            )
            lease["spec"] = spec
            self.api.request("PUT", self.path, body=lease, timeout_s=5)
            log.info("released lease", extra={"lease": self.path})
        except Exception as err:
            log.warning("lease release failed", extra={"lease": self.path, "error": str(err)})
