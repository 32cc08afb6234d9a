from __future__ import annotations

from generator import constants, documents, entries, validation
from harness import examples


def test_entries_are_written_in_schema_order_under_the_schema_comment() -> None:
    data = {"owner": {"email": "a@b.co", "name": "A"}, "cluster": "local", "plan": "small", "engine": "medusa",
            "name": "Shop: the best", "id": "shop"}
    text = entries.dump(entries.with_defaults(data))
    lines = text.splitlines()
    assert lines[0] == constants.STORE_SCHEMA_COMMENT
    assert [line.split(":")[0] for line in lines[1:] if not line.startswith(" ")] == [
        "id", "name", "engine", "plan", "cluster", "owner", "state"]
    doc = documents.parse(text, "stores/shop.yaml")
    assert doc.data["name"] == "Shop: the best"
    assert validation.store_problems(doc) == []


def test_the_same_request_always_gives_the_same_bytes() -> None:
    payload = examples.store_payload("same")
    assert entries.dump(entries.with_defaults(payload)) == entries.dump(entries.with_defaults(dict(payload)))


def test_depth_is_measured_without_recursion() -> None:
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    assert entries.depth(deep) == 5001
    assert entries.too_deep({"a": deep})
    assert not entries.too_deep(examples.store_payload("flat"))
