"""Who may do what: bearer tokens, form-service signatures, and per-client rate limits."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from webhook.errors import Forbidden, RateLimited, Unauthenticated
from webhook.settings import Token
from webhook.state import SharedState


def client_of(token: Token) -> str:
    """A stable, non-secret name for a token (for idempotency keys, rate limits, logs and the audit trail)."""
    if token.name:
        return "token:" + token.name
    return "token:" + (token.digest or hashlib.sha256(token.value.encode()).hexdigest())[:16]


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
        if token.matches(value.strip()):
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
    """A token bucket per client: ``rate`` requests a second on average, bursts up to ``burst``.

    The buckets are kept in the service's database (``webhook.state``): they hold across restarts
    and would across replicas, and a bucket idle long enough to be full again is forgotten.
    """

    def __init__(self, *, rate: float, burst: int, state: SharedState | None = None) -> None:
        if rate > 0 and state is None:
            raise ValueError("a rate limit needs the shared state to keep its buckets in")
        self.rate = rate
        self.burst = burst
        self.state = state

    def take(self, client: str) -> None:
        if self.rate <= 0 or self.state is None:
            return
        wait = self.state.take(client, rate=self.rate, burst=self.burst)
        if wait:
            raise RateLimited(f"over {self.rate:g} requests/s for this client", retry_after=wait)
