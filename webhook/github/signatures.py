"""GitHub webhook signatures: ``X-Hub-Signature-256`` is ``sha256=`` + hex HMAC-SHA256 of the raw body.

Checked in constant time against the secret from ``STOREOPS_GITHUB_WEBHOOK_SECRET``; see
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

from webhook.errors import Unauthenticated

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(*, secret: str, body: bytes) -> str:
    """The header value GitHub sends for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(*, secret: str, header: str | None, body: bytes) -> None:
    """Raise :class:`Unauthenticated` (401) unless ``header`` is ``body``'s signature with ``secret``."""
    if not secret:
        raise Unauthenticated("the GitHub webhook secret is empty; refusing every delivery")
    if not header:
        raise Unauthenticated(f"missing {HEADER} header")
    # compare_digest over the full strings: equal time whether the prefix or the digest differs.
    if not hmac.compare_digest(sign(secret=secret, body=body).encode(), header.strip().encode()):
        raise Unauthenticated(f"{HEADER} does not match the body")
