"""Store entries as storeops writes them (API, forms, issue forms): data in, ``stores/<id>.yaml`` text out. Pure.

Files are written with ruamel.yaml in round-trip mode, fields in the schema's order, under the
comment that points editors at the schema, so they read like the ones people write by hand.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from generator import constants, documents

#: The order fields are written in (the order of the store schema); unknown keys follow, sorted.
FIELD_ORDER = ("id", "name", "engine", "plan", "cluster", "owner", "domain", "state", "adminPasswordRotation",
               "chartVersion", "restoreFrom", "callbackUrl")
OWNER_ORDER = ("name", "email", "github")


def path_for(store_id: str) -> str:
    return f"{constants.STORES_DIR}/{store_id}{constants.ENTRY_SUFFIX}"


def depth(value: Any) -> int:
    """How deeply ``value`` nests (iteratively: request bodies may nest past the recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def too_deep(value: Any) -> bool:
    return depth(value) > documents.MAX_DEPTH


def _ordered(data: Mapping[str, Any], order: tuple[str, ...]) -> CommentedMap:
    out = CommentedMap()
    for key in [k for k in order if k in data] + sorted(k for k in data if k not in order):
        value = data[key]
        if key == "owner" and isinstance(value, Mapping):
            value = _ordered(value, OWNER_ORDER)
        out[key] = value
    return out


def with_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """The entry a request asks for: ``state`` is written out (``active``) as the examples do."""
    out = dict(data)
    out.setdefault("state", "active")
    return out


def merge_patch(text: str, patch: Mapping[str, Any]) -> str:
    """``text`` (a store file) with a JSON merge patch (RFC 7386) applied: ``null`` removes a field.

    The file is edited in round-trip mode, so its comments and key order stay as they were.
    """
    yaml = _yaml()
    document = yaml.load(text) or CommentedMap()
    _merge(document, patch)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def patch_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``before`` into ``after`` (empty when they are equal)."""
    out: dict[str, Any] = {}
    for key in [*before, *(k for k in after if k not in before)]:
        if key not in after:
            out[key] = None
        elif key not in before:
            out[key] = after[key]
        elif isinstance(before[key], Mapping) and isinstance(after[key], Mapping):
            inner = patch_between(before[key], after[key])
            if inner:
                out[key] = inner
        elif before[key] != after[key]:
            out[key] = after[key]
    return out


def rollback_patch(current: Mapping[str, Any], wanted: Mapping[str, Any],
                   restore_from: str | None = None) -> dict[str, Any]:
    """The merge patch that puts an entry back as ``wanted`` (an earlier version of it) but for what never
    goes back: the password count stays at the higher of the two. With ``restore_from`` (one of the store's
    own pre-upgrade backups) the store's data goes back to it too. Empty when nothing would change."""
    target = dict(wanted)
    if restore_from:
        target["restoreFrom"] = restore_from
    rotation = max(int(current.get("adminPasswordRotation") or 0), int(target.get("adminPasswordRotation") or 0))
    if rotation:
        target["adminPasswordRotation"] = rotation
    return patch_between(current, target)


def _merge(target: CommentedMap, patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), Mapping):
            _merge(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = _ordered(value, OWNER_ORDER if key == "owner" else ())
        else:
            target[key] = value


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.preserve_quotes = True
    return yaml


def dump(data: Mapping[str, Any]) -> str:
    """The text of a store file holding ``data``."""
    yaml = _yaml()
    buffer = io.StringIO()
    yaml.dump(_ordered(data, FIELD_ORDER), buffer)
    return constants.STORE_SCHEMA_COMMENT + "\n" + buffer.getvalue()
