from __future__ import annotations

import pytest

from generator import documents


def parse_error(text: str | bytes) -> str:
    with pytest.raises(documents.ParseFailed) as caught:
        documents.parse(text, "stores/x.yaml")
    return str(caught.value)


def test_fields_keep_their_lines() -> None:
    doc = documents.parse("# comment\nid: acme\nowner:\n  name: Jo\n  email: jo@x.io\n", "stores/acme.yaml")
    assert doc.data == {"id": "acme", "owner": {"name": "Jo", "email": "jo@x.io"}}
    assert doc.line_of(("id",)) == 2
    assert doc.line_of(("owner", "email")) == 5
    # A field that is absent points at its nearest parent.
    assert doc.line_of(("owner", "github")) == 3


def test_scalars_resolve_as_yaml_does() -> None:
    doc = documents.parse("a: 1\nb: yes\nc: null\nd: '1'\ne: [x, 2]\n", "f.yaml")
    assert doc.data == {"a": 1, "b": True, "c": None, "d": "1", "e": ["x", 2]}


def test_alias_bomb_is_refused_without_expanding() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    assert "anchors are not allowed" in parse_error(bomb)
    assert "alias" in parse_error("a: *x\n") or "malformed" in parse_error("a: *x\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "stores/x.yaml:2: duplicate key 'a'"),
        ("", "stores/x.yaml: file is empty"),
        ("# only a comment\n", "stores/x.yaml: file is empty"),
        ("a: 1\n---\nb: 2\n", "stores/x.yaml:2: holds more than one YAML document"),
        ("a: [1,\n", "stores/x.yaml:2: malformed YAML"),
        ("id: !!python/object:os.system x\n", "stores/x.yaml:1: uses the YAML tag"),
        ("? [1]\n: 2\n", "stores/x.yaml:1: mapping key is not a string"),
        ("1: x\n", "mapping key '1' is not a string"),
        ("[" * 40 + "]" * 40, "nested more than 16 levels deep"),
        (b"id: \xff\xfe\n", "not UTF-8 text"),
        ("a: " + "x" * 70000, "the limit is 65536"),
    ],
)
def test_bad_yaml_names_file_line_and_cause(text: str | bytes, expected: str) -> None:
    assert expected in parse_error(text)


def test_field_names_read_like_paths() -> None:
    assert documents.field_name(("owner", "email")) == "owner.email"
    assert documents.field_name(("tags", 2, "x")) == "tags[2].x"
    assert documents.field_name(()) == ""
