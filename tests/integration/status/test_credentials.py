"""A store's admin credentials: shown once, to its owner, from the Secret in the store's namespace on the
real API server; the link's state is in the service's database and holds across a restart."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from starlette.testclient import TestClient

from harness import applications, examples, oidc, versions
from harness import stack as harness_stack
from tests.integration.status import support
from tests.integration.test_signin import provider, sign_in
from webhook import app, credentials, csrf
from webhook.errors import Conflict, NotFound, NotReady
from webhook.settings import StatusSettings
from webhook.state import Location

JANE, SAM = support.JANE, support.SAM  # the owners of acme-outdoor and of bookworm in the example data
WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}

__all__ = ["provider"]


def test_the_owner_sees_the_credentials_once_and_nobody_else_at_all(
        tmp_path: Path, apiserver: harness_stack.Stack, caplog: pytest.LogCaptureFixture) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    config, status = support.owners_service(tmp_path, apiserver)
    caplog.set_level(logging.DEBUG)
    with TestClient(app.create_app(config, status=status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        assert http.get("/v1/stores/acme-outdoor", headers=JANE).json()["credentials"]["state"] == "not revealed"
        assert "credentials" not in http.get("/v1/stores/acme-outdoor", headers=WRITE).json()
        # Only the owner may ask: an operator's token is refused, another owner does not see the store.
        assert http.post("/v1/stores/acme-outdoor/credentials/link", headers=WRITE).status_code == 403
        assert http.post("/v1/stores/acme-outdoor/credentials/link", headers=SAM).status_code == 404
        made = http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE)
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        link = made.json()["url"].removeprefix("http://testserver")
        assert http.get(link, headers=SAM).status_code == 403
        assert http.get(link, headers=WRITE).status_code == 403
        assert http.get(link).status_code == 401
        # Before the chart's Job made the Secret: 503, and the link is still good.
        early = http.get(link, headers=JANE)
        assert early.status_code == 503 and "not made yet" in early.json()["error"]
        support.credentials_secret(apiserver, "acme-outdoor", password)
        shown = http.get(link, headers=JANE)
        assert shown.status_code == 200, shown.text
        assert shown.json()["password"] == password and shown.json()["login"] == "admin"
        assert "never-shown" not in shown.text
        again = http.get(link, headers=JANE)
        assert again.status_code == 410 and "used already" in again.json()["error"]
        assert http.get("/v1/stores/acme-outdoor", headers=JANE).json()["credentials"]["state"] == "revealed"
        assert http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE).status_code == 409
    # A restart does not revive the used link.
    with TestClient(app.create_app(config, status=status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        assert http.get(link, headers=JANE).status_code == 410
    # Every record at DEBUG, the Kubernetes client's included; the test's own HTTP client (httpx) logs the
    # URLs it asks for, the service does not.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "credentials of acme-outdoor shown to token:jane" in logged
    assert password not in logged
    assert link.rsplit("/", 1)[1] not in "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")


def test_the_owner_changes_the_password_through_the_api_and_the_next_link_shows_the_new_one(
        tmp_path: Path, apiserver: harness_stack.Stack, caplog: pytest.LogCaptureFixture) -> None:
    old, new = f"pw-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    config, status = support.owners_service(tmp_path, apiserver)
    bare = Path(str(config.git.remote))
    caplog.set_level(logging.DEBUG)
    support.credentials_secret(apiserver, "acme-outdoor", old)
    with TestClient(app.create_app(config, status=status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)

        def reveal() -> Any:
            made = http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE)
            assert made.status_code == 201, made.text
            return http.get(made.json()["url"].removeprefix("http://testserver"), headers=JANE)

        assert reveal().json()["password"] == old
        assert http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE).status_code == 409
        # Another owner cannot change it; the owner can, and it is a change of the store in Git.
        assert http.post("/v1/stores/acme-outdoor/credentials/rotate", headers=SAM).status_code == 404
        asked = http.post("/v1/stores/acme-outdoor/credentials/rotate", headers=JANE)
        assert asked.status_code == 202, asked.text
        support.wait_until("the change is committed", lambda: examples.remote_stores(bare)["acme-outdoor"].get(
            "adminPasswordRotation") == 1)
        values = yaml.safe_load(examples.git(bare, "show", "main:rendered/local/values/acme-outdoor.yaml"))
        assert values["credentials"]["rotation"] == 1
        view = http.get("/v1/stores/acme-outdoor", headers=JANE).json()
        assert view["credentials"]["state"] == "not revealed"
        # Until the store's Job has set it (the Secret's count), nothing is shown and the link stays good.
        made = http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE)
        link = made.json()["url"].removeprefix("http://testserver")
        early = http.get(link, headers=JANE)
        assert early.status_code == 503 and "being changed" in early.json()["error"]
        support.rotate_credentials_secret(apiserver, "acme-outdoor", new, 1)
        shown = http.get(link, headers=JANE)
        assert shown.status_code == 200 and shown.json()["password"] == new
        assert http.get(link, headers=JANE).status_code == 410
        assert http.post("/v1/stores/acme-outdoor/credentials/link", headers=JANE).status_code == 409
        # A second change counts on from what Git has.
        assert http.post("/v1/stores/acme-outdoor/credentials/rotate", headers=JANE).status_code == 202
        support.wait_until("the second change is committed", lambda: examples.remote_stores(bare)["acme-outdoor"].get(
            "adminPasswordRotation") == 2)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "admin password change of acme-outdoor asked for by token:jane" in logged
    assert old not in logged and new not in logged


def test_a_link_expires_and_an_unused_one_is_replaced(state_at: Callable[[str], Location]) -> None:
    now = [1000.0]
    links = credentials.Links(state_at("service.sqlite3"), ttl=60, clock=lambda: now[0])
    first = links.issue("shop", "Owner@Example.com")
    second = links.issue("shop", "owner@example.com")  # asking again replaces the unused link
    with pytest.raises(NotFound):
        links.redeem("shop", first.token, owner="owner@example.com", read=lambda: ("pw", 0))
    now[0] += 61
    with pytest.raises(credentials.Gone, match="expired"):
        links.redeem("shop", second.token, owner="owner@example.com", read=lambda: ("pw", 0))
    assert links.state("shop") == "not revealed"
    third = links.issue("shop", "owner@example.com")
    assert links.state("shop") == "link issued"
    assert links.redeem("shop", third.token, owner="OWNER@example.com", read=lambda: ("pw", 0)) == "pw"
    links.close()


def test_after_a_password_change_the_new_one_is_shown_once_and_only_once_the_secret_has_it(tmp_path: Path) -> None:
    links = credentials.Links(tmp_path / "service.sqlite3", ttl=60)
    first = links.issue("shop", "owner@example.com")
    assert links.redeem("shop", first.token, owner="owner@example.com", read=lambda: ("old", 0)) == "old"
    with pytest.raises(Conflict):
        links.issue("shop", "owner@example.com")
    # The entry asks for rotation 1: a link can be made again...
    assert links.state("shop", 1) == "not revealed"
    second = links.issue("shop", "owner@example.com", 1)
    # ...but shows nothing while the Secret is behind (the shop may not have the password yet), and stays good.
    with pytest.raises(NotReady, match="being changed"):
        links.redeem("shop", second.token, owner="owner@example.com", rotation=1, read=lambda: ("old", 0))
    assert links.state("shop", 1) == "link issued"
    assert links.redeem("shop", second.token, owner="owner@example.com", rotation=1, read=lambda: ("new", 1)) == "new"
    assert links.state("shop", 1) == "revealed"
    with pytest.raises(Conflict):
        links.issue("shop", "owner@example.com", 1)
    links.close()
    # A database from before rotations were counted gets the column, its used links counting as rotation 0.
    old = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE credential_links (link TEXT PRIMARY KEY, store_id TEXT NOT NULL, owner TEXT NOT NULL, "
               "created REAL NOT NULL, expires REAL NOT NULL, used REAL)")
    db.execute("INSERT INTO credential_links VALUES ('h', 'shop', 'o', 1, 2, 1.5)")
    db.commit()
    db.close()
    migrated = credentials.Links(old)
    assert (migrated.state("shop", 0), migrated.state("shop", 1)) == ("revealed", "not revealed")
    migrated.close()


def test_the_console_shows_the_owner_the_credentials_once(
        tmp_path: Path, apiserver: harness_stack.Stack, provider: oidc.Provider) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    support.credentials_secret(apiserver, "bookworm", password)
    config = examples.service_settings(tmp_path, oidc_issuer=provider.issuer, oidc_client_id=oidc.CLIENT_ID,
                                       oidc_client_secret=oidc.CLIENT_SECRET, operators=("olga@platform.example",))
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=support.new_namespace(apiserver),
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1)
    with TestClient(app.create_app(config, status=status), follow_redirects=False) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        sign_in(http, "olga", "olga-password", next_path="/console")
        assert "Show the admin login" not in http.get("/console/stores/bookworm").text  # operators: no button
        http.post("/signout", headers={"Origin": "http://testserver"})
        http.cookies.clear()
        sign_in(http, "sam", "sam-password", next_path="/console")
        page = http.get("/console/stores/bookworm")
        assert "Show the admin login and password (once)" in page.text
        made = http.post("/console/stores/bookworm", data={"action": "credentials",
                                                           "csrf_token": http.cookies[csrf.COOKIE]})
        assert made.status_code == 303 and made.headers["location"].startswith("/console/stores/bookworm/credentials/")
        shown = http.get(made.headers["location"])
        assert shown.status_code == 200 and password in shown.text and shown.headers["cache-control"] == "no-store"
        again = http.get(made.headers["location"])
        assert again.status_code == 410 and password not in again.text and "used already" in again.text
        assert "They were shown to you once" in http.get("/console/stores/bookworm").text
        # Lost them: a new password, asked for from the same page (a change of the store in Git).
        rotated = http.post("/console/stores/bookworm", data={"action": "rotate-password",
                                                              "csrf_token": http.cookies[csrf.COOKIE]})
        assert rotated.status_code == 303, rotated.text
        support.wait_until("the change is committed", lambda: examples.remote_stores(
            Path(str(config.git.remote)))["bookworm"].get("adminPasswordRotation") == 1)
        assert "Show the admin login and password (once)" in http.get("/console/stores/bookworm").text


def test_the_charts_role_lets_storeops_get_that_secret_and_nothing_else(apiserver: harness_stack.Stack) -> None:
    """The chart's Role and RoleBinding, applied as rendered, are all storeops' ServiceAccount needs."""
    store_id = f"rbac-{uuid.uuid4().hex[:8]}"
    namespace = f"store-{store_id}"
    support.credentials_secret(apiserver, store_id, "the-password")
    rendered = subprocess.run(
        [str(versions.binaries().helm), "template", store_id, str(examples.ROOT / "templates" / "medusa"),
         "--namespace", namespace], capture_output=True, text=True, check=True).stdout
    rbac = [d for d in yaml.safe_load_all(rendered)
            if d and d["metadata"]["name"] == "storeops-credentials-reader"]
    assert sorted(d["kind"] for d in rbac) == ["Role", "RoleBinding"]
    apiserver.kubectl.apply(*rbac)
    core = client.CoreV1Api(support.api_client(apiserver.kubeconfig))
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="other")))
    api = support.api_client(apiserver.kubeconfig)
    api.set_default_header("Impersonate-User", "system:serviceaccount:storeops:storeops")
    try:
        support.wait_until("the Role applies", lambda: _can_read(api, store_id))
        assert credentials.read_password(api, store_id) == ("the-password", 0)
        as_storeops = client.CoreV1Api(api)
        for forbidden in (lambda: as_storeops.read_namespaced_secret("other", namespace),
                          lambda: as_storeops.list_namespaced_secret(namespace),
                          lambda: as_storeops.read_namespaced_config_map("kube-root-ca.crt", namespace)):
            with pytest.raises(client.ApiException) as refused:
                forbidden()
            assert refused.value.status == 403
    finally:
        support.close(api)
        support.close(core.api_client)


def _can_read(api: client.ApiClient, store_id: str) -> bool:
    try:
        credentials.read_password(api, store_id)
    except NotReady:
        return False
    return True


def test_the_ready_report_tells_the_owner_where_the_admin_is_and_how_to_get_the_credentials(
        tmp_path: Path, apiserver: harness_stack.Stack) -> None:
    """On the callback (a private channel): the admin URL, the credentials link to POST as the owner,
    and a Medusa store's publishable key from its Secret; never the password. Other reports carry
    none of it."""
    password, key = f"pw-{uuid.uuid4().hex}", f"pk_{uuid.uuid4().hex}"
    api = support.api_client(apiserver.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    try:
        namespace = support.new_namespace(apiserver)
        with contextlib.suppress(client.ApiException):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="store-bookworm")))
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_secret(credentials.SECRET_NAME, "store-bookworm")
        core.create_namespaced_secret("store-bookworm", client.V1Secret(
            metadata=client.V1ObjectMeta(name=credentials.SECRET_NAME),
            data={"admin-password": base64.b64encode(password.encode()).decode(),
                  "publishable-key": base64.b64encode(key.encode()).decode()}))
        receiver = support.Receiver()
        config = replace(examples.service_settings(tmp_path), public_url="https://storeops.example")
        status = StatusSettings(
            kubeconfig=str(apiserver.kubeconfig), namespace=namespace, ledger=tmp_path / "status.sqlite3",
            workdir=config.git.workdir, backoff_min=0.1, retry_min=0.1, retry_max=0.5, tick=0.1,
            callback_url=receiver.url, callback_secret=support.SECRET, callback_allow="127.0.0.0/8")
        try:
            with TestClient(app.create_app(config, status=status)) as http:
                support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
                for store_id in ("bookworm", "acme-outdoor"):
                    body = applications.application(store_id, namespace)
                    body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded")
                    custom.create_namespaced_custom_object(
                        applications.GROUP, applications.VERSION, namespace, applications.PLURAL, body)
                support.wait_until("both ready reports", lambda: all(
                    "ready" in receiver.statuses(s) for s in ("bookworm", "acme-outdoor")), timeout=30)
        finally:
            receiver.close()
    finally:
        support.close(api)
    reports = {r.payload["store_id"]: r.payload for r in receiver.all() if r.payload["status"] == "ready"}
    medusa, woo = reports["bookworm"], reports["acme-outdoor"]
    assert medusa["url"] == "http://bookworm.stores.localtest.me"
    assert medusa["admin_url"] == "http://bookworm.stores.localtest.me/app"
    assert medusa["credentials"]["link"] == "https://storeops.example/v1/stores/bookworm/credentials/link"
    assert "owner" in medusa["credentials"]["how"]
    assert medusa["publishable_key"] == key
    assert woo["admin_url"] == "http://acme-outdoor.stores.localtest.me/wp-admin/"
    assert "publishable_key" not in woo
    assert all(password not in json.dumps(r.payload) for r in receiver.all())
    # Reports other than ready carry none of it.
    assert all("credentials" not in r.payload for r in receiver.all() if r.payload["status"] != "ready")
