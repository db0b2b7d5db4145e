"""The API client's JSON: orjson and the standard library give the same values, raise the same
error class, and the standard library serves where orjson is not installed."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gputopo.core.kube import codec

POD = {
    "kind": "Pod",
    "metadata": {"name": "p-ü", "labels": {"app": "web"}, "resourceVersion": "12"},
    "spec": {"priority": -2147483648, "containers": [{"name": "c"}], "x": None},
    "status": {"phase": "Pending", "ratio": 0.25, "big": 9223372036854775807},
}

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _standard() -> tuple[codec.Loads, codec.Dumps]:
    saved = sys.modules.get("orjson")
    sys.modules["orjson"] = None  # type: ignore[assignment]  # import fails: the fallback
    try:
        loads, dumps, name = codec.pick()
    finally:
        if saved is None:
            del sys.modules["orjson"]
        else:
            sys.modules["orjson"] = saved
    assert name == "json"
    return loads, dumps


def test_without_orjson_the_standard_library_serves() -> None:
    loads, dumps = _standard()
    assert loads(json.dumps(POD).encode()) == POD
    assert json.loads(dumps(POD)) == POD
    assert b" " not in dumps({"a": [1, 2]})  # compact


def test_the_scheduler_install_uses_orjson() -> None:
    # The test extra installs the scheduler's, orjson with it.
    assert codec.NAME == "orjson"


@given(JSON_VALUES)
def test_both_decode_and_encode_alike(value: Any) -> None:
    loads, dumps = _standard()
    document = json.dumps(value).encode()
    assert codec.loads(document) == loads(document) == value
    assert loads(codec.dumps(value)) == value
    assert codec.loads(dumps(value)) == value


@pytest.mark.parametrize("document", [b"{", b'{"a": }', b"\xff", b'{"a": 1} x'])
def test_both_raise_a_value_error_on_a_malformed_document(document: bytes) -> None:
    loads, _ = _standard()
    with pytest.raises(json.JSONDecodeError):
        codec.loads(document)
    with pytest.raises(ValueError):
        loads(document)
