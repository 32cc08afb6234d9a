"""Property: any mapping file that validates never makes the service answer 5xx, for any payload.

Hypothesis writes mapping files (each checked by ``mappings.parse``, so only valid ones are used)
and deliveries for their provider, signed correctly so they get past the signature to the mapping,
and sends them through the real app.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from harness import examples
from tests.integration.intake.test_api import Running, wait_for
from webhook import app
from webhook.intake import mappings

SECRET = "whsec_" + base64.b64encode(b"property-secret-property-secret!").decode()
ENV = {"PROP_SECRET": SECRET}

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=False), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
sources = st.one_of(
    st.fixed_dictionaries({"answer": texts.filter(bool)}, optional={"values": st.dictionaries(texts, texts, max_size=3),
                                                                    "default": texts}),
    st.fixed_dictionaries({"hidden": texts.filter(bool)}, optional={"default": texts}),
    st.fixed_dictionaries({"value": texts}))
forms = st.fixed_dictionaries({
    "name": st.just("prop"),
    "provider": st.sampled_from(["typeform", "tally", "standard-webhooks", "hmac"]),
    "secretEnv": st.just("PROP_SECRET"),
    "fields": st.dictionaries(st.sampled_from(mappings.store_fields()), sources, min_size=1),
}, optional={"formId": texts.filter(bool), "maxAge": st.floats(1, 10**9), "submittedAt": texts.filter(bool)})


def answers_for(provider: str) -> st.SearchStrategy[Any]:
    """A payload in the provider's shape, with answers of any type, or any JSON at all."""
    typeform_answer = st.fixed_dictionaries({"type": st.sampled_from(["text", "email", "choice", "choices", "number"]),
                                             "field": st.fixed_dictionaries({"ref": texts, "id": texts}),
                                             "text": json_values, "choice": json_values, "choices": json_values})
    tally_field = st.fixed_dictionaries({"key": texts, "label": texts, "type": texts, "value": json_values},
                                        optional={"options": json_values})
    shaped = {
        "typeform": st.fixed_dictionaries({"event_id": texts, "form_response": st.fixed_dictionaries({
            "form_id": texts, "submitted_at": json_values, "answers": st.lists(typeform_answer, max_size=5),
            "hidden": json_values, "definition": json_values})}),
        "tally": st.fixed_dictionaries({"eventId": texts, "data": st.fixed_dictionaries({
            "formId": texts, "createdAt": json_values, "fields": st.lists(tally_field, max_size=5)})}),
    }
    return st.one_of(shaped.get(provider, st.dictionaries(texts, json_values, max_size=5)), json_values)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings_ = examples.service_settings(tmp_path_factory.mktemp("props"), rate=0)
    with TestClient(app.create_app(settings_)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield Running(client, settings_)


def signed(provider: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    if provider == "typeform":
        return {"Typeform-Signature": "sha256=" + base64.b64encode(digest).decode()}
    if provider == "tally":
        return {"Tally-Signature": base64.b64encode(digest).decode()}
    if provider == "hmac":
        return {"X-Storeops-Signature": "sha256=" + digest.hex()}
    now = datetime.datetime.now(datetime.UTC)
    return {"webhook-id": "msg_prop", "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET).sign("msg_prop", now, body.decode())}


@given(form=forms, data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_a_valid_mapping_never_gives_a_5xx(running: Running, form: dict[str, Any], data: st.DataObject) -> None:
    loaded, problems = mappings.parse(yaml.safe_dump({"forms": [form]}), "forms.yaml", ENV)
    if problems:
        return  # only mapping files that validate are the property's subject
    running.client.app.state.service.forms = loaded  # type: ignore[attr-defined]
    payload = data.draw(answers_for(form["provider"]))
    body = json.dumps(payload).encode()
    answer = running.client.post("/v1/webhooks/forms/prop", content=body,
                                 headers={"Content-Type": "application/json", **signed(form["provider"], body)})
    assert answer.status_code < 500, (form, payload, answer.text)
    assert answer.status_code in (202, 400, 403, 409, 422), answer.text


def test_mapping_problems_are_named_by_line() -> None:
    text = Path(__file__).read_text()  # not YAML of a mapping: a parse problem with its line
    assert mappings.parse(text, "f.yaml", ENV)[1]
    _, problems = mappings.parse("forms:\n  - name: a\n    provider: tally\n    secretEnv: MISSING_ONE\n"
                                 "    fields:\n      colour: {value: red}\n      plan: {answer: x, value: y}\n",
                                 "forms.yaml", ENV)
    assert [str(p) for p in problems] == [
        "forms.yaml:6: forms[0].fields.colour: is not a store field (one of: " + ", ".join(mappings.store_fields())
        + ")",
        "forms.yaml:7: forms[0].fields.plan: must take its value from exactly one of answer, hidden or value",
        "forms.yaml:4: forms[0].secretEnv: MISSING_ONE is not set: the form's signing secret must be there"]
