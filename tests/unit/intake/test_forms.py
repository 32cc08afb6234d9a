from __future__ import annotations

import pytest

from webhook.errors import BadRequest
from webhook.intake import forms


def test_mapping_builds_nested_store_fields_and_drops_blanks() -> None:
    source = {"slug": " my-shop ", "who": {"mail": "a@b.co"}, "github": "", "unmapped": "x"}
    mapping = {"slug": "id", "who.mail": "owner.email", "github": "owner.github", "absent": "name"}
    assert forms.to_store(source, mapping) == {"id": "my-shop", "owner": {"email": "a@b.co"}}


def test_urlencoded_bodies_are_parsed_and_bad_bytes_refused() -> None:
    assert forms.parse_urlencoded(b"id=a&name=A+B&x=%40") == {"id": "a", "name": "A B", "x": "@"}
    with pytest.raises(BadRequest):
        forms.parse_urlencoded(b"id=\xff")


def test_problems_are_placed_beside_their_page_field() -> None:
    assert forms.form_name("owner.email") == "owner_email"
    assert forms.form_name("capacity.stores") == "cluster"
    assert forms.form_name("color") is None
