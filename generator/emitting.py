"""Deterministic YAML for rendered files: sorted keys, block style, no timestamps.

Rendered data is plain (mappings, lists, strings, integers, booleans, null), so a small emitter
does the job at a fraction of a general emitter's cost (see bench/render.py). A string is written
plain only when YAML reads it back as the same string; otherwise it is written as a JSON string,
which is a valid YAML double-quoted scalar.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import yaml

_PLAIN = re.compile(r"^[A-Za-z0-9/][-A-Za-z0-9 ._/@=+,():;]*[-A-Za-z0-9._/@=+()]$|^[A-Za-z0-9]$")
_resolver = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
#: Characters YAML does not allow unescaped even inside a double-quoted scalar.
_NOT_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _resolve(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag YAML gives ``value`` as a plain scalar."""
    tag: str = _resolver.resolve(yaml.ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
    return tag


@lru_cache(maxsize=65536)
def _string(value: str) -> str:
    if _PLAIN.fullmatch(value) and ": " not in value and _resolve(value, (True, False)) == _STR_TAG:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot emit {type(value).__name__} {value!r}; rendered data holds no such values")


def _emit(value: Any, indent: str, out: list[str]) -> None:
    """Append the lines of a non-empty mapping or list at ``indent``."""
    if isinstance(value, dict):
        for key in sorted(value):
            item = value[key]
            if type(item) is str:  # the common case first
                out.append(f"{indent}{_string(key)}: {_string(item)}\n")
            elif isinstance(item, dict | list) and item:
                out.append(f"{indent}{_string(key)}:\n")
                _emit(item, indent + "  ", out)
            else:
                out.append(f"{indent}{_string(key)}: {_inline(item)}\n")
    else:
        for item in value:
            if type(item) is str:
                out.append(f"{indent}- {_string(item)}\n")
            elif isinstance(item, dict) and item:
                # First key on the dash line, the rest aligned under it.
                lines: list[str] = []
                _emit(item, indent + "  ", lines)
                lines[0] = indent + "- " + lines[0][len(indent) + 2:]
                out.extend(lines)
            elif isinstance(item, list) and item:
                out.append(f"{indent}-\n")
                _emit(item, indent + "  ", out)
            else:
                out.append(f"{indent}- {_inline(item)}\n")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump(value: dict[str, Any], header: str = "") -> str:
    """One YAML document for ``value``, after ``header`` comment lines."""
    out = [f"# {line}\n" if line else "#\n" for line in header.splitlines()]
    if value:
        _emit(value, "", out)
    else:
        out.append("{}\n")
    return "".join(out)


def dump_all(values: list[dict[str, Any]], header: str = "") -> str:
    """Several YAML documents, separated by ``---``, after ``header`` comment lines."""
    head = "".join(f"# {line}\n" for line in header.splitlines())
    return head + "---\n".join(dump(v) for v in values)
