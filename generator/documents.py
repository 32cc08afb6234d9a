"""Parse one human-written YAML file into plain data, keeping the line of every field.

Store files are small and many, and errors must name their line, so the file is read as a stream
of libyaml events (fast, and never recursive) and built up here. Anchors and aliases are refused
outright: an entry has no use for them, and refusing them is what makes alias bombs harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from generator import errors
from generator.errors import Problem

MAX_BYTES = 64 * 1024
MAX_DEPTH = 16

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()
_resolver = yaml.resolver.Resolver()

#: A field's location in a document: keys and list indexes from the top.
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    path: str
    data: Any
    lines: dict[FieldPath, int]

    def line_of(self, field: FieldPath) -> int:
        """The line of ``field``, or of its nearest parent that has one."""
        while field:
            if field in self.lines:
                return self.lines[field]
            field = field[:-1]
        return self.lines.get((), 1)


class ParseFailed(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def field_name(field: FieldPath) -> str:
    """``("owner", "email")`` -> ``owner.email``; ``("tags", 2)`` -> ``tags[2]``."""
    out = ""
    for part in field:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse(text: str | bytes, path: str) -> Document:
    """Parse ``text`` (the content of ``path``) into a :class:`Document`, or raise ParseFailed."""
    if len(text) > MAX_BYTES:
        raise ParseFailed(Problem(path, 0, "", f"file is {len(text)} bytes; the limit is {MAX_BYTES}", errors.PARSE))
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseFailed(Problem(path, 0, "", f"not UTF-8 text ({e.reason} at byte {e.start})",
                                          errors.PARSE)) from None
    try:
        return _build(text, path)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        raise ParseFailed(Problem(path, line, "", f"malformed YAML: {what}", errors.PARSE)) from None
    except yaml.YAMLError as e:
        raise ParseFailed(Problem(path, 0, "", f"malformed YAML: {e}", errors.PARSE)) from None


class _Open:
    """A mapping or sequence being built, with where its next value goes."""

    __slots__ = ("field", "key", "key_line", "value")

    def __init__(self, value: dict[str, Any] | list[Any], field: FieldPath) -> None:
        self.value = value
        self.field = field
        self.key: str | None = None
        self.key_line = 0


def _build(text: str, path: str) -> Document:
    lines: dict[FieldPath, int] = {}
    stack: list[_Open] = []
    result: Any = None
    documents = 0
    done = False

    def fail(line: int, message: str) -> ParseFailed:
        return ParseFailed(Problem(path, line, "", message, errors.PARSE))

    def place(value: Any, line: int) -> FieldPath | None:
        """Put a finished value into the open container; return its field path (None at the top)."""
        nonlocal result, done
        if not stack:
            result, done = value, True
            lines[()] = line
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            field = (*top.field, len(top.value))
            top.value.append(value)
            lines[field] = line
            return field
        assert top.key is not None
        field = (*top.field, top.key)
        top.value[top.key] = value
        lines[field] = top.key_line
        top.key = None
        return field

    for event in yaml.parse(text, Loader=_Parser):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise fail(line, "holds more than one YAML document; a file holds one entry")
        elif isinstance(event, yaml.AliasEvent):
            raise fail(line, "uses a YAML alias; anchors and aliases are not allowed in entries")
        elif isinstance(event, yaml.ScalarEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if event.anchor is not None:
                raise fail(line, f"defines the YAML anchor &{event.anchor}; anchors are not allowed")
            if event.tag not in (None, "!"):
                raise fail(line, f"uses the YAML tag {event.tag}; tags are not allowed in entries")
            top = stack[-1] if stack else None
            if isinstance(event, yaml.ScalarEvent):
                value = _scalar(event)
                if top is not None and isinstance(top.value, dict) and top.key is None:
                    if not isinstance(value, str):
                        raise fail(line, f"mapping key {event.value!r} is not a string")
                    if value in top.value:
                        raise fail(line, f"duplicate key {field_name((*top.field, value))!r}")
                    top.key, top.key_line = value, line
                else:
                    place(value, line)
                continue
            if top is not None and isinstance(top.value, dict) and top.key is None:
                raise fail(line, "mapping key is not a string")
            if len(stack) >= MAX_DEPTH:
                raise fail(line, f"nested more than {MAX_DEPTH} levels deep")
            container: dict[str, Any] | list[Any] = (
                {} if isinstance(event, yaml.MappingStartEvent) else []
            )
            field = place(container, line)
            assert field is not None
            stack.append(_Open(container, field))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            stack.pop()
    if documents == 0 or not done:
        raise fail(0, "file is empty")
    return Document(path, result, lines)


def _scalar(event: yaml.ScalarEvent) -> Any:
    value: str = event.value
    if not event.implicit[0] or (value and value[0] not in _IMPLICIT_FIRST_CHARS):
        # Quoted, or plain text that no implicit YAML type can start with: a string as written.
        return value
    return _plain(value)


#: First characters that can make a plain scalar something other than a string (bool, int, null...).
_IMPLICIT_FIRST_CHARS = frozenset(c for c in _resolver.yaml_implicit_resolvers if c is not None)


@lru_cache(maxsize=4096)
def _plain(value: str) -> Any:
    tag = _resolver.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if tag == "tag:yaml.org,2002:merge":
        # ``<<`` means "merge" only as a key with an alias, and aliases are refused anyway.
        return value
    return _constructor.construct_object(yaml.ScalarNode(tag, value))
