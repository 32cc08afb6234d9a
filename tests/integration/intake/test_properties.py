"""Property: whatever a client sends, the service answers below 500 and writes nothing invalid."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from harness import examples
from webhook import app

HEADERS = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
FIELDS = ("id", "name", "engine", "plan", "cluster", "owner", "domain", "state", "callbackUrl")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ids = st.from_regex(r"\A[a-z][-a-z0-9]{0,20}[a-z0-9]\Z") | st.text(max_size=70)


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """Mostly near-valid store requests with one or two fields broken; sometimes anything at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)
    data: dict[str, Any] = examples.store_payload(draw(ids))
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from((*FIELDS, "owner.email", "owner.github", "extra")))
        value = draw(json_values | st.sampled_from(("small", "local", "prod", "medusa", "a@b.co", "x.example.com")))
        if field.startswith("owner.") and isinstance(data.get("owner"), dict):
            data["owner"][field.split(".")[1]] = value
        elif draw(st.booleans()):
            data[field] = value
        else:
            data.pop(field, None)
    return data


def test_generated_payloads_never_5xx_and_only_valid_ones_reach_git(tmp_path: Path) -> None:
    config = examples.service_settings(tmp_path, capacity=5000, rate=0.0)
    seeded = set(examples.remote_stores(Path(config.git.remote)))
    accepted: set[str] = set()
    answered: list[int] = []
    with TestClient(app.create_app(config)) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(payload=payloads(), raw=st.none() | st.binary(max_size=200),
               content_type=st.sampled_from(("application/json", "application/json; charset=utf-8", "text/plain",
                                             "application/x-www-form-urlencoded", "")))
        def check(payload: Any, raw: bytes | None, content_type: str) -> None:
            body = raw if raw is not None else json.dumps(payload).encode()
            answer = client.post("/v1/stores", content=body, headers={**HEADERS, "content-type": content_type})
            answered.append(answer.status_code)
            assert answer.status_code < 500, answer.text
            assert answer.status_code in (202, 400, 409, 413, 415, 422), answer.text
            if answer.status_code == 202:
                accepted.add(answer.json()["store_id"])
            else:
                assert answer.json()["error"]

        check()

        def drained() -> bool:
            counts: dict[str, Any] = {}
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("storeops_queue_requests{"):
                    counts[line.split('"')[1]] = float(line.split()[-1])
            return counts.get("requested", 0) == 0

        deadline = time.monotonic() + 60
        while not drained():
            assert time.monotonic() < deadline
            time.sleep(0.1)

    assert accepted, "some generated payloads are valid"
    assert any(code == 422 for code in answered)
    assert set(examples.remote_stores(Path(config.git.remote))) == seeded | accepted
    work_stores = {p.stem for p in (config.git.workdir / "stores").glob("*.yaml")}
    assert work_stores == seeded | accepted
