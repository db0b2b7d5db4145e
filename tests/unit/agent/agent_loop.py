"""What the agent-loop tests share: a node without NVML, a fake udev monitor on the fake clock,
and a running agent whose threads the test drives through that clock."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent
from gputopo.agent.topology import NodeTopology

from .fake_clock import FakeClock

# The loop's threads that park on the clock: main, health and events (NVML absent: it polls).
LOOP_THREADS = 3


class NoNvml:
    """An NVML whose library is missing: a node without GPUs or drivers."""

    class NVMLError(Exception):
        value = 9  # NVML_ERROR_DRIVER_NOT_LOADED

    def nvmlInit(self) -> None:
        raise self.NVMLError("Driver Not Loaded")


class CountingDiscoverer(Discoverer):
    def __init__(self, root: str) -> None:
        super().__init__(NoNvml(), sysfs_root=root, hostname="node-a")
        self.discoveries = 0

    def discover(self) -> NodeTopology:
        self.discoveries += 1
        return super().discover()


class FakeUdev:
    """Stands in for a pyudev kernel monitor: poll() hands out queued devices, and waits on
    the fake clock, so a test knows when the udev thread has handled them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._devices: deque[Any] = deque()
        self._lock = threading.Lock()
        self._ready = clock.event()

    def add(self, device: Any) -> None:
        with self._lock:
            self._devices.append(device)
            self._ready.set()

    def poll(self, timeout: float | None = None) -> Any:
        self.clock.wait(self._ready, timeout)
        with self._lock:
            if not self._devices:
                return None
            device = self._devices.popleft()
            if not self._devices:
                self._ready.clear()
            return device


class Device:
    def __init__(self, action: str, pci_id: str, slot: str = "0000:18:00.0") -> None:
        self.action = action
        self.properties = {"PCI_ID": pci_id, "PCI_SLOT_NAME": slot, "SUBSYSTEM": "pci"}


@contextlib.contextmanager
def running(agent: Agent, clock: FakeClock, threads: int = LOOP_THREADS) -> Iterator[None]:
    """``agent.run()`` in a thread, settled after its first cycle; stopped and joined after."""
    thread = threading.Thread(target=agent.run, name="agent-under-test", daemon=True)
    thread.start()
    try:
        clock.settle(threads)
        yield
    finally:
        agent.stop()
        clock.advance(3600)  # a fake udev monitor waits on the clock, not on the stop event
        thread.join(timeout=10)
    assert not thread.is_alive(), "the agent did not stop"
