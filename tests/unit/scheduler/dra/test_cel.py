"""Selectors in Kubernetes' DRA CEL environment, on the devices NVIDIA's driver publishes."""

from __future__ import annotations

import pytest

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.dra.cel import CelError, SelectorCache, Semver
from gputopo.scheduler.dra.model import Device, parse_resource_slice

GPU = "gpu.nvidia.com"


@pytest.fixture(scope="module")
def h100() -> Device:
    (one,) = resourceslices.resource_slices(load_profile("dgx-h100"), "n")
    return parse_resource_slice(one).devices[0]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (f"device.driver == '{GPU}'", True),
        (f"device.attributes['{GPU}'].type == 'gpu'", True),
        (f"device.attributes['{GPU}'].productName.startsWith('NVIDIA H100')", True),
        (f"device.attributes['{GPU}'].cudaComputeCapability.isGreaterThan(semver('8.9.0'))", True),
        (f"device.attributes['{GPU}'].cudaComputeCapability.major() == 9", True),
        (f"device.attributes['{GPU}'].driverVersion.compareTo(semver('999.0.0')) < 0", True),
        (f"device.capacity['{GPU}'].memory.compareTo(quantity('80Gi')) >= 0", False),
        (f"device.capacity['{GPU}'].memory.isGreaterThan(quantity('40Gi'))", True),
        (f"device.capacity['{GPU}'].memory.isLessThan(quantity('1Ti'))", True),
        ("device.attributes['resource.kubernetes.io'].pcieRoot.startsWith('pci')", True),
        # an unknown domain is an empty map, not an error
        ("'x' in device.attributes['other.example.com']", False),
        ("isSemver('1.2.3') && !isSemver('1.2') && isQuantity('10Gi') && !isQuantity('x')", True),
        ("quantity('1Gi').add(quantity('1Gi')) == quantity('2Gi')", True),
        ("quantity('1500m').isInteger() == false && quantity('2').asInteger() == 2", True),
        ("device.allowMultipleAllocations == false", True),
        (f"device.attributes['{GPU}'].exists(name, name == 'uuid')", True),
    ],
)
def test_selector_on_an_h100(h100: Device, expression: str, expected: bool) -> None:
    assert SelectorCache().matches(expression, h100) is expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        (f"device.attributes['{GPU}'].nope == 1", "CEL runtime error"),
        ("device.driver ==", "compilation failed"),
        ("device.driver", "result is not a bool"),
        ("[1, 2].all(x, [3].exists(y, y > x))", "cost limit"),
        ("true && " * 2000 + "true", "longer than"),
        ("semver('not-a-version').major() == 1", "invalid semantic version"),
    ],
)
def test_bad_selectors_are_one_line_errors(h100: Device, expression: str, problem: str) -> None:
    with pytest.raises(CelError) as caught:
        SelectorCache().matches(expression, h100)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_semver_orders_pre_releases_before_the_release() -> None:
    assert Semver("1.0.0-rc.1").compare(Semver("1.0.0")) < 0
    assert Semver("1.0.0-rc.2").compare(Semver("1.0.0-rc.10")) < 0
    assert Semver("550.54.15") == Semver("550.54.15")
    assert Semver("10.0.0").compare(Semver("9.9.9")) > 0


def test_results_are_memoised_per_device(h100: Device) -> None:
    cache = SelectorCache()
    expression = f"device.driver == '{GPU}'"
    assert cache.matches(expression, h100)
    cache._env = None  # type: ignore[assignment]  # a second evaluation would fail
    assert cache.matches(expression, h100)
