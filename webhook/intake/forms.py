"""Form fields in, store fields out: the request page's fields and a form service's mapping. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from webhook.errors import BadRequest

#: The request page's fields, in page order: (form name, store field, label).
PAGE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "id", "Store id"),
    ("name", "name", "Store name"),
    ("engine", "engine", "Engine"),
    ("plan", "plan", "Plan"),
    ("cluster", "cluster", "Cluster"),
    ("owner_name", "owner.name", "Owner name"),
    ("owner_email", "owner.email", "Owner email"),
    ("owner_github", "owner.github", "Owner GitHub login (optional)"),
    ("domain", "domain", "Custom domain (optional)"),
)
PAGE_MAPPING = {form: store for form, store, _ in PAGE_FIELDS}


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; the last value wins for repeated names."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the form body is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=200))
    except ValueError as e:
        raise BadRequest(f"the form body cannot be read: {e}") from None


def lookup(source: Mapping[str, Any], path: str) -> Any:
    """``answers.store.id`` in nested mappings (or a flat key that contains dots); None if absent."""
    if path in source:
        return source[path]
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def to_store(source: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The store fields that ``mapping`` (source field -> dotted store field) picks from ``source``.

    Empty strings count as not filled in: optional fields left blank are simply absent.
    """
    out: dict[str, Any] = {}
    for source_field, store_field in mapping.items():
        value = lookup(source, source_field)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            value = value.strip()
        target = out
        *parents, leaf = store_field.split(".")
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                break
            target = nested
        else:
            target[leaf] = value
    return out


def form_name(store_field: str) -> str | None:
    """The page field a problem's store field is shown beside (None: shown above the form)."""
    for form, store, _ in PAGE_FIELDS:
        if store_field == store:
            return form
    if store_field.startswith("capacity"):
        return "cluster"
    return None
