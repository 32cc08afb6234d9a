"""The form mapping file: per form of a form service, which answer fills which store field.

``STOREOPS_FORM_MAPPING`` names a YAML file checked against ``form-mapping.schema.json`` when the
service starts; every problem is reported at once, as ``path:line: field: message``, and the
service does not start with a broken file. Secrets are not in the file: each form names the
environment variable that holds its signing secret. Example::

    forms:
      - name: new-store                  # POST /v1/webhooks/forms/new-store
        provider: typeform
        secretEnv: STOREOPS_TYPEFORM_SECRET
        formId: lT4Z3j
        fields:
          id: {answer: store_id}         # an answer by its ref or key ...
          name: {answer: "Store name"}   # ... or by its question
          plan: {answer: size, values: {"Small (2 CPU)": small, "Medium (4 CPU)": medium}}
          cluster: {value: local}        # a constant
          owner.email: {hidden: email}   # a hidden field
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import constants, documents, validation
from generator.errors import Problem
from webhook.errors import SettingsError
from webhook.intake.providers import PROVIDERS, Answer, Delivery, Provider

__all__ = ["Form", "Source", "load", "parse", "store_fields"]

SCHEMA = "form-mapping.schema.json"
#: How old a delivery may be by default (seconds): form services retry for hours at most.
DEFAULT_MAX_AGE = 86400.0


def store_fields() -> list[str]:
    """Every field a mapping may fill: the store schema's properties, nested ones dotted."""
    properties = validation.load_schema(constants.STORE_SCHEMA)["properties"]
    out: list[str] = []
    for name, spec in properties.items():
        nested = spec.get("properties") if isinstance(spec, dict) else None
        out.extend(f"{name}.{sub}" for sub in nested) if nested else out.append(name)
    return out


@dataclass(frozen=True)
class Source:
    answer: str = ""
    hidden: str = ""
    value: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None


@dataclass(frozen=True)
class Form:
    name: str
    provider: Provider
    secret: str
    fields: Mapping[str, Source]
    form_id: str = ""
    max_age: float = DEFAULT_MAX_AGE
    submitted_at: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def to_store(self, delivery: Delivery) -> tuple[dict[str, Any], dict[str, str]]:
        """The store fields the delivery's answers fill, and for each the question it came from."""
        data: dict[str, Any] = {}
        questions: dict[str, str] = {}
        for store_field, source in self.fields.items():
            found = _find(delivery.answers, source)
            value = _value(found, source)
            if value is None:
                continue
            if found is not None:
                questions[store_field] = found.label or found.key
            head, _, tail = store_field.partition(".")
            if tail:
                data.setdefault(head, {})[tail] = value
            else:
                data[head] = value
        return data, questions

    def submitted(self, delivery: Delivery) -> float | None:
        """When the delivery was submitted: as the sender signs it, or the configured answer."""
        if delivery.submitted_at is not None or not self.submitted_at:
            return delivery.submitted_at
        from webhook.intake.providers import timestamp

        found = next((a for a in delivery.answers if a.key == self.submitted_at), None)
        return timestamp(found.value) if found is not None and not isinstance(found.value, tuple) else None


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _find(answers: Sequence[Answer], source: Source) -> Answer | None:
    if source.hidden:
        return next((a for a in answers if a.hidden and a.key == source.hidden), None)
    if not source.answer:
        return None
    by_key = next((a for a in answers if not a.hidden and a.key == source.answer), None)
    if by_key is not None:
        return by_key
    wanted = _normal(source.answer)
    return next((a for a in answers if not a.hidden and a.label and _normal(a.label) == wanted), None)


def _value(found: Answer | None, source: Source) -> str | None:
    if source.value is not None:
        return source.value
    raw = found.value if found is not None else None
    if isinstance(raw, tuple):
        raw = raw[0] if len(raw) == 1 else ", ".join(raw)
    if isinstance(raw, bool):
        raw = "yes" if raw else "no"
    if isinstance(raw, float) and math.isfinite(raw) and raw == int(raw):
        raw = int(raw)
    text = "" if raw is None else str(raw).strip()
    if not text:
        return source.default
    translations = {_normal(k): v for k, v in source.values.items()}
    return translations.get(_normal(text), text)


def parse(text: str | bytes, path: str, environ: Mapping[str, str]) -> tuple[dict[str, Form], list[Problem]]:
    """The forms of a mapping file, or every problem in it (nothing is half-loaded)."""
    try:
        doc = documents.parse(text, path)
    except documents.ParseFailed as e:
        return {}, [e.problem]
    problems = validation.schema_problems(doc, SCHEMA) if isinstance(doc.data, dict) else [
        Problem(path, 1, "", "must be a mapping with a forms list")]
    if problems:
        return {}, problems
    allowed = store_fields()
    forms: dict[str, Form] = {}
    for i, raw in enumerate(doc.data["forms"]):
        where = ("forms", i)
        name = raw["name"]
        if name in forms:
            problems.append(Problem(path, doc.line_of((*where, "name")), f"forms[{i}].name",
                                    f"{name!r} is already the name of another form"))
        for store_field, spec in raw["fields"].items():
            at = (*where, "fields", store_field)
            if store_field not in allowed:
                problems.append(Problem(path, doc.line_of(at), f"forms[{i}].fields.{store_field}",
                                        f"is not a store field (one of: {', '.join(allowed)})"))
            if sum(1 for k in ("answer", "hidden", "value") if k in spec) != 1:
                problems.append(Problem(path, doc.line_of(at), f"forms[{i}].fields.{store_field}",
                                        "must take its value from exactly one of answer, hidden or value"))
        secret = environ.get(raw["secretEnv"], "")
        if not secret:
            problems.append(Problem(path, doc.line_of((*where, "secretEnv")), f"forms[{i}].secretEnv",
                                    f"{raw['secretEnv']} is not set: the form's signing secret must be there"))
        forms[name] = Form(
            name=name, provider=PROVIDERS[raw["provider"]], secret=secret, form_id=raw.get("formId", ""),
            max_age=float(raw.get("maxAge", DEFAULT_MAX_AGE)), submitted_at=raw.get("submittedAt", ""),
            options=dict(raw.get("options", {})),
            fields={f: Source(answer=s.get("answer", ""), hidden=s.get("hidden", ""), value=s.get("value"),
                              values=dict(s.get("values", {})), default=s.get("default"))
                    for f, s in raw["fields"].items()})
    return ({}, problems) if problems else (forms, [])


def load(path: str, environ: Mapping[str, str] | None = None) -> dict[str, Form]:
    """The forms of the file at ``path`` ('' for none); SettingsError listing every problem otherwise."""
    if not path:
        return {}
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise SettingsError(f"STOREOPS_FORM_MAPPING has value {path!r}. Cannot read it: {e.strerror}.") from None
    forms, problems = parse(text, path, os.environ if environ is None else environ)
    if problems:
        raise SettingsError("STOREOPS_FORM_MAPPING: the mapping file has problems:\n" +
                            "\n".join(f"  {p}" for p in problems))
    return forms
