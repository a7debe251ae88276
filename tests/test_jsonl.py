"""minirlaif.jsonl.read_jsonl: the one JSON Lines reader (strict, skipping, torn-tail modes)."""

import json

import pytest

from minirlaif.errors import InputError
from minirlaif.jsonl import read_jsonl, write_jsonl_atomic


def test_lines_are_numbered_as_in_the_file_and_blank_lines_count(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": "x\xe2\x80\xa8y"}\n{"c": 3}')  # BOM, U+2028, no final newline
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "x\u2028y"}), (5, {"c": 3})]


@pytest.mark.parametrize("line, says", [(b"{nope", "not valid JSON"), (b"[1, 2]", "expected a JSON object, got array"),
                                        (b'{"a": "\xff"}', "not valid UTF-8")])
def test_a_bad_line_raises_with_file_and_line_or_is_skipped_and_reported(tmp_path, line, says):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n' + line + b'\n{"a": 3}\n')
    with pytest.raises(InputError, match=f"{path}:2: {says}"):
        list(read_jsonl(path))
    skipped = []
    rows = list(read_jsonl(path, skip=lambda n, why: skipped.append((n, why))))
    assert rows == [(1, {"a": 1}), (3, {"a": 3})] and len(skipped) == 1 and skipped[0][0] == 2 and says in skipped[0][1]


def test_a_torn_last_line_is_dropped_only_when_asked(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3')  # a kill mid-write
    assert [r for _, r in read_jsonl(path, drop_torn_tail=True)] == [{"a": 1}, {"a": 2}]
    with pytest.raises(InputError, match=":3: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('{"a": 1}\n{"a": 2}')  # complete JSON without its newline is still a torn write
    assert [r for _, r in read_jsonl(path, drop_torn_tail=True)] == [{"a": 1}]


def test_written_rows_read_back(tmp_path):
    rows = [{"prompt": "p\u2028q", "score": 0.25}, {"prompt": "é", "score": -1}]
    write_jsonl_atomic(rows, tmp_path / "r.jsonl")
    assert [r for _, r in read_jsonl(tmp_path / "r.jsonl")] == rows
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8").count("\n") == 2
    assert json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8").split("\n")[1]) == rows[1]  # not splitlines(): U+2028
