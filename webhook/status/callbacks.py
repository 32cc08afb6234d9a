"""Callback deliveries: a store's status change POSTed as signed JSON to a receiver's URL.

The body is ``{store_id, status, url, error, revision, at}``. The signature is
``sha256=<hex HMAC-SHA256 of the body>`` under the shared secret, in ``signature_header`` (the
way GitHub signs its webhooks, so receivers can reuse their check); receivers built around a
bearer-like shared token get it in ``token_header`` too. ``X-Storeops-Event`` carries the event
id: deliveries are retried, and a receiver de-duplicates by it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import urllib3

from webhook.errors import DeliveryError
from webhook.settings import StatusSettings
from webhook.status import lifecycle
from webhook.status.ledger import Event

__all__ = ["EVENT_HEADER", "CallbackSink", "Callbacks", "body", "callback_payload", "sign", "verify"]

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Storeops-Event"


def callback_payload(event: Event) -> dict[str, object]:
    """The callback body: ``{store_id, status, url, error, revision, at}``."""
    error = event.message if event.state in (lifecycle.FAILED, lifecycle.DEGRADED, lifecycle.STUCK) else ""
    return {"store_id": event.store_id, "status": event.state,
            "url": event.url if event.state == lifecycle.READY and event.url else None,
            "error": error or None, "revision": event.revision or None,
            "at": event.as_dict()["at"]}


def body(payload: Mapping[str, object]) -> bytes:
    """The exact bytes signed and sent: compact, keys sorted."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(data: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, secret: str, signature: str) -> bool:
    """Constant-time check of a ``sha256=...`` signature (what a receiver does)."""
    return hmac.compare_digest(sign(data, secret), signature)


@dataclass
class Callbacks:
    """POSTs payloads over one keep-alive connection pool; raises DeliveryError on anything but 2xx."""

    secret: str = ""
    token: str = ""
    signature_header: str = "X-Storeops-Signature-256"
    token_header: str = "X-Storeops-Token"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self._pool = urllib3.PoolManager(num_pools=8, maxsize=2, retries=False,
                                         timeout=urllib3.Timeout(total=self.timeout))

    def post(self, url: str, payload: Mapping[str, object], *, event_id: str) -> int:
        data = body(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "storeops-status", EVENT_HEADER: event_id}
        if self.secret:
            headers[self.signature_header] = sign(data, self.secret)
        if self.token:
            headers[self.token_header] = self.token
        store_id = payload.get("store_id")
        try:
            response = self._pool.request("POST", url, body=data, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise DeliveryError(f"callback {url} for store {store_id} (event {event_id}) failed: {e}") from e
        if not 200 <= response.status < 300:
            raise DeliveryError(
                f"callback {url} for store {store_id} (event {event_id}) answered {response.status}")
        log.debug("store %s: event %s delivered to %s (%d)", store_id, event_id, url, response.status)
        return response.status

    def close(self) -> None:
        self._pool.clear()


class CallbackSink:
    """The status sink that POSTs each transition to the global callback URL and the store's own (durable)."""

    name = "callback"
    durable = True

    def __init__(self, *, callbacks: Callbacks, url: str = "") -> None:
        self.callbacks = callbacks
        self.url = url

    @classmethod
    def from_settings(cls, settings: StatusSettings) -> CallbackSink:
        return cls(callbacks=Callbacks(secret=settings.callback_secret, token=settings.callback_token,
                                       signature_header=settings.signature_header, token_header=settings.token_header,
                                       timeout=settings.callback_timeout), url=settings.callback_url)

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        return [url for url in (self.url, assessment.callback_url) if url]

    def deliver(self, event: Event, target: str) -> None:
        self.callbacks.post(target, callback_payload(event), event_id=str(event.seq))

    def close(self) -> None:
        self.callbacks.close()
