"""Who may do what: bearer tokens, form-service signatures, and per-client rate limits."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Sequence

from webhook.errors import Forbidden, RateLimited, Unauthenticated
from webhook.settings import Token


def client_of(token: Token) -> str:
    """A stable, non-secret name for a token (for idempotency keys, rate limits and logs)."""
    return "token:" + hashlib.sha256(token.value.encode()).hexdigest()[:16]


def bearer(*, header: str | None, tokens: Sequence[Token], write: bool) -> Token:
    """The token an ``Authorization: Bearer`` header carries; 401 when absent or unknown, 403 if read-only."""
    if not header:
        raise Unauthenticated("missing Authorization: Bearer token")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    found = None
    for token in tokens:
        # Compare against every token so timing does not tell which one is close.
        if hmac.compare_digest(token.value.encode(), value.strip().encode()):
            found = token
    if found is None:
        raise Unauthenticated("unknown bearer token")
    if write and not found.write:
        raise Forbidden("this token may only read; changing stores needs a write token")
    return found


def sign(*, secret: str, body: bytes) -> str:
    """The signature header value a form service sends: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(*, secret: str, header_name: str, header: str | None, body: bytes) -> None:
    if not secret:
        raise Forbidden("the form-service webhook is off (STOREOPS_FORM_SECRET is not set)")
    if not header:
        raise Unauthenticated(f"missing {header_name} header")
    if not hmac.compare_digest(sign(secret=secret, body=body).encode(), header.strip().encode()):
        raise Forbidden(f"{header_name} does not match the body")


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                raise RateLimited(f"over {self.rate:g} requests/s for this client",
                                  retry_after=(1 - tokens) / self.rate)
            self._buckets[client] = (tokens - 1, now)
