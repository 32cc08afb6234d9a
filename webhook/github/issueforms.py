"""Issue forms: the body GitHub renders from ``.github/ISSUE_TEMPLATE/new-store.yml``, back into a store entry.

GitHub writes each form field as a ``### <label>`` heading followed by the answer; an optional field
left empty reads ``_No response_``. The labels below are the ones the template uses (keep them in
step: ``tests/unit/test_github_issueforms.py`` reads the template and checks every label is here).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from generator.errors import Problem

#: The issue template's labels, mapped to store fields (dotted for nested ones).
LABELS: dict[str, str] = {
    "Store ID": "id",
    "Store name": "name",
    "Engine": "engine",
    "Plan": "plan",
    "Cluster": "cluster",
    "Owner name": "owner.name",
    "Owner email": "owner.email",
    "Owner GitHub login": "owner.github",
    "Custom domain": "domain",
}
#: What GitHub writes for an optional field left empty.
NO_RESPONSE = "_No response_"
#: The label on issues the form opens; storeops acts only on issues carrying it.
ISSUE_LABEL = "new-store"

_HEADING = re.compile(r"^###[ \t]+(?P<label>.+?)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Parsed:
    """The store data a form asked for, and what is wrong with the form itself."""

    data: dict[str, Any]
    problems: list[Problem]


def sections(body: str) -> dict[str, str]:
    """``### Label`` sections of an issue body, label -> answer (trimmed; ``_No response_`` is '')."""
    text = body.replace("\r\n", "\n")
    found: dict[str, str] = {}
    matches = list(_HEADING.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        answer = text[match.end():end].strip()
        found[match.group("label")] = "" if answer == NO_RESPONSE else answer
    return found


def parse(body: str, *, where: str) -> Parsed:
    """The store entry an issue form asks for; ``where`` names the issue in problems (``issue #7``)."""
    answers = sections(body or "")
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    if not answers:
        return Parsed({}, [Problem(where, 0, "", "the issue has no form fields (### headings); "
                                                 "open it with the 'New store' issue form")])
    for label, field in LABELS.items():
        value = answers.get(label, "")
        if not value:
            continue
        if "\n" in value and field != "name":
            problems.append(Problem(where, 0, field, f"'{label}' must be one line"))
            continue
        _put(data, field, " ".join(value.split()))
    return Parsed(data, problems)


def _put(data: dict[str, Any], dotted: str, value: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        inner = data.setdefault(head, {})
        assert isinstance(inner, dict)
        inner[rest] = value
    else:
        data[head] = value


def render(answers: Mapping[str, str]) -> str:
    """An issue body as GitHub renders a filled-in form (fields in the template's order)."""
    parts = []
    for label in LABELS:
        value = answers.get(label, "")
        parts.append(f"### {label}\n\n{value or NO_RESPONSE}")
    return "\n\n".join(parts) + "\n"
