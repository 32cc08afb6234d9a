"""Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``.

The signature covers ``<id>.<timestamp>.<body>`` under the ``whsec_``-prefixed secret; a timestamp
more than five minutes from now is refused (the scheme's replay window), checked by the
``standardwebhooks`` package. The delivery id is ``webhook-id`` and the time ``webhook-timestamp``,
both signed. The body is any JSON object; its values are answers keyed by dotted paths.
"""

from __future__ import annotations

from collections.abc import Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhook.errors import Forbidden, Unauthenticated
from webhook.intake.providers import Delivery, flatten, json_object, text, timestamp

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class StandardWebhooks:
    name = "standard-webhooks"

    def verify(self, *, secret: str, headers: Mapping[str, str], body: bytes, now: float,
               options: Mapping[str, str]) -> None:
        missing = [h for h in HEADERS if not headers.get(h)]
        if missing:
            raise Unauthenticated(f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}")
        try:
            Webhook(secret).verify(body, {h: headers[h] for h in HEADERS}, json_parse=False)
        except WebhookVerificationError as e:
            raise Forbidden(f"the Standard Webhooks signature does not hold: {e}") from None
        except (ValueError, UnicodeDecodeError, IndexError) as e:
            raise Forbidden(f"the Standard Webhooks headers cannot be read: {e}") from None

    def read(self, *, headers: Mapping[str, str], body: bytes) -> Delivery:
        payload = json_object(body)
        return Delivery(id=text(headers.get("webhook-id")), submitted_at=timestamp(
            float(stamp) if (stamp := headers.get("webhook-timestamp", "")).isdigit() else None),
            form_id=text(payload.get("form_id")), answers=tuple(flatten(payload)))


PROVIDER = StandardWebhooks()
