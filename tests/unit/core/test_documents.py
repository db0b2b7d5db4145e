"""gputopo.core.documents: every hostile document ends in one DocumentError line, quickly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gputopo.core.documents import (
    MAX_DEPTH,
    DocumentError,
    check_bounds,
    load_json,
    load_yaml,
    load_yaml_all,
    read_text,
)


def _one_line(error: pytest.ExceptionInfo[DocumentError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_dev_zero_is_refused_after_reading_only_the_limit() -> None:
    started = time.monotonic()
    with pytest.raises(DocumentError) as error:
        read_text("/dev/zero", what="profile", max_bytes=1 << 20)
    assert time.monotonic() - started < 5
    assert (
        _one_line(error) == "profile /dev/zero: larger than 1048576 bytes, the limit for a profile"
    )


def test_a_directory_and_a_missing_file_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"cannot read: Is a directory"):
        read_text(tmp_path, what="kubeconfig", max_bytes=100)
    with pytest.raises(DocumentError, match=r"cannot read: No such file"):
        read_text(tmp_path / "absent", what="kubeconfig", max_bytes=100)


def test_utf16_and_latin1_are_not_utf8(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("gpus: 8\n".encode("utf-16"))
    with pytest.raises(DocumentError, match=r"not UTF-8 text \(byte 0: 0xff\)"):
        read_text(utf16, what="profile", max_bytes=100)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(DocumentError, match="not UTF-8"):
        read_text(latin1, what="profile", max_bytes=100)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfgpus: 8\n")
    assert load_yaml(read_text(path, what="profile", max_bytes=100), source="p") == {"gpus": 8}


def test_billion_laughs_is_refused_in_bounded_time() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    started = time.monotonic()
    with pytest.raises(DocumentError, match="once aliases are expanded"):
        load_yaml("\n".join(lines), source="bomb.yaml")
    assert time.monotonic() - started < 5


def test_a_few_shared_aliases_are_fine() -> None:
    text = "base: &b {cpu: '1'}\nx: *b\ny: *b\n"
    assert load_yaml(text, source="ok.yaml")["y"] == {"cpu": "1"}


def test_an_alias_that_contains_itself_is_refused() -> None:
    with pytest.raises(DocumentError, match="an alias contains itself"):
        load_yaml("&a [*a]", source="loop.yaml")


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    with pytest.raises(DocumentError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_yaml(deep, source="deep.yaml")
    very_deep = "[" * 5000 + "]" * 5000  # past libyaml's own limit
    with pytest.raises(DocumentError, match="not valid YAML"):
        load_yaml(very_deep, source="deep.yaml")
    with pytest.raises(DocumentError, match=r"not valid JSON|nested deeper"):
        load_json("[" * 100_000 + "]" * 100_000, source="deep.json")


def test_numbers_out_of_range_are_refused() -> None:
    with pytest.raises(DocumentError, match="not valid YAML"):
        load_yaml("n: " + "9" * 5000, source="big.yaml")
    with pytest.raises(DocumentError, match=r"n: integer out of the int64 range"):
        load_yaml("n: " + "9" * 30, source="big.yaml")
    for text in ("n: .nan", "n: -.inf", "n: 1.0e+400"):
        with pytest.raises(DocumentError, match="is not finite"):
            load_yaml(text, source="f.yaml")
    for text in ('{"n": NaN}', '{"n": Infinity}'):
        with pytest.raises(DocumentError, match="not valid JSON"):
            load_json(text, source="f.json")
    with pytest.raises(DocumentError, match="is not finite"):
        load_json('{"n": 1e400}', source="f.json")


def test_yaml_errors_name_the_source_and_position() -> None:
    with pytest.raises(DocumentError) as error:
        load_yaml("a: [1, 2\nb: 3\n", source="cluster.yaml")
    assert _one_line(error).startswith("cluster.yaml: not valid YAML: ")
    assert "(line " in str(error.value)


def test_multi_document_stream_names_the_document() -> None:
    with pytest.raises(DocumentError, match=r"c.yaml: document 2: n: integer out"):
        load_yaml_all("a: 1\n---\nn: " + "9" * 25 + "\n", source="c.yaml")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_are_text_or_one_line(data: bytes) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return
    try:
        load_yaml(text, source="random.yaml")
    except DocumentError as error:
        assert "\n" not in str(error)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_documents = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_random_structures_load_or_fail_in_one_line(document: object) -> None:
    text = yaml.safe_dump(document)
    try:
        assert load_yaml(text, source="random.yaml") == yaml.safe_load(text)
    except DocumentError as error:
        assert "\n" not in str(error)
    try:
        encoded = json.dumps(document)
    except ValueError:
        return
    try:
        load_json(encoded, source="random.json")
    except DocumentError as error:
        assert "\n" not in str(error)


def test_check_bounds_counts_an_alias_each_time_it_is_used() -> None:
    shared = list(range(10))
    check_bounds([shared] * 10, source="s", max_nodes=200)
    with pytest.raises(DocumentError, match="more than 50 values"):
        check_bounds([shared] * 10, source="s", max_nodes=50)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(DocumentError, match=r"cannot read: a pipe or socket, not a file"):
        read_text(fifo, what="kubeconfig", max_bytes=100)
    assert time.monotonic() - started < 5
