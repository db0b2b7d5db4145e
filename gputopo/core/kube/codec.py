"""JSON for the API client: orjson where it is installed, the standard library otherwise.

The scheduler decodes every watch event of every pod (pending, bound, started, deleted) and
encodes a binding and an event per pod; with orjson (in the scheduler's extra) that costs
about a third of the standard library's time (docs/performance.md, "The runtime's cost per
pod"). The agent's install goes without: its few calls do not need it. Both give the same
Python values for what the API server sends (objects, arrays, strings, 64-bit integers,
floats), both raise a `ValueError` (`json.JSONDecodeError`) on a malformed document, and both
encode compactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Loads = Callable[[bytes | str], Any]
Dumps = Callable[[Any], bytes]


def _standard_loads(document: bytes | str) -> Any:
    return json.loads(document)


def _standard_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def pick() -> tuple[Loads, Dumps, str]:
    """(loads, dumps, name): orjson's when it imports, else the standard library's."""
    try:
        import orjson
    except ImportError:
        return _standard_loads, _standard_dumps, "json"
    return orjson.loads, orjson.dumps, "orjson"


loads, dumps, NAME = pick()
