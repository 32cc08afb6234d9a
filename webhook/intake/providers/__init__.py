"""Form services as they send: each provider knows its signature, its delivery id and time, its answers.

A provider turns a delivery (headers and raw body) into a :class:`Delivery`: who it is (an id the
sender signed, for de-duplication), when it was submitted (for the replay window), which form it
came from, and a flat list of :class:`Answer` ``(key, label, value)``. The mapping file
(``webhook.intake.mappings``) then says which answer fills which store field. A new provider is one
file in this folder and one line in :data:`PROVIDERS`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webhook import access
from webhook.errors import BadRequest, Forbidden, Unauthenticated

__all__ = ["PROVIDERS", "Answer", "Delivery", "Provider", "digest", "expect_signature", "flatten", "json_object",
           "timestamp"]

#: What an answer holds once read: text, a number, a yes/no, or several choices.
Value = str | int | float | bool | tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    #: The field's stable name in the form (Typeform's ``ref``, Tally's ``key``, a JSON path).
    key: str
    #: The question as people read it ('' when the service does not send it).
    label: str
    value: Value
    #: A hidden field (filled by the form's link, not by the person).
    hidden: bool = False


@dataclass(frozen=True)
class Delivery:
    #: The id the sender gave this delivery, covered by its signature ('' when it has none).
    id: str
    #: When the form was submitted, in seconds since the epoch (None when the sender does not say).
    submitted_at: float | None
    #: The form it came from, as the sender names it ('' when unknown).
    form_id: str
    answers: Sequence[Answer] = field(default_factory=tuple)


class Provider(Protocol):
    #: The name a mapping file uses (``provider: typeform``).
    name: str

    def verify(self, *, secret: str, headers: Mapping[str, str], body: bytes, now: float,
               options: Mapping[str, str]) -> None:
        """Raise ``Unauthenticated`` (401) or ``Forbidden`` (403) unless the delivery is signed with ``secret``.

        ``options`` are the form's provider settings from the mapping file (the generic HMAC's header).
        """
        ...

    def read(self, *, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery's identity and answers; raise ``BadRequest`` (400) when it is not this service's shape."""
        ...


def digest(secret: str, body: bytes, *, encoding: str) -> str:
    """HMAC-SHA256 of ``body`` under ``secret``, as ``hex`` or ``base64``."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()


def expect_signature(given: str | None, expected: str, *, header: str) -> None:
    """401 without the header, 403 when it is not ``expected`` (compared in constant time)."""
    if not given:
        raise Unauthenticated(f"missing {header} header")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Forbidden(f"{header} does not match the body")


def json_object(body: bytes) -> dict[str, Any]:
    payload = access.parse_json(body)
    if not isinstance(payload, dict):
        raise BadRequest("the delivery must be a JSON object")
    return payload


def timestamp(value: object) -> float | None:
    """Seconds since the epoch from an ISO 8601 time or a number; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def flatten(value: object, prefix: str = "") -> list[Answer]:
    """A JSON document's scalars (and lists of scalars) as answers keyed by dotted paths."""
    if isinstance(value, dict):
        return [a for k, v in value.items() for a in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        if all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            return [Answer(prefix, "", tuple(str(v) for v in value))] if prefix else []
        return []
    if isinstance(value, str | int | float | bool) and prefix:
        return [Answer(prefix, "", value)]
    return []


def _registry() -> dict[str, Provider]:
    from webhook.intake.providers import generic, standard_webhooks, tally, typeform

    return {p.name: p for p in (typeform.PROVIDER, tally.PROVIDER, standard_webhooks.PROVIDER, generic.PROVIDER)}


PROVIDERS: Mapping[str, Provider] = _registry()
