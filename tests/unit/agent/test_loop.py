"""The agent's loop (agent/loop.py) on a fake clock: when cycles run — on schedule with jitter,
at once on a trigger, rate-limited — and what the health tick keeps fresh in between.

Node: no NVML, an empty sysfs (what the loop does does not depend on the machine), except for
the health-tick tests at the end, which count the NVML calls one tick makes on a mocked DGX H100.
Time moves only when a test advances the clock; nothing sleeps and nothing is timed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.metrics import SnapshotHolder

from .agent_loop import LOOP_THREADS, CountingDiscoverer, Device, FakeUdev, running
from .fake_clock import FakeClock


def test_udev_event_for_a_gpu_runs_a_cycle_at_once(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    udev = FakeUdev(clock)
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0, health_interval_s=0.25)
    agent = Agent(
        discoverer, publisher=None, config=config, udev_monitor_factory=lambda: udev, clock=clock
    )
    threads = LOOP_THREADS + 1  # and the udev thread
    with running(agent, clock, threads):
        assert agent.cycles == 1
        udev.add(Device("add", "15B3:1021"))  # not a GPU: ignored
        clock.settle(threads)
        assert agent.cycles == 1
        udev.add(Device("unbind", "10DE:2330"))
        clock.settle(threads)
        assert agent.cycles == 2  # at once: the clock has not moved
        clock.tick(60, threads)
        assert agent.cycles == 2


def test_triggers_inside_the_minimum_interval_are_coalesced(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0.5, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock)
    with running(agent, clock):
        assert agent.cycles == 1
        for _ in range(20):
            agent.trigger("XID")
        clock.settle(LOOP_THREADS)
        assert agent.cycles == 1  # held back: the last cycle was just now
        clock.tick(0.25, LOOP_THREADS)
        assert agent.cycles == 1
        clock.tick(0.25, LOOP_THREADS)  # the minimum interval has passed
        assert agent.cycles == 2
        clock.tick(1.0, LOOP_THREADS)
        assert agent.cycles == 2  # twenty triggers, one cycle


def test_a_trigger_after_the_minimum_interval_runs_at_once(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0.5, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock)
    with running(agent, clock):
        clock.tick(0.5, LOOP_THREADS)
        agent.trigger("GPU lost: [3]")
        clock.settle(LOOP_THREADS)
        assert agent.cycles == 2


def test_scheduled_rediscovery_with_jitter(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    config = RunLoopConfig(interval_s=0.25, jitter=0.5, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock, rng=random.Random(7))
    delays = [agent.next_delay() for _ in range(200)]
    assert min(delays) >= 0.125 and max(delays) <= 0.375 and len(set(delays)) > 100
    with running(agent, clock):
        assert agent.cycles == 1
        for cycles in (2, 3, 4):
            clock.tick(0.0625, LOOP_THREADS)  # sooner than the least jittered interval
            assert agent.cycles == cycles - 1
            clock.tick(0.375, LOOP_THREADS)  # later than the greatest
            assert agent.cycles == cycles


def test_health_tick_keeps_the_metrics_snapshot_fresh(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    holder = SnapshotHolder()
    config = RunLoopConfig(interval_s=3600, health_interval_s=0.25, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, holder=holder, clock=clock)
    with running(agent, clock):
        first = holder.get().load
        assert first is not None  # the first tick comes right after the first cycle
        clock.tick(0.125, LOOP_THREADS)
        assert holder.get().load is first
        clock.tick(0.125, LOOP_THREADS)
        fresh = holder.get().load
        assert fresh is not None and fresh is not first
        assert fresh.timestamp >= first.timestamp
        snapshot = holder.get()
        assert snapshot.topology is not None and not snapshot.topology.nvml.available
        assert snapshot.pod_resources is not None and not snapshot.pod_resources.available
        assert agent.cycles == 1  # health ticks are not cycles


def test_liveness_reports_a_silent_main_loop(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    config = RunLoopConfig(interval_s=60, jitter=0.0, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock)
    assert agent.readiness() == (False, "first discovery not finished")
    agent.run_cycle()
    assert agent.readiness() == (True, "ok")
    assert agent.liveness() == (True, "ok")
    clock.advance(60 * 3 + 60 + 1)  # three intervals and a minute without a loop beat
    alive, reason = agent.liveness()
    assert not alive and reason.startswith("main loop silent for 241s")


def test_new_gpu_allocation_from_the_kubelet_triggers_a_cycle(
    discoverer: CountingDiscoverer, clock: FakeClock
) -> None:
    from gputopo.agent.podresources import PodResourcesClient

    from .fake_kubelet import fake_kubelet, short_socket_dir

    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with fake_kubelet(socket_path) as kubelet, PodResourcesClient(socket_path) as client:
            config = RunLoopConfig(
                interval_s=3600,
                health_interval_s=0.25,
                pod_resources_interval_s=0.25,
                min_trigger_interval_s=0,
                udev=False,
            )
            agent = Agent(
                discoverer, publisher=None, pod_resources=client, config=config, clock=clock
            )
            with running(agent, clock):
                for _ in range(2):
                    clock.tick(0.25, LOOP_THREADS)  # the kubelet asked each tick
                assert agent.cycles == 1  # unchanged allocations: no extra cycle
                kubelet.allocate("ml", "p", "c", "nvidia.com/gpu", [("GPU-x", 0)])
                clock.tick(0.25, LOOP_THREADS)
                assert agent.cycles == 2
                pods = agent.holder.get().pod_resources
                assert pods is not None and pods.allocations_for("GPU-x")


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="--jitter"):
        RunLoopConfig(jitter=0.9)
    with pytest.raises(ValueError, match="--interval"):
        RunLoopConfig(interval_s=0)
    with pytest.raises(ValueError, match="--pod-resources-interval 0"):
        RunLoopConfig(pod_resources_interval_s=0)


def test_pod_resources_poll_defaults_to_every_ten_seconds() -> None:
    assert RunLoopConfig().pod_resources_interval_s == 10.0


def test_a_health_tick_reads_each_nvlink_state_once_dgx_h100(tmp_path: Path) -> None:
    """The health poll's NVLink states feed the load sample; the link count discovery learnt
    means no call past the last link (8 GPUs x 18 links on a DGX H100)."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.agent.loop import Agent, RunLoopConfig
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile("dgx-h100")
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, tmp_path)
    with Discoverer(nvml, tmp_path, "node") as discoverer:
        agent = Agent(discoverer, publisher=None, config=RunLoopConfig(udev=False))
        agent.run_cycle()
        nvml.control.set_nvlink_active(3, 5, False)
        before = nvml.control.calls["nvmlDeviceGetNvLinkState"]
        agent.health_tick()
        assert nvml.control.calls["nvmlDeviceGetNvLinkState"] - before == 8 * 18
    load = agent.holder.get().load
    assert load is not None
    assert [link.active for link in load.gpus[3].nvlinks].count(False) == 1
    assert len(load.gpus[0].nvlinks) == 18
    assert load.gpus[3].signals is not None and load.gpus[3].signals.nvlinks_down == 1


def test_slow_signals_are_re_read_every_tenth_tick_dgx_h100(tmp_path: Path) -> None:
    """NVLink states, lifetime ECC counts and memory repair state every 10th health tick;
    temperature, clocks, volatile ECC every tick."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.agent.loop import SLOW_SIGNALS_EVERY, Agent, RunLoopConfig
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile("dgx-h100")
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, tmp_path)
    with Discoverer(nvml, tmp_path, "node") as discoverer:
        agent = Agent(discoverer, publisher=None, config=RunLoopConfig(udev=False))
        agent.run_cycle()
        agent.health_tick()  # a full one
        nvml.control.set_nvlink_active(1, 2, False)
        nvml.control.set_temperature(1, 91)
        nvml.control.set_remapped_rows(1, pending=True)
        before = nvml.control.calls.copy()
        agent.health_tick()
        calls = nvml.control.calls - before
        load = agent.holder.get().load
        assert load is not None and load.gpus[1].signals is not None
        assert calls["nvmlDeviceGetNvLinkState"] == calls["nvmlDeviceGetRemappedRows"] == 0
        assert load.gpus[1].signals.temperature_c == 91  # fast: this tick
        assert load.gpus[1].signals.nvlinks_down == 0  # slow: not yet
        for _ in range(SLOW_SIGNALS_EVERY - 2):
            agent.health_tick()
        assert agent.holder.get().load.gpus[1].signals.nvlinks_down == 0  # type: ignore[union-attr]
        agent.health_tick()  # the tenth: slow signals re-read
        signals = agent.holder.get().load.gpus[1].signals  # type: ignore[union-attr]
        assert signals is not None
        assert signals.nvlinks_down == 1
        assert signals.memory_repair.remapped_rows_pending is True
