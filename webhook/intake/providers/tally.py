"""Tally: ``Tally-Signature: <base64 HMAC-SHA256 of the body>`` (no prefix); answers in ``data.fields``.

Each field has ``key``, ``label``, ``type`` and ``value``. A choice field (``DROPDOWN``,
``MULTIPLE_CHOICE``, ``CHECKBOXES``, ``RANKING``, ``MULTI_SELECT``) gives option ids, resolved here
through the field's ``options`` to their text. ``HIDDEN_FIELDS`` are hidden answers. The delivery
id is ``eventId`` and the submission time ``data.createdAt``, both inside the signed body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.errors import BadRequest
from webhook.intake.providers import Answer, Delivery, Value, digest, expect_signature, json_object, text, timestamp

HEADER = "Tally-Signature"


class Tally:
    name = "tally"

    def verify(self, *, secret: str, headers: Mapping[str, str], body: bytes, now: float,
               options: Mapping[str, str]) -> None:
        expect_signature(headers.get(HEADER.lower()), digest(secret, body, encoding="base64"), header=HEADER)

    def read(self, *, headers: Mapping[str, str], body: bytes) -> Delivery:
        payload = json_object(body)
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("fields"), list):
            raise BadRequest("not a Tally delivery: no data.fields list")
        answers = [_answer(f) for f in data["fields"] if isinstance(f, dict)]
        return Delivery(id=text(payload.get("eventId")) or text(data.get("responseId")),
                        submitted_at=timestamp(data.get("createdAt") or payload.get("createdAt")),
                        form_id=text(data.get("formId")), answers=tuple(a for a in answers if a is not None))


def _answer(raw: dict[str, Any]) -> Answer | None:
    key, label, kind, value = text(raw.get("key")), text(raw.get("label")), text(raw.get("type")), raw.get("value")
    if not key or value is None:
        return None
    listed = raw.get("options")
    options = {str(o.get("id")): text(o.get("text")) for o in (listed if isinstance(listed, list) else [])
               if isinstance(o, dict)}
    read: Value
    if isinstance(value, list):
        read = tuple(options.get(str(v), str(v)) for v in value if isinstance(v, str | int | float))
    elif isinstance(value, str | int | float | bool):
        read = options.get(value, value) if isinstance(value, str) and options else value
    else:
        return None
    return Answer(key, label, read, hidden=kind == "HIDDEN_FIELDS")


PROVIDER = Tally()
