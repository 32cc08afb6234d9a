"""Form fields in, store fields out: the request page's fields and a form service's mapping. Pure."""

from __future__ import annotations

import datetime
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
URLENCODED = "application/x-www-form-urlencoded"


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


def check_submitted_at(source: Mapping[str, Any], path: str, *, max_age: float, now: float) -> None:
    """Refuse (400) a delivery whose signed submission time (at ``path``) is missing or outside the window.

    For senders that sign the body only: the time inside it bounds how long a captured delivery can
    be replayed, besides the delivery's own identity (see ``endpoints.form_webhook``).
    """
    raw = lookup(source, path)
    if raw is None or raw == "":
        raise BadRequest(f"the delivery has no submission time at {path!r}")
    try:
        when = float(raw) if isinstance(raw, int | float) else datetime.datetime.fromisoformat(
            str(raw).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"the delivery's submission time {str(raw)[:40]!r} at {path!r} is not a time") from None
    if not now - max_age <= when <= now + 300:
        raise BadRequest(f"the delivery was submitted at {str(raw)[:40]}, outside the {max_age:g} s window; "
                         "a replay, or a sender whose clock is wrong")


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
