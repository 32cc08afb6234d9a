"""Typeform: ``Typeform-Signature: sha256=<base64 HMAC-SHA256 of the body>``; answers in ``form_response.answers``.

Each answer names its field (``field.ref``, ``field.id``) and carries its value under a key named
by its type (``text``, ``email``, ``number``, ``boolean``, ``date``, ``url``, ``phone_number``,
``file_url``, ``choice.label``, ``choices.labels``). The question's title comes from
``form_response.definition.fields``; hidden fields from ``form_response.hidden``. The delivery id
is ``event_id`` and the submission time ``form_response.submitted_at``, both inside the signed body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.errors import BadRequest
from webhook.intake.providers import Answer, Delivery, Value, digest, expect_signature, json_object, text, timestamp

HEADER = "Typeform-Signature"
#: Answer types whose value is a plain scalar under the key named by the type.
_SCALARS = ("text", "email", "number", "boolean", "date", "url", "phone_number", "file_url")


class Typeform:
    name = "typeform"

    def verify(self, *, secret: str, headers: Mapping[str, str], body: bytes, now: float,
               options: Mapping[str, str]) -> None:
        expect_signature(headers.get(HEADER.lower()), "sha256=" + digest(secret, body, encoding="base64"),
                         header=HEADER)

    def read(self, *, headers: Mapping[str, str], body: bytes) -> Delivery:
        payload = json_object(body)
        response = payload.get("form_response")
        if not isinstance(response, dict):
            raise BadRequest("not a Typeform delivery: no form_response object")
        fields = _dicts(_dict(response.get("definition")).get("fields"))
        titles = {str(f.get("id")): text(f.get("title")) for f in fields}
        answers = [_answer(a, titles) for a in _dicts(response.get("answers"))]
        hidden = _dict(response.get("hidden"))
        answers += [Answer(str(k), str(k), v, hidden=True) for k, v in hidden.items() if isinstance(v, str)]
        return Delivery(id=text(payload.get("event_id")), submitted_at=timestamp(response.get("submitted_at")),
                        form_id=text(response.get("form_id")), answers=tuple(a for a in answers if a is not None))


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _answer(raw: dict[str, Any], titles: Mapping[str, str]) -> Answer | None:
    field = _dict(raw.get("field"))
    key = text(field.get("ref")) or text(field.get("id"))
    kind = text(raw.get("type"))
    value: Value | None = None
    if kind in _SCALARS and isinstance(raw.get(kind), str | int | float | bool):
        value = raw[kind]
    elif kind == "choice" and isinstance(raw.get("choice"), dict):
        value = text(raw["choice"].get("label")) or text(raw["choice"].get("other"))
    elif kind == "choices" and isinstance(raw.get("choices"), dict):
        labels = raw["choices"].get("labels")
        value = tuple(str(x) for x in labels) if isinstance(labels, list) else ()
    if not key or value is None:
        return None
    return Answer(key, titles.get(text(field.get("id")), ""), value)


PROVIDER = Typeform()
