"""The fake module must be indistinguishable from the real pynvml in names, signatures, classes."""

from __future__ import annotations

import inspect
import sys

import pynvml
import pytest

from gputopo.mocks.fake_pynvml import installed, make_fake_pynvml, modelled_functions


@pytest.fixture(scope="module")
def fake() -> object:
    return make_fake_pynvml("dgx-h100")


def test_every_fake_nvml_function_exists_in_real_pynvml_with_the_same_signature(
    fake: object,
) -> None:
    names = [n for n in dir(fake) if n.startswith("nvml") and callable(getattr(fake, n))]
    assert len(names) > 400
    for name in names:
        real = getattr(pynvml, name, None)
        assert real is not None, f"{name} is not in the real pynvml"
        if inspect.isclass(real):
            continue
        real_params = list(inspect.signature(real).parameters.values())
        fake_params = list(inspect.signature(getattr(fake, name)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in fake_params] == [
            (p.name, p.kind, p.default) for p in real_params
        ], name


def test_every_modelled_function_is_a_real_pynvml_function() -> None:
    for name in modelled_functions():
        assert inspect.isfunction(getattr(pynvml, name, None)), name


def test_real_nvml_functions_are_all_present(fake: object) -> None:
    real = {
        n for n in dir(pynvml) if n.startswith("nvml") and inspect.isfunction(getattr(pynvml, n))
    }
    assert real <= set(dir(fake))


def test_constants_structures_and_errors_are_the_real_objects(fake: object) -> None:
    for name in (
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_TOPOLOGY_SINGLE",
        "nvmlEventTypeXidCriticalError",
    ):
        assert getattr(fake, name) == getattr(pynvml, name)
    for name in (
        "NVMLError",
        "NVMLError_NotSupported",
        "NVMLError_GpuIsLost",
        "c_nvmlMemory_t",
        "nvmlPciInfo_t",
    ):
        assert getattr(fake, name) is getattr(pynvml, name)


def test_nvml_error_code_maps_to_the_real_subclass(fake: object) -> None:
    error = fake.NVMLError(fake.NVML_ERROR_GPU_IS_LOST)  # type: ignore[attr-defined]
    assert type(error) is pynvml.NVMLError_GpuIsLost
    assert str(error) == "GPU is lost"


def test_calls_before_init_raise_uninitialized() -> None:
    fake = make_fake_pynvml("dgx-h100")
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()


def test_init_is_reference_counted() -> None:
    fake = make_fake_pynvml("l4-pcie")
    fake.nvmlInit()
    fake.nvmlInitWithFlags(0)
    fake.nvmlShutdown()
    assert fake.nvmlDeviceGetCount() == 4
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


def test_unmodelled_function_raises_function_not_found_after_init() -> None:
    fake = make_fake_pynvml("dgx-h100")
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetFanSpeed(None)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        fake.nvmlDeviceGetFanSpeed(handle)
    with pytest.raises(TypeError):
        fake.nvmlDeviceGetFanSpeed()


def test_handle_from_another_fake_is_invalid() -> None:
    first, second = make_fake_pynvml("l4-pcie"), make_fake_pynvml("l4-pcie")
    first.nvmlInit()
    second.nvmlInit()
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        second.nvmlDeviceGetName(first.nvmlDeviceGetHandleByIndex(0))


def test_installed_replaces_and_restores_sys_modules() -> None:
    before = sys.modules.get("pynvml")
    with installed("cpu-only") as fake:
        import pynvml as imported

        assert imported is fake
        assert sys.modules["pynvml"].control.profile.name == "cpu-only"
    assert sys.modules.get("pynvml") is before
