"""Callbacks reach only addresses that were checked: real HTTP on loopback, a resolver under test control.

The receivers listen on 127.0.0.x; the operator's allow-list (``STOREOPS_CALLBACK_ALLOW``) is what
lets a callback reach them, and everything else on loopback stays refused.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

import pytest

from generator import destinations
from harness import receivers
from webhook.errors import DeliveryError
from webhook.status.callbacks import Callbacks

PAYLOAD = {"store_id": "shop", "status": "ready"}


@pytest.fixture
def receiver() -> Iterator[receivers.CallbackReceiver]:
    running = receivers.CallbackReceiver(secret="s", host="127.0.0.2")
    yield running
    running.close()


class Resolver:
    """A DNS that changes its answer after the first question (a rebinding attack), counting questions."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked += 1
        return self.answers[min(self.asked, len(self.answers)) - 1]


def test_a_loopback_receiver_is_refused_unless_allowed(receiver: receivers.CallbackReceiver) -> None:
    with pytest.raises(DeliveryError, match="refused: the URL points inside the platform"):
        Callbacks(secret="s").post(receiver.url, PAYLOAD, event_id="1")
    assert receiver.all() == []
    allowed = Callbacks(secret="s", allowed=destinations.Allowed.parse("127.0.0.2"))
    assert allowed.post(receiver.url, PAYLOAD, event_id="1") == 204
    assert [r.payload for r in receiver.all()] == [PAYLOAD] and receiver.all()[0].signature_ok


def test_the_checked_address_is_the_one_connected_to(receiver: receivers.CallbackReceiver) -> None:
    port = receiver.server.server_address[1]
    url = f"http://hooks.shop.example:{port}/storeops"
    rebinding = Resolver(["127.0.0.2"], ["127.0.0.1"])
    callbacks = Callbacks(secret="s", allowed=destinations.Allowed.parse("127.0.0.2/32"), resolver=rebinding)
    for event in ("1", "2"):
        with pytest.raises(DeliveryError) if event == "2" else contextlib.nullcontext():
            callbacks.post(url, PAYLOAD, event_id=event)
    # One question per delivery; the first was answered with the allowed address and delivered there,
    # the second (rebound to 127.0.0.1) was refused before any connection.
    assert rebinding.asked == 2
    assert [r.event_id for r in receiver.all()] == ["1"]
    mixed = Resolver(["10.0.0.5", "127.0.0.1", "127.0.0.2"])
    Callbacks(secret="s", allowed=destinations.Allowed.parse("127.0.0.2/32"), resolver=mixed).post(
        url, PAYLOAD, event_id="3")
    assert [r.event_id for r in receiver.all()] == ["1", "3"]
    with pytest.raises(DeliveryError, match=r"resolves only to refused addresses: 127\.0\.0\.1 is a loopback"):
        Callbacks(secret="s", resolver=Resolver(["127.0.0.1"])).post(url, PAYLOAD, event_id="4")


def test_redirects_are_not_followed(receiver: receivers.CallbackReceiver) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.3", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        callbacks = Callbacks(secret="s", allowed=destinations.Allowed.parse("127.0.0.0/8"))
        with pytest.raises(DeliveryError, match="answered 307 \\(redirects are not followed\\)"):
            callbacks.post(f"http://127.0.0.3:{server.server_address[1]}/hook", PAYLOAD, event_id="1")
    finally:
        server.shutdown()
        server.server_close()
    assert receiver.all() == []
