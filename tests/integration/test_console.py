"""The console, signed in through a real OpenID Connect provider: pages, actions, who sees what."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from harness import examples, oidc
from tests.integration.intake.test_api import wait_for
from tests.integration.test_signin import provider, sign_in
from webhook import app, csrf

__all__ = ["provider"]


@pytest.fixture
def console(tmp_path: Path, provider: oidc.Provider) -> Iterator[TestClient]:
    settings = examples.service_settings(tmp_path, oidc_issuer=provider.issuer, oidc_client_id=oidc.CLIENT_ID,
                                         oidc_client_secret=oidc.CLIENT_SECRET, operators=("olga@platform.example",),
                                         viewers=("vic@audit.example",))
    with TestClient(app.create_app(settings), follow_redirects=False) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        client.app.state.bare = Path(settings.git.remote)  # type: ignore[attr-defined]
        yield client


def token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found[1]


def stores(client: TestClient) -> dict[str, dict[str, object]]:
    """The stores on the remote's main branch (read again if a push moved it between two git calls)."""
    bare: Path = client.app.state.bare  # type: ignore[attr-defined]
    try:
        return examples.remote_stores(bare)
    except subprocess.CalledProcessError:
        return examples.remote_stores(bare)


def landed(client: TestClient, store_id: str) -> dict[str, object]:
    return wait_for(lambda: stores(client).get(store_id))  # type: ignore[no-any-return]


def test_an_owner_requests_changes_and_deletes_a_store_from_the_console(console: TestClient) -> None:
    assert console.get("/console").status_code == 303  # to sign in
    sign_in(console, "jane", "jane-password", next_path="/console")
    mine = console.get("/console")
    assert mine.status_code == 200 and "acme-outdoor" in mine.text and "bookworm" not in mine.text
    assert "script-src 'sha256-" in mine.headers["content-security-policy"]
    # Request a store: the owner is who signed in.
    form = console.get("/console/request")
    made = console.post("/console/request", data={"id": "jane-new", "name": "Jane New", "engine": "medusa",
                                                  "plan": "small", "cluster": "local", "csrf_token": token(form.text)})
    assert made.status_code == 303 and made.headers["location"] == "/console/stores/jane-new"
    assert landed(console, "jane-new")["owner"] == {"name": "jane", "email": "jane@acme-outdoor.example"}
    # Suspend it, then resume it: each a normal request on the store's timeline.
    page = console.get("/console/stores/jane-new")
    assert "Timeline" in page.text and "create requested" in page.text
    assert console.post("/console/stores/jane-new", data={"action": "suspend", "csrf_token": token(page.text)}
                        ).status_code == 303
    wait_for(lambda: landed(console, "jane-new").get("state") == "suspended")
    page = console.get("/console/stores/jane-new")
    assert "Resume the store" in page.text
    # Delete asks for the id typed out; without it nothing happens.
    refused = console.post("/console/stores/jane-new", data={"action": "delete", "confirm": "yes",
                                                            "csrf_token": token(page.text)})
    assert refused.status_code == 422 and "Type jane-new to delete the store." in refused.text
    gone = console.post("/console/stores/jane-new", data={"action": "delete", "confirm": "jane-new",
                                                         "csrf_token": token(page.text)})
    assert gone.status_code == 303
    wait_for(lambda: "jane-new" not in stores(console))
    # Another owner's store does not exist for Jane, in the console as in the API; no fleet page either.
    assert console.get("/console/stores/bookworm").status_code == 404
    assert console.get("/console/fleet").status_code == 403
    # A post without the page's token does nothing.
    assert console.post("/console/stores/acme-outdoor", data={"action": "suspend"}).status_code == 403


def test_an_operator_sees_the_fleet(console: TestClient) -> None:
    sign_in(console, "olga", "olga-password", next_path="/console/fleet")
    fleet = console.get("/console/fleet")
    assert fleet.status_code == 200
    assert re.search(r"<th scope=\"row\">local</th><td>2 / 20</td>", fleet.text), fleet.text
    assert re.search(r"<th scope=\"row\">prod</th><td>2 / 500</td>", fleet.text)
    everything = console.get("/console")
    assert all(f"/console/stores/{s}" in everything.text for s in ("acme-outdoor", "bookworm", "coffee-lab"))
    found = console.get("/console?q=book")
    assert "/console/stores/bookworm" in found.text and "/console/stores/coffee-lab" not in found.text


def test_a_viewer_reads_every_store_and_the_fleet_and_changes_nothing(console: TestClient) -> None:
    sign_in(console, "vic", "vic-password", next_path="/console")
    assert "(read-only)" in console.get("/console").text
    assert console.get("/console/fleet").status_code == 200
    page = console.get("/console/stores/bookworm")
    assert page.status_code == 200 and "Timeline" in page.text and "Delete the store" not in page.text
    valid = console.cookies[csrf.COOKIE]  # the page's CSRF token: only the role is refused below
    refused = console.post("/console/stores/bookworm", data={"action": "suspend", "csrf_token": valid})
    assert refused.status_code == 403 and "read-only" in refused.text
    request_page = console.get("/console/request")
    assert request_page.status_code == 403 and "signed in read-only" in request_page.text
    assert console.post("/console/request", data={"id": "vics-shop", "name": "Vic", "engine": "medusa",
                                                  "plan": "small", "cluster": "local",
                                                  "csrf_token": valid}).status_code == 403
    # The API answers the session the same way: every store to read, no change.
    listed = console.get("/v1/stores").json()["stores"]
    assert {"acme-outdoor", "bookworm", "coffee-lab"} <= {s["id"] for s in listed}
    assert console.patch("/v1/stores/bookworm", json={"state": "suspended"},
                         headers={"Origin": "http://testserver"}).status_code == 403
    assert stores(console)["bookworm"].get("state") != "suspended"


def test_the_per_owner_limit_refuses_in_the_console_with_the_words_of_the_api(tmp_path: Path,
                                                                               provider: oidc.Provider) -> None:
    settings = examples.service_settings(tmp_path, per_owner=1, oidc_issuer=provider.issuer,
                                         oidc_client_id=oidc.CLIENT_ID, oidc_client_secret=oidc.CLIENT_SECRET)
    with TestClient(app.create_app(settings), follow_redirects=False) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        sign_in(client, "jane", "jane-password", next_path="/console")
        form = client.get("/console/request")
        refused = client.post("/console/request", data={"id": "jane-second", "name": "Jane Second",
                                                        "engine": "medusa", "plan": "small", "cluster": "local",
                                                        "csrf_token": token(form.text)})
        assert refused.status_code == 422
        # The same sentence as the API's problem and the pull request check's (tests/integration/intake, github).
        assert ("jane@acme-outdoor.example would have 2 stores on cluster &#39;local&#39;; "
                "each owner may have 1 there") in refused.text, refused.text
        assert 'value="jane-second"' in refused.text  # what was typed is kept
        assert "jane-second" not in examples.remote_stores(Path(settings.git.remote))
