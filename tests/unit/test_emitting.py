from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from generator import emitting

scalars = st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.none())
data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=12), data, max_size=5))
def test_yaml_reads_back_exactly_what_was_emitted(value: dict[str, Any]) -> None:
    assert yaml.safe_load(emitting.dump(value)) == value


@given(st.dictionaries(st.text(max_size=8), data, max_size=4))
def test_output_is_independent_of_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert emitting.dump(value) == emitting.dump(reordered)


def test_strings_stay_plain_only_when_yaml_reads_them_as_strings() -> None:
    text = emitting.dump({"a": ["yes", "1.0", "2024-01-01", "12:30", "~", "a: b", "5m", "1Gi", "http://x:80/y",
                                "CreateNamespace=true", "", "ünï"]})
    assert text.splitlines()[1:] == [
        '  - "yes"', '  - "1.0"', '  - "2024-01-01"', '  - "12:30"', '  - "~"', '  - "a: b"', "  - 5m",
        "  - 1Gi", "  - http://x:80/y", "  - CreateNamespace=true", '  - ""', '  - "ünï"',
    ]


def test_header_and_documents() -> None:
    text = emitting.dump_all([{"b": 1, "a": {}}, {"c": []}], "first\nsecond")
    assert text == "# first\n# second\na: {}\nb: 1\n---\nc: []\n"
    assert list(yaml.safe_load_all(text)) == [{"a": {}, "b": 1}, {"c": []}]
