"""How the API client reads and writes JSON: a pair of functions, the standard library's by
default.

The client decodes every answer and watch event and encodes every request body with the
`JsonCodec` it is given. The agent uses `STANDARD`: its few calls do not need more, and its
install carries only what it imports. The scheduler, which decodes every watch event of every
pod and encodes a binding and an event per pod, passes orjson's (`gputopo.scheduler.runtime.
kube.FAST_JSON`, orjson being in the scheduler's extra): a third of the standard library's time
(docs/performance.md, "The runtime's cost per pod"). A codec must give the same Python values
for what the API server sends (objects, arrays, strings, 64-bit integers, floats), raise a
`ValueError` on a malformed document, and encode compactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JsonCodec:
    loads: Callable[[bytes | str], Any]
    dumps: Callable[[Any], bytes]


def _standard_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


STANDARD = JsonCodec(json.loads, _standard_dumps)
