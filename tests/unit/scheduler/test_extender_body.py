"""The extender's body decoding: documents.load_json's limits and messages, at JSON's speed."""

from __future__ import annotations

import json

import pytest

from gputopo.core.documents import DocumentError, load_json
from gputopo.scheduler.extender import load_body


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BODIES = [
    b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["a", "b"]}',
    b"null",
    b"7",
    _nested(65),  # the deepest load_json accepts: 64 levels below the root
    _nested(66),
    _nested(100),
    _nested(100_000),
    b'{"a": [1e400]}',
    b'{"a": NaN}',
    b'{"a": -Infinity}',
    b'{"a": 9223372036854775807, "b": -9223372036854775808}',
    b'{"a": [9223372036854775808]}',
    b'{"a": "1' + b"0" * 5000 + b'"}',
    b'{"a": 1' + b"0" * 5000 + b"}",
    b"{not json",
    b"\xff\xfe",
]


@pytest.mark.parametrize("raw", BODIES, ids=range(len(BODIES)))
def test_load_body_agrees_with_load_json(raw: bytes) -> None:
    try:
        expected = load_json(raw, source="request body")
    except DocumentError as error:
        with pytest.raises(DocumentError) as refused:
            load_body(raw)
        assert str(refused.value) == str(error)
    else:
        assert load_body(raw) == expected


def test_a_5000_node_extender_args_loads() -> None:
    raw = json.dumps({"Pod": {"metadata": {}}, "NodeNames": [f"n{i}" for i in range(5000)]})
    assert load_body(raw.encode())["NodeNames"][-1] == "n4999"
