"""Trigger sources outside NVML that ask the run loop for a cycle now: udev (GPU hotplug,
driver bind/unbind) and signals (SIGHUP: rediscover; SIGTERM/SIGINT: stop)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

NVIDIA_PCI_VENDOR: Final = "10DE"
UDEV_ACTIONS: Final = frozenset({"add", "remove", "bind", "unbind"})
# The longest a udev poll blocks: how long a stop waits for the udev thread at most.
UDEV_POLL_S: Final = 1.0


def is_gpu_pci_event(action: str | None, properties: Mapping[str, str]) -> bool:
    """A kernel PCI uevent about an NVIDIA function (GPU or NVSwitch) worth rediscovering for."""
    if action not in UDEV_ACTIONS:
        return False
    pci_id = properties.get("PCI_ID", "")
    return pci_id.upper().startswith(NVIDIA_PCI_VENDOR + ":")


class UdevMonitor(Protocol):
    def poll(self, timeout: float | None = None) -> Any: ...


def open_udev_monitor() -> UdevMonitor:
    """Kernel PCI uevents (source "kernel": no udevd needed inside the container)."""
    import pyudev

    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="kernel")
    monitor.filter_by(subsystem="pci")
    monitor.start()
    return monitor  # type: ignore[no-any-return]


def watch_udev(
    open_monitor: Callable[[], UdevMonitor],
    trigger: Callable[[str], None],
    stop: threading.Event,
    rediscovery_interval_s: float,
) -> None:
    """Until ``stop``: ``trigger`` for every NVIDIA PCI add/remove/bind/unbind. Without a
    monitor (no netlink in the container) it says so once and leaves hotplug to the schedule."""
    try:
        monitor = open_monitor()
    except Exception as error:
        log.warning(
            "not watching udev for GPU hotplug (%s); relying on the %ss rediscovery",
            error,
            rediscovery_interval_s,
        )
        return
    while not stop.is_set():
        device = monitor.poll(timeout=UDEV_POLL_S)
        if device is None:
            continue
        action = getattr(device, "action", None)
        properties = dict(getattr(device, "properties", {}) or {})
        if is_gpu_pci_event(action, properties):
            trigger(f"udev {action} {properties.get('PCI_SLOT_NAME', '')}".strip())


class Triggerable(Protocol):
    """What signals act on: the run loop's ``trigger`` and ``stop``."""

    def trigger(self, reason: str) -> None: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def signal_handlers(agent: Triggerable) -> Iterator[None]:
    """SIGTERM/SIGINT stop the agent; SIGHUP asks for a cycle now. Restored afterwards."""

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        agent.stop()

    def hangup(signum: int, frame: FrameType | None) -> None:
        agent.trigger("SIGHUP")

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
        signal.SIGINT: signal.signal(signal.SIGINT, stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, hangup),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
