"""Sign-in through a real OpenID Connect provider on 127.0.0.1, then the API with the session.

The provider (harness/oidc.py) is zitadel/oidc's example provider built from its Go module: real
discovery, authorization code flow with PKCE, RS256 ID tokens, userinfo and a login form, driven
here as a browser would (follow the redirects, post the login form).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from harness import examples, oidc
from tests.integration.intake.test_api import wait_for
from webhook import app

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the OIDC provider")

CALLBACK = "http://testserver/signin/callback"
USERS = [oidc.User("jane", "jane-password", "jane@acme-outdoor.example"),
         oidc.User("olga", "olga-password", "olga@platform.example"),
         oidc.User("una", "una-password", "una@unverified.example", email_verified=False),
         oidc.User("vic", "vic-password", "vic@audit.example"),
         oidc.User("sam", "sam-password", "sam@bookworm.example")]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oidc.Provider]:
    running = oidc.start(state=tmp_path_factory.mktemp("oidc"), users=USERS, redirect_uris=[CALLBACK])
    yield running
    running.stop()


@pytest.fixture
def service(tmp_path: Path, provider: oidc.Provider) -> Iterator[TestClient]:
    settings = examples.service_settings(tmp_path, oidc_issuer=provider.issuer, oidc_client_id=oidc.CLIENT_ID,
                                         oidc_client_secret=oidc.CLIENT_SECRET, operators=("olga@platform.example",))
    with TestClient(app.create_app(settings), follow_redirects=False) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield client


def sign_in(client: TestClient, username: str, password: str, *, next_path: str = "/v1/stores") -> httpx.Response:
    """What a browser does: to the provider, its login form, back to the service's callback."""
    to_provider = client.get(f"/signin?next={next_path}")
    assert to_provider.status_code == 303
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(to_provider.headers["location"])
        while page.status_code in (302, 303):
            page = browser.get(httpx.URL(str(page.url)).join(page.headers["location"]))
        auth_request = re.search(r'name="id" value="([^"]+)"', page.text)
        assert auth_request, page.text
        back = browser.post(httpx.URL(str(page.url)).join("/login/username"),
                            data={"id": auth_request[1], "username": username, "password": password})
        while back.status_code in (302, 303) and not back.headers["location"].startswith(CALLBACK):
            back = browser.get(httpx.URL(str(back.url)).join(back.headers["location"]))
    assert back.headers["location"].startswith(CALLBACK), back.headers
    return client.get(back.headers["location"].removeprefix("http://testserver"))


def test_an_owner_signs_in_and_sees_only_their_stores(service: TestClient) -> None:
    assert service.get("/v1/stores").status_code == 401
    landed = sign_in(service, "jane", "jane-password")
    assert landed.status_code == 303 and landed.headers["location"] == "/v1/stores"
    assert "HttpOnly" in landed.headers["set-cookie"] and "SameSite=lax" in landed.headers["set-cookie"]
    assert [s["id"] for s in service.get("/v1/stores").json()["stores"]] == ["acme-outdoor"]
    assert service.get("/v1/stores/bookworm").status_code == 404
    # Writes with the session: for Jane's own stores, from this site only.
    patched = service.patch("/v1/stores/acme-outdoor", json={"state": "suspended"})
    assert patched.status_code == 202
    assert service.get(f"/v1/requests/{patched.json()['request_id']}").json()["by"].startswith("user:")
    cross = service.patch("/v1/stores/acme-outdoor", json={"state": "active"},
                          headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    service.post("/signout")
    assert service.get("/v1/stores").status_code == 401


def test_an_operator_sees_the_fleet_and_an_unverified_email_sees_nothing(service: TestClient) -> None:
    sign_in(service, "olga", "olga-password")
    assert len(service.get("/v1/stores").json()["stores"]) == 4
    service.cookies.clear()
    sign_in(service, "una", "una-password")
    assert service.get("/v1/stores").json()["stores"] == []
    assert service.post("/v1/stores", json=examples.store_payload("una-shop")).status_code == 403


def test_a_sign_in_cannot_be_replayed_or_forged(service: TestClient) -> None:
    assert service.get("/signin/callback?state=made-up&code=x").status_code == 400
    assert service.get("/signin?next=https://evil.example/").headers["location"]  # goes to the provider ...
    landed = sign_in(service, "jane", "jane-password", next_path="//evil.example/")
    assert landed.headers["location"] == "/"  # ... and comes back only to a path of this service
