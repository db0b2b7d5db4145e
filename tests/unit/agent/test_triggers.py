"""Trigger sources (agent/triggers.py): which udev events ask for a rediscovery, the real kernel
uevent monitor, and the signals (SIGHUP: a cycle now; SIGTERM: stop)."""

from __future__ import annotations

import os
import signal

from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.triggers import is_gpu_pci_event, open_udev_monitor, signal_handlers

from .agent_loop import LOOP_THREADS, CountingDiscoverer, running
from .fake_clock import FakeClock


def test_nvidia_pci_add_remove_bind_unbind_trigger_rediscovery() -> None:
    for action in ("add", "remove", "bind", "unbind"):
        assert is_gpu_pci_event(action, {"PCI_ID": "10DE:2330"})
    assert not is_gpu_pci_event("change", {"PCI_ID": "10DE:2330"})
    assert not is_gpu_pci_event("add", {"PCI_ID": "15B3:1021"})  # a Mellanox NIC
    assert not is_gpu_pci_event("add", {})


def test_real_kernel_uevent_monitor_opens_and_polls() -> None:
    monitor = open_udev_monitor()
    event = monitor.poll(timeout=0.1)
    assert event is None or getattr(event, "subsystem", None) == "pci"


def test_unopenable_udev_monitor_leaves_hotplug_to_the_schedule(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    def no_netlink() -> FakeUdevNever:
        raise PermissionError("netlink: operation not permitted")

    config = RunLoopConfig(interval_s=3600, udev=True)
    agent = Agent(
        discoverer, publisher=None, config=config, udev_monitor_factory=no_netlink, clock=clock
    )
    with running(agent, clock):  # the udev thread has ended; the loop runs on
        assert agent.cycles == 1
        clock.tick(3600 * 1.1, LOOP_THREADS)
        assert agent.cycles == 2


class FakeUdevNever:
    def poll(self, timeout: float | None = None) -> None:
        raise AssertionError("never opened")


def test_sigterm_stops_and_sighup_rediscovers(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock)
    before = signal.getsignal(signal.SIGTERM)
    with signal_handlers(agent), running(agent, clock):
        os.kill(os.getpid(), signal.SIGHUP)
        clock.settle(LOOP_THREADS)
        assert agent.cycles == 2
        os.kill(os.getpid(), signal.SIGTERM)
        assert agent.stopping
    assert signal.getsignal(signal.SIGTERM) is before  # restored
