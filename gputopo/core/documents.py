"""Reading a user's document (a file, YAML or JSON) in bounded time and memory, or one line why not.

Every document gputopo reads from a user — machine profiles, cluster files for ``simulate``,
scheduling profiles, kubeconfigs, the topology annotation — goes through here first, so that a
hostile or broken input ends in one :class:`DocumentError` naming it, never in a traceback, a
``MemoryError``, a ``RecursionError`` or a hang. The limits (docs/operations.md lists them):

* **size**: a file is read up to its limit plus one byte, so ``/dev/zero`` or a 100 GB file
  costs at most the limit; a larger one is refused. Text must be UTF-8 (a BOM is allowed).
* **depth**: at most :data:`MAX_DEPTH` nested mappings/lists. libyaml itself stops at 1000 and
  Python's recursion limit is about as deep, so the decoders above never meet either.
* **expanded size**: YAML aliases share one object, so ``&a [*a, *a, ...]`` nested ten times (a
  "billion laughs") loads small but costs 10⁹ steps to walk; the size is counted with aliases
  expanded (memoised per shared object, so the count itself is linear) and capped at
  :data:`MAX_NODES`. An alias that contains itself is refused.
* **numbers**: integers within int64 (Kubernetes' own range), floats finite (no ``.nan``,
  ``.inf`` or ``1e400``).

The C loader (``CSafeLoader``) is used where PyYAML has it: on a 20 000-pod file it is about
ten times faster than the pure-Python one, and its own nesting limit makes it safe against
deep input, which the pure-Python loader answers with a ``RecursionError``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from typing import Any, Final

import yaml

MAX_DEPTH: Final = 64
MAX_NODES: Final = 5_000_000
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_KEY: Final = re.compile(r"[\w.\-/]{1,63}")


class DocumentError(ValueError):
    """A document cannot be read or is out of bounds; the message is one line naming it."""


def read_limited(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """At most ``max_bytes`` + 1 bytes of ``path`` (the caller compares the length with its
    limit). Never blocks: the file is opened non-blocking, and a FIFO or a socket (whose open or
    read would wait for a writer forever) is refused like a directory, with an ``OSError``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise OSError(errno.EINVAL, "a pipe or socket, not a file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as handle:
            fd = -1  # the file object owns it now
            return handle.read(max_bytes + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def read_text(path: str | os.PathLike[str], *, what: str, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, read at most ``max_bytes`` + 1 bytes far."""
    source = f"{what} {os.fspath(path)}"
    try:
        data = read_limited(path, max_bytes)
    except OSError as error:
        raise DocumentError(f"{source}: cannot read: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise DocumentError(f"{source}: larger than {max_bytes} bytes, the limit for a {what}")
    return decode_utf8(data, source)


def decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"{source}: not UTF-8 text (byte {error.start}: 0x{data[error.start]:02x})"
        ) from None


def load_yaml(text: str, *, source: str) -> Any:
    """One YAML document, checked by :func:`check_bounds`."""
    try:
        document = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        raise DocumentError(f"{source}: not valid YAML: {_yaml_problem(error)}") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit integer, Python's digit limit
        raise DocumentError(f"{source}: not valid YAML: {_first_line(error)}") from None
    check_bounds(document, source=source)
    return document


def load_yaml_all(text: str, *, source: str) -> list[Any]:
    """Every document of a multi-document YAML stream, each checked by :func:`check_bounds`."""
    try:
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as error:
        raise DocumentError(f"{source}: not valid YAML: {_yaml_problem(error)}") from None
    except (ValueError, RecursionError) as error:
        raise DocumentError(f"{source}: not valid YAML: {_first_line(error)}") from None
    for number, document in enumerate(documents, start=1):
        check_bounds(document, source=f"{source}: document {number}")
    return documents


def load_json(text: str | bytes, *, source: str) -> Any:
    """One JSON document, checked by :func:`check_bounds`."""
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise DocumentError(f"{source}: not valid JSON: {_first_line(error)}") from None
    check_bounds(document, source=source)
    return document


def check_bounds(
    document: Any, *, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES
) -> None:
    """Refuse a loaded document that is too deep, too large once aliases are expanded,
    self-referencing, or holds a number out of range. Iterative, so deep input cannot overflow
    the stack; a value's path is spelled out only for the error (on a 50 000-pod cluster file
    the walk costs about as much as parsing a tenth of it)."""
    if not isinstance(document, dict | list):
        _check_scalar(document, source, [])
        return
    expanded: dict[int, int] = {}  # id(container) -> its size with aliases expanded
    on_path = {id(document)}
    # One frame per open container: [container, its key in the parent, child iterator, size].
    frames: list[list[Any]] = [[document, None, _items(document), 1]]
    total = 1
    while frames:
        frame = frames[-1]
        step = next(frame[2], None)
        if step is None:
            frames.pop()
            on_path.discard(id(frame[0]))
            expanded[id(frame[0])] = frame[3]
            if frames:
                frames[-1][3] += frame[3]
            continue
        key, value = step
        if type(value) is str or value is None or type(value) is bool:
            frame[3] += 1
            total += 1
        elif isinstance(value, dict | list):
            known = expanded.get(id(value))
            if known is not None:
                frame[3] += known
                total += known
            elif id(value) in on_path:
                where = _path(frames, key)
                raise DocumentError(f"{source}: {where}: an alias contains itself")
            elif len(frames) > max_depth:
                where = _path(frames, key)
                raise DocumentError(f"{source}: {where}: nested deeper than {max_depth} levels")
            else:
                on_path.add(id(value))
                frames.append([value, key, _items(value), 1])
                total += 1
        else:
            _check_scalar(value, source, [*(f[1] for f in frames[1:]), key])
            frame[3] += 1
            total += 1
        if type(key) is not str and not isinstance(key, int | float | bool) and key is not None:
            where = _path(frames, key)
            raise DocumentError(f"{source}: {where}: a key must be a plain value")
        if total > max_nodes:
            raise DocumentError(f"{source}: more than {max_nodes} values once aliases are expanded")


def _items(container: Any) -> Iterator[tuple[Any, Any]]:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _path(frames: list[list[Any]], key: Any) -> str:
    return _spell([*(frame[1] for frame in frames[1:]), key])


def _spell(keys: list[Any]) -> str:
    """``["gpus", 3, "numa_node"]`` -> ``gpus[3].numa_node``; odd keys quoted, one line."""
    path = ""
    for key in keys:
        if type(key) is int:
            path += f"[{key}]"
            continue
        name = str(key) if _PLAIN_KEY.fullmatch(str(key)) else json.dumps(str(key))[:40]
        path = f"{path}.{name}" if path else name
    return path or "document"


def _check_scalar(value: Any, source: str, keys: list[Any]) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise DocumentError(f"{source}: {_spell(keys)}: integer out of the int64 range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(f"{source}: {_spell(keys)}: number {value!r} is not finite")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or _first_line(error)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
