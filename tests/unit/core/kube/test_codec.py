"""The API client's JSON codec: the standard library's by default, compact, strict; and the
client reads watch lines with whichever codec it is given."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gputopo.core.kube.client import json_lines
from gputopo.core.kube.codec import STANDARD, JsonCodec

POD = {
    "kind": "Pod",
    "metadata": {"name": "p-ü", "labels": {"app": "web"}, "resourceVersion": "12"},
    "spec": {"priority": -2147483648, "containers": [{"name": "c"}], "x": None},
    "status": {"phase": "Pending", "ratio": 0.25, "big": 9223372036854775807},
}


def test_the_standard_codec_round_trips_compactly() -> None:
    assert STANDARD.loads(STANDARD.dumps(POD)) == POD
    assert STANDARD.loads(json.dumps(POD).encode()) == POD
    assert b" " not in STANDARD.dumps({"a": [1, 2]})


@pytest.mark.parametrize("document", [b"{", b'{"a": }', b'{"a": 1} x'])
def test_a_malformed_document_is_a_value_error(document: bytes) -> None:
    with pytest.raises(ValueError):
        STANDARD.loads(document)


def test_watch_lines_are_decoded_with_the_codec_given() -> None:
    seen: list[bytes | str] = []

    def loads(document: bytes | str) -> Any:
        seen.append(document)
        return json.loads(document)

    chunks = [b'{"type":"ADDED","object":{"a":1}}\n{"type":', b'"DELETED"}\n']
    events = list(json_lines(chunks, JsonCodec(loads, STANDARD.dumps)))
    assert events == [{"type": "ADDED", "object": {"a": 1}}, {"type": "DELETED"}]
    assert len(seen) == 2
