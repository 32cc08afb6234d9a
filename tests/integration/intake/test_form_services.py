"""Form services as they really send, through the real app and a real Git remote.

The deliveries are in each service's documented shape, signed as each signs:
* Typeform: tests/forms/typeform_store_request.json follows "Example webhook payload"
  (https://www.typeform.com/developers/webhooks/example-payload/); the signature follows
  "Secure your webhooks" (https://www.typeform.com/developers/webhooks/secure-your-webhooks/):
  ``Typeform-Signature: sha256=`` + base64 of the HMAC-SHA256 of the raw body.
* Tally: tests/forms/tally_store_request.json follows the example event of "Webhooks"
  (https://tally.so/help/webhooks); ``Tally-Signature`` is the base64 HMAC-SHA256 of the raw body.
* Standard Webhooks: the specification (https://www.standardwebhooks.com/, "Signature scheme"),
  signed here with its authors' ``standardwebhooks`` package.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from harness import examples, receivers
from tests.integration.intake.test_api import READ, Running, wait_for
from webhook import app
from webhook.settings import StatusSettings

FORMS = Path(__file__).resolve().parents[2] / "forms"
TYPEFORM_SECRET = "typeform-secret-for-tests"
TALLY_SECRET = "tally-secret-for-tests"
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
HMAC_SECRET = "hmac-secret-for-tests"
MAPPING = """\
forms:
  - name: typeform-stores
    provider: typeform
    secretEnv: TEST_TYPEFORM_SECRET
    formId: St0reF
    maxAge: 3600
    fields:
      id: {answer: store_id}
      name: {answer: "What is the shop called?"}
      engine: {answer: software, values: {WooCommerce: woocommerce, Medusa: medusa}}
      plan: {answer: size, values: {"Small (2 CPU)": small, "Medium (4 CPU)": medium}}
      cluster: {value: local}
      owner.name: {answer: owner_name}
      owner.email: {answer: owner_email}
  - name: tally-stores
    provider: tally
    secretEnv: TEST_TALLY_SECRET
    fields:
      id: {answer: Store ID}
      name: {answer: Shop name}
      engine: {answer: software, values: {WooCommerce: woocommerce, Medusa: medusa}}
      plan: {answer: size, values: {"Small (2 CPU)": small, "Medium (4 CPU)": medium}}
      cluster: {value: local}
      owner.name: {answer: Your name}
      owner.email: {answer: Your email}
      owner.github: {hidden: question_Hid3n0}
  - name: sw-stores
    provider: standard-webhooks
    secretEnv: TEST_SW_SECRET
    fields:
      id: {answer: shop.id}
      name: {answer: shop.name}
      engine: {value: woocommerce}
      plan: {answer: shop.plan, default: small}
      cluster: {value: local}
      owner.name: {answer: owner.name}
      owner.email: {answer: owner.email}
      callbackUrl: {answer: shop.callback}
  - name: hmac-stores
    provider: hmac
    secretEnv: TEST_HMAC_SECRET
    submittedAt: sent
    options: {header: X-Hub-Signature, prefix: "", encoding: base64}
    fields:
      id: {answer: id}
      name: {answer: name}
      engine: {value: medusa}
      plan: {value: small}
      cluster: {value: local}
      owner.name: {answer: who}
      owner.email: {answer: mail}
"""


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    for name, secret in (("TEST_TYPEFORM_SECRET", TYPEFORM_SECRET), ("TEST_TALLY_SECRET", TALLY_SECRET),
                         ("TEST_SW_SECRET", SW_SECRET), ("TEST_HMAC_SECRET", HMAC_SECRET)):
        monkeypatch.setenv(name, secret)
    mapping = tmp_path / "forms.yaml"
    mapping.write_text(MAPPING)
    settings = examples.service_settings(tmp_path, form_mapping=str(mapping))
    # The operator lets form callbacks reach this machine's receivers (loopback).
    status = StatusSettings(callback_allow="127.0.0.1", callback_secret="callback-secret")
    with TestClient(app.create_app(settings, status=status)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield Running(client, settings)


def vector(name: str, store_id: str, *, submitted: float | None = None) -> bytes:
    when = datetime.datetime.fromtimestamp(submitted or time.time(), datetime.UTC)
    text = (FORMS / name).read_text().replace("STORE_ID", store_id)
    return text.replace("SUBMITTED_AT", when.strftime("%Y-%m-%dT%H:%M:%S.000Z")).encode()


def mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def typeform(running: Running, body: bytes, *, secret: str = TYPEFORM_SECRET) -> Any:
    signature = "sha256=" + base64.b64encode(mac(secret, body)).decode()
    return running.client.post("/v1/webhooks/forms/typeform-stores", content=body,
                               headers={"Content-Type": "application/json", "Typeform-Signature": signature})


def tally(running: Running, body: bytes) -> Any:
    return running.client.post("/v1/webhooks/forms/tally-stores", content=body, headers={
        "Content-Type": "application/json", "Tally-Signature": base64.b64encode(mac(TALLY_SECRET, body)).decode()})


def standard(running: Running, payload: dict[str, Any], *, msg_id: str, at: float | None = None) -> Any:
    body = json.dumps(payload)
    stamp = datetime.datetime.fromtimestamp(at or time.time(), datetime.UTC)
    signature = Webhook(SW_SECRET).sign(msg_id, stamp, body)
    return running.client.post("/v1/webhooks/forms/sw-stores", content=body, headers={
        "Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature})


def landed(running: Running, answer: Any) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    assert running.settled(answer.json()["request_id"])["status"] == "committed"
    return examples.remote_stores(running.bare)[answer.json()["store_id"]]


def test_a_typeform_delivery_lands_once_and_is_checked(running: Running) -> None:
    body = vector("typeform_store_request.json", "typeform-outfitters")
    entry = landed(running, typeform(running, body))
    assert (entry["name"], entry["engine"], entry["plan"]) == ("Typeform Outfitters", "medusa", "small")
    assert entry["owner"] == {"name": "Laura Example", "email": "laura@typeform-outfitters.example"}
    # GitHub-style redelivery of the same event: the first answer, nothing new in Git.
    again = typeform(running, body)
    assert again.status_code == 202 and again.json()["request_id"] == typeform(running, body).json()["request_id"]
    assert examples.additions(running.bare)["stores/typeform-outfitters.yaml"] == 1
    # Signed in hex (the old way) or with another secret: refused; unsigned: 401.
    hexed = running.client.post("/v1/webhooks/forms/typeform-stores", content=body, headers={
        "Content-Type": "application/json", "Typeform-Signature": "sha256=" + mac(TYPEFORM_SECRET, body).hex()})
    assert hexed.status_code == 403
    assert typeform(running, body, secret="another").status_code == 403
    assert running.client.post("/v1/webhooks/forms/typeform-stores", content=body).status_code == 401
    # Another form's delivery, and one submitted long ago: refused, saying so.
    other = body.replace(b'"form_id": "St0reF"', b'"form_id": "Xx0000"')
    assert typeform(running, other).status_code == 422
    old = vector("typeform_store_request.json", "old-outfitters", submitted=time.time() - 7200)
    stale = typeform(running, old)
    assert stale.status_code == 400 and "outside the form's 3600 s window" in stale.json()["error"]
    assert running.client.post("/v1/webhooks/forms/nope", content=body).status_code == 404


def test_a_tally_delivery_resolves_its_option_ids(running: Running) -> None:
    entry = landed(running, tally(running, vector("tally_store_request.json", "tally-books")))
    assert (entry["name"], entry["engine"], entry["plan"]) == ("Tally Books", "woocommerce", "medium")
    assert entry["owner"] == {"name": "Tom Tally", "email": "tom@tally-books.example", "github": "tomtally"}
    forged = running.client.post("/v1/webhooks/forms/tally-stores", content=b"{}",
                                 headers={"Tally-Signature": base64.b64encode(mac("wrong", b"{}")).decode()})
    assert forged.status_code == 403


def test_standard_webhooks_bound_replays_by_their_signed_time_and_id(running: Running) -> None:
    payload = {"shop": {"id": "sw-shop", "name": "SW Shop", "plan": "large"},
               "owner": {"name": "Sam", "email": "sam@sw-shop.example"}}
    first = standard(running, payload, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    entry = landed(running, first)
    assert entry["plan"] == "large"
    redelivered = standard(running, payload, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    assert redelivered.json()["request_id"] == first.json()["request_id"]
    # The same delivery captured and replayed later: its signed timestamp is outside the 5-minute window.
    replayed = standard(running, payload | {"shop": {**payload["shop"], "id": "sw-replay"}}, msg_id="msg_old",
                        at=time.time() - 600)
    assert replayed.status_code == 403 and "too old" in replayed.json()["error"]
    missing = running.client.post("/v1/webhooks/forms/sw-stores", content=b"{}", headers={"webhook-id": "x"})
    assert missing.status_code == 401 and "webhook-timestamp" in missing.json()["error"]


def test_a_generic_hmac_sender_with_its_own_header_and_base64(running: Running) -> None:
    data = {"id": "hmac-shop", "name": "HMAC Shop", "who": "Hal", "mail": "hal@hmac.example",
            "sent": datetime.datetime.now(datetime.UTC).isoformat()}
    body = json.dumps(data).encode()
    answer = running.client.post("/v1/webhooks/forms/hmac-stores", content=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature": base64.b64encode(mac(HMAC_SECRET, body)).decode()})
    assert landed(running, answer)["engine"] == "medusa"
    stale = json.dumps({**data, "id": "hmac-old", "sent": "2020-01-01T00:00:00Z"}).encode()
    refused = running.client.post("/v1/webhooks/forms/hmac-stores", content=stale, headers={
        "Content-Type": "application/json", "X-Hub-Signature": base64.b64encode(mac(HMAC_SECRET, stale)).decode()})
    assert refused.status_code == 400


def test_wrong_answers_come_back_per_question_and_to_the_callback(running: Running) -> None:
    receiver = receivers.CallbackReceiver(secret="callback-secret")
    try:
        payload = {"shop": {"id": "Bad Shop!", "name": "Bad", "plan": "huge", "callback": receiver.url},
                   "owner": {"name": "Bo", "email": "not-an-email"}}
        answer = standard(running, payload, msg_id="msg_bad_answers")
        assert answer.status_code == 422
        said = {p["field"]: p["message"] for p in answer.json()["problems"]}
        assert said["plan"].startswith("shop.plan: 'huge' is not one of")
        assert said["owner.email"].startswith("owner.email: ")
        wait_for(lambda: receiver.all())
        posted = receiver.all()[0]
        assert posted.signature_ok and posted.payload["status"] == "rejected"
        assert {p["field"] for p in posted.payload["problems"]} >= {"plan", "owner.email"}
    finally:
        receiver.close()
    # An internal callback URL among the answers is refused like any other, and nothing is posted there.
    inside = standard(running, {"shop": {"id": "inside-shop", "name": "In", "callback": "http://169.254.169.254/"},
                                "owner": {"name": "Bo", "email": "bo@inside.example"}}, msg_id="msg_inside")
    assert inside.status_code == 422
    assert any(p["field"] == "callbackUrl" for p in inside.json()["problems"])
    assert running.client.get("/v1/stores/inside-shop", headers=READ).status_code == 404
