"""The NVML session: loading ``pynvml``, ``nvmlInit``/``nvmlShutdown``, and NVML's errors mapped to
"unknown".

``pynvml`` (from the ``nvidia-ml-py`` distribution) is imported lazily in :func:`load_pynvml`, and
any module object with the same call surface can be injected instead (``--mock`` passes the fake
from ``mocks/``). NVML failing to load or initialise is a normal state, reported as
``NvmlStatus(available=False, error=...)``. Every per-GPU query goes through :class:`GpuQuery`:
a failure yields ``None`` and the rest of the GPU is still read; ``GPU_IS_LOST`` additionally
marks the GPU lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from gputopo.agent.topology import NvmlStatus

# NVML return codes this layer reacts to (stable across NVML versions).
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NOT_FOUND = 6
TIMEOUT = 10
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
UNKNOWN = 999

# What nvmlDeviceGetHandleByIndex answers for a GPU that is in the machine but gone from the
# bus or wedged: on real machines a lost GPU fails already here, before any per-GPU query, with
# GPU_IS_LOST or (older drivers, some fall-off-the-bus cases) UNKNOWN. Other handle failures
# (NO_PERMISSION in a container not given that GPU, INSUFFICIENT_POWER) are not "lost".
LOST_AT_HANDLE = frozenset({GPU_IS_LOST, UNKNOWN})

# Answers that say "this GPU or this driver has no such thing", not that something went wrong:
# not kept among a GPU's errors. FUNCTION_NOT_FOUND is an older driver lacking a newer symbol
# (the callers that have a fallback API ask it).
_NOT_AN_ERROR = frozenset({NOT_SUPPORTED, NOT_FOUND, FUNCTION_NOT_FOUND})


class NvmlLoadError(Exception):
    """The pynvml module itself could not be imported."""


def load_pynvml() -> ModuleType:
    """Import the real ``pynvml`` lazily, so a machine without it still runs the agent."""
    try:
        import pynvml
    except ImportError as error:
        raise NvmlLoadError(f"pynvml is not importable: {error}") from None
    module: ModuleType = pynvml
    return module


def error_name(error: BaseException) -> str:
    """ "NVMLError_LibraryNotFound" -> "LibraryNotFound"; other exceptions keep their class name."""
    name = type(error).__name__
    return (
        name.removeprefix("NVMLError_")
        if name != "NVMLError"
        else f"NVMLError({error_code(error)})"
    )


def error_code(error: BaseException) -> int | None:
    """The NVML return code an ``NVMLError`` carries (``None`` for any other exception)."""
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


def text(value: Any) -> str:
    """NVML's strings arrive as ``bytes`` from some binding versions and ``str`` from others."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


class GpuQuery:
    """Calls NVML for one GPU; a failure yields None, and GPU_IS_LOST marks the GPU lost."""

    def __init__(self, module: Any, handle: Any) -> None:
        self.module = module
        self.handle = handle
        self.lost = False
        self.errors: list[str] = []  # "<query>: <error>" for every failed query, for diagnostics
        self.last_code: int | None = None

    def call(self, name: str, *args: Any) -> Any:
        self.last_code = None
        function: Callable[..., Any] | None = getattr(self.module, name, None)
        if function is None:
            self.last_code = NOT_SUPPORTED
            return None
        try:
            return function(*args)
        except self.module.NVMLError as error:
            code = error_code(error)
            self.last_code = code
            if code == GPU_IS_LOST:
                self.lost = True
            if code not in _NOT_AN_ERROR:
                self.errors.append(f"{name}: {error_name(error)}")
            return None

    def device(self, name: str, *args: Any) -> Any:
        """A query on this GPU; once the GPU is lost, further queries are not attempted."""
        if self.lost:
            return None
        return self.call(name, self.handle, *args)

    def probe(self, name: str, *args: Any) -> Any:
        """:meth:`device` for an index that may be past the GPU's last one (an NVLink number):
        NVML answers INVALID_ARGUMENT there, which ends the walk and is no error."""
        errors = len(self.errors)
        value = self.device(name, *args)
        if self.last_code == INVALID_ARGUMENT:
            del self.errors[errors:]
        return value


class NvmlSession:
    """NVML loaded and initialised, or the reason it is not: :attr:`status`, never an exception."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self._injected = module
        self.module: Any = None
        self.status = NvmlStatus(available=False, error="NVML not opened")

    def open(self) -> NvmlStatus:
        """Load and initialise NVML (once); failures become the status."""
        if self.status.available:
            return self.status
        try:
            module = self._injected if self._injected is not None else load_pynvml()
        except NvmlLoadError as error:
            self.status = NvmlStatus(available=False, error=str(error))
            return self.status
        try:
            module.nvmlInit()
        except module.NVMLError as error:
            self.status = NvmlStatus(available=False, error=f"{error_name(error)}: {error}")
            return self.status
        self.module = module
        self.status = NvmlStatus(available=True)
        return self.status

    def close(self) -> None:
        if not self.status.available:
            return
        with contextlib.suppress(self.module.NVMLError):
            self.module.nvmlShutdown()
        self.status = NvmlStatus(available=False, error="NVML closed")

    def handles(self) -> Iterator[tuple[int, Any]]:
        """(index, handle) of every GPU NVML counts; a GPU without a handle is left out."""
        handles, _ = self.enumerate()
        yield from handles

    def enumerate(self) -> tuple[list[tuple[int, Any]], list[tuple[int, int | None, str]]]:
        """The handles NVML gives, and (index, return code, error name) for each GPU it counts
        but gives no handle for (see :data:`LOST_AT_HANDLE`)."""
        module = self.module
        handles: list[tuple[int, Any]] = []
        failures: list[tuple[int, int | None, str]] = []
        try:
            count = int(module.nvmlDeviceGetCount())
        except module.NVMLError:
            return handles, failures
        for index in range(count):
            try:
                handles.append((index, module.nvmlDeviceGetHandleByIndex(index)))
            except module.NVMLError as error:
                failures.append((index, error_code(error), error_name(error)))
        return handles, failures
