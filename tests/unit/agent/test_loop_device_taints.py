"""The run loop's cycle publishes device taints with the Node, and counts their writes.

Machine: the mocked dgx-h100-degraded (GPU 6 lost, GPU 4 XID 79, GPU 1 uncorrectable ECC) with
its ResourceSlices as NVIDIA's DRA driver would publish them, against in-memory APIs.
"""

from __future__ import annotations

from pathlib import Path

from gputopo.agent.device_taints import DeviceTaintPublisher
from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.publish.writer import Publisher
from gputopo.core.retry import Backoff
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.resourceslices import resource_slices
from gputopo.mocks.sysfs import build_sysfs

from .fake_resource_api import FakeNodeApi, FakeResourceApi

NODE = "dgx-h100-02"


def test_a_cycle_writes_the_device_taints_instead_of_the_node_health_taint(
    tmp_path: Path,
) -> None:
    profile = load_profile("dgx-h100-degraded")
    build_sysfs(profile, tmp_path)
    resources = FakeResourceApi(resource_slices(profile, NODE))
    nodes = FakeNodeApi(NODE)
    with Discoverer(make_fake_pynvml(profile), tmp_path, NODE) as discoverer:
        agent = Agent(
            discoverer,
            publisher=Publisher(nodes, NODE, backoff=Backoff(max_attempts=1)),
            device_taints=DeviceTaintPublisher(resources, NODE),
            config=RunLoopConfig(udev=False),
        )
        first = agent.run_cycle()
        second = agent.run_cycle()

    assert first.ok and first.device_taints is not None
    assert first.device_taints.status == "written"
    effects = sorted(rule["spec"]["taint"]["effect"] for rule in resources.rules.values())
    assert effects == ["NoExecute", "NoSchedule", "NoSchedule"]
    assert "gputopo.io/gpu-health" not in nodes.taint_keys()
    assert second.device_taints is not None and second.device_taints.status == "unchanged"
    # the node's patch and the three rules, counted as the agent's API writes
    assert agent.stats.snapshot().api_writes.get("success") == 4
