"""Callback deliveries: a store's status change POSTed as signed JSON to a receiver's URL.

The body is ``{event_id, store_id, status, url, error, revision, at}``. The signature is
``sha256=<hex HMAC-SHA256 of the body>`` under the shared secret, in ``signature_header`` (the
way GitHub signs its webhooks, so receivers can reuse their check); receivers built around a
bearer-like shared token get it in ``token_header`` too. The event id (``event_id``, and the
``X-Storeops-Event`` header) is the transition's number in the status ledger, the same on every
delivery of it: deliveries are retried (and repeated after a crash, or by the next leader of several
replicas), and a receiver de-duplicates by it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import urllib3

from generator import destinations, remotes
from webhook.errors import DeliveryError
from webhook.settings import StatusSettings
from webhook.status import lifecycle
from webhook.status.ledger import Event

__all__ = ["EVENT_HEADER", "CallbackSink", "Callbacks", "body", "callback_payload", "event_id", "sign", "verify"]

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Storeops-Event"


def callback_payload(event: Event, details: Mapping[str, object] | None = None) -> dict[str, object]:
    """The callback body: ``{event_id, store_id, status, url, error, revision, at}``, and on ``ready`` the
    ``details`` of the store (``admin_url``, ``credentials``, ``publishable_key``: see
    ``webhook.credentials.ready_details``)."""
    error = event.message if event.state in (lifecycle.FAILED, lifecycle.DEGRADED, lifecycle.STUCK) else ""
    payload: dict[str, object] = {
        "event_id": event_id(event), "store_id": event.store_id, "status": event.state,
        "url": event.url if event.state == lifecycle.READY and event.url else None,
        "error": error or None, "revision": event.revision or None, "at": event.as_dict()["at"],
    }  # fmt: skip
    if event.state == lifecycle.READY and details:
        payload.update({key: value for key, value in details.items() if key not in payload})
    return payload


def event_id(event: Event) -> str:
    """The id a receiver de-duplicates by: the transition's number in the ledger (one database for every
    replica, so one number per transition whichever replica delivers it)."""
    return str(event.seq)


def body(payload: Mapping[str, object]) -> bytes:
    """The exact bytes signed and sent: compact, keys sorted."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(data: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, secret: str, signature: str) -> bool:
    """Constant-time check of a ``sha256=...`` signature (what a receiver does)."""
    return hmac.compare_digest(sign(data, secret), signature)


#: Resolves a host name to addresses, like ``socket.getaddrinfo`` (tests give their own).
Resolve = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


@dataclass
class Callbacks:
    """POSTs payloads to receivers; raises DeliveryError on anything but 2xx.

    Each delivery resolves the receiver's name once, checks every address it got
    (``generator.destinations``: no loopback, link-local, private or otherwise internal address
    unless ``allowed``), and connects to the first address that passed: there is no second
    lookup a DNS answer could change in between. Redirects are not followed.
    """

    secret: str = ""
    token: str = ""
    signature_header: str = "X-Storeops-Signature-256"
    token_header: str = "X-Storeops-Token"
    timeout: float = 10.0
    allowed: destinations.Allowed = destinations.NOTHING_ALLOWED
    resolver: Resolve = resolve

    @classmethod
    def from_settings(cls, settings: StatusSettings) -> Callbacks:
        return cls(secret=settings.callback_secret, token=settings.callback_token,
                   signature_header=settings.signature_header, token_header=settings.token_header,
                   timeout=settings.callback_timeout, allowed=destinations.Allowed.parse(settings.callback_allow))

    def __post_init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def post(self, url: str, payload: Mapping[str, object], *, event_id: str) -> int:
        data = body(payload)
        store_id = payload.get("store_id")
        where = f"callback {remotes.redact(url)} for store {store_id} (event {event_id})"
        pool, target, host_header = self._connect(url, where)
        headers = {"Content-Type": "application/json", "User-Agent": "storeops-status", EVENT_HEADER: event_id,
                   "Host": host_header}
        if self.secret:
            headers[self.signature_header] = sign(data, self.secret)
        if self.token:
            headers[self.token_header] = self.token
        try:
            response = pool.urlopen("POST", target, body=data, headers=headers, redirect=False, retries=False,
                                    assert_same_host=False)
        except urllib3.exceptions.HTTPError as e:
            raise DeliveryError(f"{where} failed: {e}") from e
        if not 200 <= response.status < 300:
            raise DeliveryError(f"{where} answered {response.status}"
                                + (" (redirects are not followed)" if 300 <= response.status < 400 else ""))
        log.debug("store %s: event %s delivered to %s (%d)", store_id, event_id, remotes.redact(url), response.status)
        return response.status

    def _connect(self, url: str, where: str) -> tuple[urllib3.HTTPConnectionPool, str, str]:
        """The pool for the checked address of ``url``'s host, the request target and the Host header."""
        problem = destinations.url_problem(url, self.allowed)
        if problem:
            raise DeliveryError(f"{where} refused: the URL {problem}")
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        literal = destinations.literal_address(host)
        try:
            addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        except OSError as e:
            raise DeliveryError(f"{where} failed: cannot resolve {host!r}: {e}") from e
        refused = []
        for address in addresses:
            problem = "" if self.allowed.permits_host(host) else destinations.address_problem(
                ipaddress.ip_address(address), self.allowed)
            if not problem:
                break
            refused.append(problem)
        else:
            raise DeliveryError(f"{where} refused: {host!r} resolves only to refused addresses: "
                                f"{'; '.join(refused) or 'none'}")
        key = (parts.scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                timeout = urllib3.Timeout(total=self.timeout)
                pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=host, assert_hostname=host,
                                                   cert_reqs="CERT_REQUIRED", timeout=timeout, retries=False,
                                                   maxsize=2) \
                    if parts.scheme == "https" else urllib3.HTTPConnectionPool(address, port, timeout=timeout,
                                                                                retries=False, maxsize=2)
                self._pools[key] = pool
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if parts.scheme == "https" else 80
        host_header = (f"[{host}]" if ":" in host else host) + (f":{port}" if port != default else "")
        return pool, target, host_header

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


class CallbackSink:
    """The status sink that POSTs each transition to the global callback URL and the store's own (durable)."""

    name = "callback"
    durable = True

    def __init__(
        self, *, callbacks: Callbacks, url: str = "", details: Callable[[Event], Mapping[str, object]] | None = None
    ) -> None:
        self.callbacks = callbacks
        self.url = url
        #: What a ready report adds for the store's owner (the callback is a private channel).
        self.details = details

    @classmethod
    def from_settings(
        cls, settings: StatusSettings, *, details: Callable[[Event], Mapping[str, object]] | None = None
    ) -> CallbackSink:
        return cls(callbacks=Callbacks.from_settings(settings), url=settings.callback_url, details=details)

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        return [url for url in (self.url, assessment.callback_url) if url]

    def deliver(self, event: Event, target: str) -> None:
        details: Mapping[str, object] | None = None
        if event.state == lifecycle.READY and self.details is not None:
            try:
                details = self.details(event)
            except Exception as e:  # the report goes out without them rather than not at all
                log.warning("ready details of %s unavailable: %s", event.store_id, e)
        self.callbacks.post(target, callback_payload(event, details), event_id=event_id(event))

    def close(self) -> None:
        self.callbacks.close()
