"""A status callback receiver, written the way a user's would be: a real HTTP server on 127.0.0.1.

It checks each delivery's ``X-Storeops-Signature-256`` (``sha256=<hex HMAC-SHA256 of the body>``)
with nothing but the standard library, keeps the ``X-Storeops-Event`` id it would de-duplicate
by and the shared token, and can refuse the next deliveries (503) to show retries.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["CallbackReceiver", "Received"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    event_id: str
    payload: dict[str, Any]
    signature_ok: bool
    token: str
    at: float


class CallbackReceiver:
    def __init__(self, *, secret: str, signature_header: str = "X-Storeops-Signature-256",
                 token_header: str = "X-Storeops-Token", event_header: str = "X-Storeops-Event",
                 host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.received: list[Received] = []
        #: How many of the next deliveries to refuse with 503.
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                expected = "sha256=" + hmac.new(receiver.secret.encode(), data, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(expected, self.headers.get(signature_header, ""))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= int(failing)
                    if not failing:
                        receiver.received.append(Received(self.headers.get(event_header, ""), json.loads(data),
                                                          signed, self.headers.get(token_header, ""),
                                                          time.monotonic()))
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("callback receiver: " + format, *args)

        self.host = host
        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="callback-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}/storeops"

    def statuses(self, store_id: str) -> list[str]:
        with self._lock:
            return [r.payload["status"] for r in self.received if r.payload.get("store_id") == store_id]

    def of(self, store_id: str, status: str) -> Received | None:
        """The first delivery of ``status`` for ``store_id``, if any."""
        with self._lock:
            return next((r for r in self.received if r.payload.get("store_id") == store_id
                         and r.payload.get("status") == status), None)

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
