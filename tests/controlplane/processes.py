"""Child processes that cannot outlive the test run, with their logs kept for failure reports."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the test process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Its own process group: the terminal's Ctrl-C reaches pytest, which then stops it cleanly.
    os.setpgid(0, 0)


class ComponentFailedError(RuntimeError):
    """A component exited or never became ready; the message carries its log tail."""


class ManagedProcess:
    """One component (etcd, kube-apiserver, ...) writing to its own log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return f"<cannot read {self.log_path}: {error}>"
        return "\n".join(text.splitlines()[-lines:])

    def error_lines(self, lines: int = 5) -> list[str]:
        """The last klog error/fatal lines (E1123 .../F1123 ...), which say why it stopped."""
        tail = self.log_tail(400).splitlines()
        return [line for line in tail if re.match(r"^[EF]\d{4} ", line)][-lines:]

    def failure(self, what: str) -> ComponentFailedError:
        errors = "\n".join(self.error_lines())
        summary = f"errors:\n{errors}\n" if errors else ""
        return ComponentFailedError(
            f"{self.name} {what} (log {self.log_path}); {summary}last lines:\n{self.log_tail(20)}"
        )

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> float:
        """Poll `ready` until true; fail early if the process exits. Returns seconds waited."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self.failure(f"exited with status {self.popen.returncode} before {what}")
            with contextlib.suppress(Exception):
                if ready():
                    return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise self.failure(f"was not {what} within {timeout:.0f} s")
            time.sleep(interval)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaps the child."""
        try:
            if self.alive():
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait()
        finally:
            self._log.close()
            with _live_lock:
                _live.discard(self)


def live_processes() -> list[ManagedProcess]:
    """Every component still running, oldest first (for attaching logs to a failed test)."""
    with _live_lock:
        return sorted(_live, key=lambda process: process.started_at)


def stop_all() -> None:
    """Last resort at interpreter exit (and on SIGTERM): no component survives the run."""
    with _live_lock:
        remaining = list(_live)
    for process in reversed(remaining):
        process.stop(grace=2.0)


atexit.register(stop_all)


def _stop_all_on_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: object) -> None:
        stop_all()
        if callable(previous):
            previous(signum, frame)  # type: ignore[arg-type]
        else:
            raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


_stop_all_on_sigterm()
