"""The scheduler's JSON (orjson, `FAST_JSON`) reads and writes what the standard library does,
raises the same error class, and is what the scheduler's API clients use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gputopo.core.kube import ClusterConfig
from gputopo.core.kube.codec import STANDARD
from gputopo.scheduler.runtime.kube import FAST_JSON, KubeApi

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


@given(JSON_VALUES)
def test_orjson_reads_and_writes_what_the_standard_library_does(value: Any) -> None:
    document = json.dumps(value).encode()
    assert FAST_JSON.loads(document) == STANDARD.loads(document) == value
    assert STANDARD.loads(FAST_JSON.dumps(value)) == value
    assert FAST_JSON.loads(STANDARD.dumps(value)) == value


@pytest.mark.parametrize("document", [b"{", b'{"a": }', b"\xff", b'{"a": 1} x'])
def test_a_malformed_document_is_a_value_error(document: bytes) -> None:
    with pytest.raises(ValueError):
        FAST_JSON.loads(document)


def test_the_schedulers_clients_use_it() -> None:
    config = ClusterConfig(server="http://127.0.0.1:1", source="a test")
    assert KubeApi.from_cluster_config(config).client.codec is FAST_JSON
