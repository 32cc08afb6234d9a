"""Any sender that signs the raw body with HMAC-SHA256: header, prefix and encoding set per form.

``options``: ``header`` (default ``X-Storeops-Signature``), ``prefix`` (default ``sha256=``) and
``encoding`` (``hex``, the default, or ``base64``). The body is JSON or
``application/x-www-form-urlencoded``; its values are answers keyed by dotted paths (form fields
by name). Such senders sign no id or time: the delivery is known by its body (see the endpoint),
and a submission time inside it can bound replays (the form's ``submittedAt``).
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.intake import forms
from webhook.intake.providers import Delivery, digest, expect_signature, flatten, json_object

DEFAULT_HEADER = "X-Storeops-Signature"


class Hmac:
    name = "hmac"

    def verify(self, *, secret: str, headers: Mapping[str, str], body: bytes, now: float,
               options: Mapping[str, str]) -> None:
        header = options.get("header", DEFAULT_HEADER)
        expected = options.get("prefix", "sha256=") + digest(secret, body, encoding=options.get("encoding", "hex"))
        expect_signature(headers.get(header.lower()), expected, header=header)

    def read(self, *, headers: Mapping[str, str], body: bytes) -> Delivery:
        urlencoded = headers.get("content-type", "").split(";")[0].strip().lower() == forms.URLENCODED
        payload = forms.parse_urlencoded(body) if urlencoded else json_object(body)
        return Delivery(id="", submitted_at=None, form_id="", answers=tuple(flatten(payload)))


PROVIDER = Hmac()
