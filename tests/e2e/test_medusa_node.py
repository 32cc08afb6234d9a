"""A Medusa store that takes an order on the real node, requested through storeops' API.

``storeops serve`` (with the status reader) runs against the full stack with the real node; the
example stores of the local cluster are suspended in the Git remote, so the node runs this one alone. A person
requests a Medusa store through the API; storeops commits it, renders it, Argo CD syncs it, and the
node runs PostgreSQL, Redis and the Medusa server from the local images (``storeops.local/...``,
built here: harness/images/debian.py and harness/images/medusa.py), the bootstrap Job sets the store
up and puts the publishable key into the credentials Secret. When storeops reports it ``ready``, a
customer orders through Traefik on 127.0.0.1 with the store's Host header, using the Store API with
that key (product, cart, address, shipping option, the system payment provider, completion); then
the owner takes the one-time credentials link storeops gives only to them, logs in to the Admin API
and finds the order; then changes the admin password through storeops and signs in with the new
one; suspends the store (nothing runs, the volumes stay) and resumes it, and the order is still there.
Further tests: a backup, the delete and a restore into a new id; and a rollout of three stores
pinned to a release of the chart, in waves of one, halted by a failure injected in the second wave,
then the failed store rolled back to its pre-upgrade backup.
The times from the request to ``ready`` and to the first order are printed (``-s``). Pods' traffic
stays on the pod network; nothing leaves the machine.
"""

from __future__ import annotations

import base64
import collections.abc
import hashlib
import json
import pathlib
import secrets
import shutil
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from generator import constants, publishing, releases, releasing
from harness import demo, stack
from harness.images import debian, medusa
from tests import medusa_checkout
from tests.e2e import test_full_loop as full_loop
from tests.e2e.test_rollout_argocd import _refuse_release, halted_rollout
from tests.e2e.test_store_charts import _kubectl_json
from tests.e2e.test_store_node import _describe
from tests.github import payloads
from tests.github.fake import FakeGitHub
from tests.medusa_checkout import ok as _ok

pytestmark = [pytest.mark.e2e, pytest.mark.node]

OWNER = {"name": "Olga Owner", "email": "olga@medusa-shop.example"}
STORE_ID = "medusa-shop"
#: The images the Medusa chart runs on the local profile, besides the store's own.
DEBIAN_IMAGES = ("postgres", "redis", "python")
# Importing, first starts of a Node.js server on two shared cores, the bootstrap: many minutes.
READY_TIMEOUT = 1800.0
KEY_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def cluster(argocd_node_stack: stack.Stack) -> stack.Stack:
    """The stack with the Medusa store's images imported into the node's containerd."""
    assert argocd_node_stack.node is not None
    began = time.monotonic()
    built = medusa.build()
    size = built.image.archive.stat().st_size / 1e6
    print(f"medusa image {built.image.ref}: {'cached' if built.cached else 'built'} in {built.seconds:.0f}s "
          f"(server build {built.server_seconds:.0f}s, mmdebstrap {built.rootfs_seconds:.0f}s), {size:.0f} MB",
          flush=True)  # fmt: skip
    archives = [debian.build(name).image.archive for name in DEBIAN_IMAGES] + [built.image.archive]
    for archive in archives:
        argocd_node_stack.node.ctr("images", "import", str(archive), timeout=900)
    print(f"images built and imported in {time.monotonic() - began:.0f}s", flush=True)
    return argocd_node_stack


def _seed_source(target: pathlib.Path) -> pathlib.Path:
    """This repository's data folders with the example stores of the local cluster suspended: the
    root Application still has stores to sync, and the node runs nothing but ours."""
    for folder in publishing.SEED_FOLDERS:
        source = demo.ROOT / folder
        if source.is_dir():
            shutil.copytree(source, target / folder, symlinks=True)
    for entry in (target / constants.STORES_DIR).glob("*.yaml"):
        text = entry.read_text()
        if f"cluster: {demo.CLUSTER}\n" in text:
            entry.write_text(text.replace("state: active\n", "state: suspended\n"))
    return target


#: The rollout test's stores, named to sort before the module's other Medusa stores (waves go in id order).
WAVE_IDS = ("aa-wave-0", "aa-wave-1", "aa-wave-2")
#: The two releases of the Medusa chart the remote holds (the rollout test's): filled by _two_releases.
RELEASES: dict[str, str] = {}


def _two_releases(source: pathlib.Path) -> None:
    """Two releases of the Medusa chart in the seeded data: the working chart's, and one after it whose only
    change is a larger default memory request in the store's LimitRange (an object Argo CD applies first, which
    the rollout test's injected failure refuses). The working chart stays as it was."""
    chart_dir = source / constants.TEMPLATES_DIR / "medusa"
    kept = {name: (chart_dir / name).read_text() for name in ("Chart.yaml", "values.yaml")}
    first = releasing.release(source, "medusa")
    second = f"{first}-next"
    chart, values = chart_dir / "Chart.yaml", chart_dir / "values.yaml"
    chart.write_text(kept["Chart.yaml"].replace(f"version: {first}\n", f"version: {second}\n", 1))
    assert "    memory: 64Mi\n" in kept["values.yaml"]
    values.write_text(kept["values.yaml"].replace("    memory: 64Mi\n", "    memory: 96Mi\n", 1))
    assert releasing.release(source, "medusa") == second
    for name, text in kept.items():
        (chart_dir / name).write_text(text)
    RELEASES.update(first=first, second=second)


@pytest.fixture(scope="module")
def loop(cluster: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[demo.Loop]:
    """``storeops serve`` with the status reader, a remote whose other local stores are suspended, an owner's token;
    the remote holds two releases of the Medusa chart besides the working one."""
    yield from serve(cluster, tmp_path_factory.mktemp("medusa-loop"), edit=_two_releases, github=True)


def serve(cluster: stack.Stack, work: pathlib.Path,
          edit: collections.abc.Callable[[pathlib.Path], None] | None = None,
          *, github: bool = False) -> collections.abc.Iterator[demo.Loop]:
    """The ``loop`` fixture's service, with ``edit`` applied to the seeded data folders first; with ``github``,
    reviews go through a local server that speaks GitHub's API on the remote (``loop.fake``), as in
    tests/e2e/test_full_loop.py."""
    source = _seed_source(work / "source")
    if edit is not None:
        edit(source)
    loop = demo.Loop(stack=cluster, work=work)
    publishing.seed_remote(loop.remote, source, "main")
    fake = None
    if github:
        fake = FakeGitHub(bare=loop.remote, repository=full_loop.REPOSITORY, token=full_loop.GITHUB_TOKEN)
        fake.start()
        loop.extra_env.update(full_loop.github_env(fake))
        loop.fake = fake  # type: ignore[attr-defined]
    owner_token = secrets.token_urlsafe(24)
    tokens = work / "tokens.yaml"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "e2e", "scope": "write", "sha256": hashlib.sha256(loop.token.encode()).hexdigest()},
        {"name": "owner", "scope": "owner", "owner": OWNER["email"],
         "sha256": hashlib.sha256(owner_token.encode()).hexdigest()},
    ]}))  # fmt: skip
    loop.extra_env.update({"STOREOPS_API_TOKENS": "", "STOREOPS_TOKENS_FILE": str(tokens)})
    loop.owner_token = owner_token  # type: ignore[attr-defined]
    try:
        loop.prepare()
        loop.start_service()
        yield loop
    finally:
        loop.stop_service()
        if fake is not None:
            fake.stop()
        log = work / "service.log"
        print(log.read_text(errors="replace")[-3000:] if log.exists() else "", flush=True)


def _owner_call(loop: demo.Loop, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """A request to storeops as the store's owner (the owner-scoped token)."""
    token = loop.owner_token  # type: ignore[attr-defined]
    response = httpx.request(method, f"http://127.0.0.1:{loop.port}{path}", timeout=30, json=body,
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    return response.status_code, body


def _secret(loop: demo.Loop, namespace: str) -> dict[str, str]:
    found = loop.stack.kubectl.get("secret", "store-credentials", namespace=namespace) or {}
    data = found.get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _wait(what: str, check: Any, *, timeout: float, describe: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}:\n{describe()}")


def _place_order(store: httpx.Client) -> tuple[str, str]:
    """A customer's checkout through the Store API in the store's US region; returns (order id, customer email)."""
    regions = _ok(store.get("/store/regions"))["regions"]
    region = next(r for r in regions if any(c["iso_2"] == "us" for c in r.get("countries", [])))
    email = "buyer@medusa-shop.example"
    return medusa_checkout.place_order(store, region["id"], email), email


def test_a_medusa_store_requested_through_the_api_takes_an_order_the_owner_finds(loop: demo.Loop) -> None:
    cluster = loop.stack
    assert cluster.node is not None and cluster.node.ingress_port
    namespace = f"store-{STORE_ID}"
    describe = _describe(cluster, namespace)

    asked = time.monotonic()
    answer = loop.request_store({"id": STORE_ID, "name": "Medusa Shop", "engine": "medusa", "plan": "small",
                                 "cluster": demo.CLUSTER, "owner": OWNER})  # fmt: skip
    view = loop.wait_request(answer["request_id"])
    assert view["status"] == "committed", view
    try:
        events = loop.follow(STORE_ID, until=("ready", "failed", "degraded"), since=asked, timeout=READY_TIMEOUT)
    except Exception:
        print(describe(), flush=True)
        raise
    to_ready = time.monotonic() - asked
    assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
    host = urllib.parse.urlsplit(str(events[-1]["url"])).hostname
    assert host, events[-1]
    print(f"medusa: request -> ready {to_ready:.0f}s ({host})", flush=True)
    pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace)["items"]
    assert {p["spec"].get("nodeName") for p in pods if p["status"].get("phase") == "Running"} == {"storeops-node-0"}

    # The bootstrap Job put the publishable key next to the admin password.
    secret = _wait("the publishable key in the credentials Secret",
                   lambda: (found := _secret(loop, namespace)).get("publishable-key") and found,
                   timeout=KEY_TIMEOUT, describe=describe)  # fmt: skip
    key = secret["publishable-key"]
    assert key.startswith("pk_")
    job = _kubectl_json(cluster.kubectl, "get", "job", "store-bootstrap", "-n", namespace)
    assert job["status"].get("succeeded") == 1

    base = f"http://127.0.0.1:{cluster.node.ingress_port}"
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as anonymous:
        # Through Traefik to Medusa's own health endpoint; the Store API wants the key.
        health = anonymous.get("/health")
        assert (health.status_code, health.text.strip()) == (200, "OK"), health.text
        assert anonymous.get("/store/products").status_code == 400
    with httpx.Client(base_url=base, headers={"Host": host, "x-publishable-api-key": key}, timeout=120) as store:
        order_id, email = _place_order(store)
    to_order = time.monotonic() - asked
    print(f"medusa: request -> first order {to_order:.0f}s (ready {to_ready:.0f}s)", flush=True)

    # The owner's first login: a one-time link from storeops, opened with the owner's own token.
    status, link = _owner_call(loop, "POST", f"/v1/stores/{STORE_ID}/credentials/link")
    assert status == 201, link
    path = urllib.parse.urlsplit(link["url"]).path
    status, shown = _owner_call(loop, "GET", path)
    assert status == 200, shown
    assert shown["login"] == OWNER["email"] and shown["password"] == secret["admin-password"]
    assert _owner_call(loop, "GET", path)[0] == 410  # used once
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as admin:
        token = _ok(admin.post("/auth/user/emailpass", json={"email": shown["login"], "password": shown["password"]}))
        orders = _ok(admin.get("/admin/orders", params={"fields": "id,email,total"},
                               headers={"Authorization": f"Bearer {token['token']}"}))["orders"]  # fmt: skip
    found = [o for o in orders if o["id"] == order_id]
    assert found and found[0]["email"] == email and found[0]["total"] == 25, orders

    # The owner changes the password through storeops: a change of the store in Git; after Argo CD's sync
    # the store's rotation Job has set it in Medusa and in the Secret together. The next link shows the
    # new one, which signs in; the old one no longer does, and the store keeps its order.
    changed = time.monotonic()
    status, asked = _owner_call(loop, "POST", f"/v1/stores/{STORE_ID}/credentials/rotate")
    assert status == 202, asked
    assert loop.wait_request(asked["request_id"])["status"] == "committed"
    _wait("the rotation Job to finish", lambda: (_kubectl_json(cluster.kubectl, "get", "secret", "store-credentials",
          "-n", namespace)["metadata"].get("annotations") or {}).get("storeops.io/admin-password-rotation") == "1",
          timeout=READY_TIMEOUT, describe=describe)  # fmt: skip
    status, link = _owner_call(loop, "POST", f"/v1/stores/{STORE_ID}/credentials/link")
    assert status == 201, link
    status, renewed = _owner_call(loop, "GET", urllib.parse.urlsplit(link["url"]).path)
    assert status == 200, renewed
    print(f"medusa: password change asked -> new password shown {time.monotonic() - changed:.0f}s", flush=True)
    secret = _secret(loop, namespace)
    assert renewed["password"] != shown["password"] and renewed["password"] == secret["admin-password"]
    assert "admin-password-next" not in secret
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as admin:
        old = admin.post("/auth/user/emailpass", json={"email": shown["login"], "password": shown["password"]})
        assert old.status_code == 401, old.text
        token = _ok(admin.post("/auth/user/emailpass", json={"email": shown["login"], "password": renewed["password"]}))
        orders = _ok(admin.get("/admin/orders", params={"fields": "id"},
                               headers={"Authorization": f"Bearer {token['token']}"}))["orders"]  # fmt: skip
    assert order_id in {o["id"] for o in orders}
    # Every later sync runs the hook again, which finds the count reached and succeeds without a change.
    _wait("the rotation Job to have succeeded", lambda: (_kubectl_json(
        cluster.kubectl, "get", "job", "credentials-rotation", "-n", namespace)["status"].get("succeeded") == 1),
        timeout=300, describe=describe)  # fmt: skip
    assert _secret(loop, namespace)["admin-password"] == renewed["password"]

    # Suspended, the store runs nothing and keeps its data; resumed, it answers again with the order.
    def revision() -> str:
        status, view = _owner_call(loop, "GET", f"/v1/stores/{STORE_ID}")
        assert status == 200, view
        return str((view.get("deployment") or {}).get("revision") or "")

    def change_until_ready(state: str) -> float:
        """PATCH the store's state as its owner; the seconds until it is ready at the change."""
        before, began = revision(), time.monotonic()
        status, asked = _owner_call(loop, "PATCH", f"/v1/stores/{STORE_ID}", {"state": state})
        assert status == 202, asked
        assert loop.wait_request(asked["request_id"])["status"] == "committed"
        events = loop.follow(STORE_ID, until=("ready", "failed", "degraded"), since=began, timeout=READY_TIMEOUT,
                             after_revision=before)  # fmt: skip
        assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
        return time.monotonic() - began

    change_until_ready("suspended")

    def stopped() -> bool:
        pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace)["items"]
        return not [p for p in pods if p["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                    in ("medusa", "postgres", "redis")]

    _wait("the suspended store's pods to stop", stopped, timeout=READY_TIMEOUT, describe=describe)
    claims = _kubectl_json(cluster.kubectl, "get", "pvc", "-n", namespace)["items"]
    assert claims and all(c["status"].get("phase") == "Bound" for c in claims)
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=30) as anonymous:
        assert anonymous.get("/health").status_code in (404, 502, 503)
    print(f"medusa: resume -> ready {change_until_ready('active'):.0f}s", flush=True)
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as admin:
        health = _wait("the resumed store to answer", lambda: admin.get("/health").status_code == 200,
                       timeout=READY_TIMEOUT, describe=describe)  # fmt: skip
        assert health
        token = _ok(admin.post("/auth/user/emailpass", json={"email": shown["login"], "password": renewed["password"]}))
        orders = _ok(admin.get("/admin/orders", params={"fields": "id"},
                               headers={"Authorization": f"Bearer {token['token']}"}))["orders"]  # fmt: skip
    assert order_id in {o["id"] for o in orders}
    # The owner's passwords never reached storeops' log.
    logged = (loop.work / "service.log").read_text(errors="replace")
    assert shown["password"] not in logged and renewed["password"] not in logged


def _owner_admin(loop: demo.Loop, store_id: str, base: str, host: str, *, timeout: float,
                 describe: Any) -> tuple[httpx.Client, str]:
    """The owner's admin session on the store: its credentials link (503 until the shop has the password the
    link would show), the login, a bearer token."""
    def link() -> dict[str, Any] | None:
        status, made = _owner_call(loop, "POST", f"/v1/stores/{store_id}/credentials/link")
        if status != 201:
            return None
        status, shown = _owner_call(loop, "GET", urllib.parse.urlsplit(made["url"]).path)
        return shown if status == 200 else None

    shown = _wait(f"{store_id}'s credentials", link, timeout=timeout, describe=describe)
    admin = httpx.Client(base_url=base, headers={"Host": host}, timeout=120)
    token = _ok(admin.post("/auth/user/emailpass", json={"email": shown["login"], "password": shown["password"]}))
    admin.headers["Authorization"] = f"Bearer {token['token']}"
    return admin, str(shown["password"])


def test_a_backup_of_a_deleted_store_comes_back_as_a_new_store_with_its_order(loop: demo.Loop) -> None:
    """Backup, delete (a final backup first), restore into a new id: the order and the product are there."""
    cluster = loop.stack
    assert cluster.node is not None and cluster.node.ingress_port
    assert loop.object_store is not None, "the local profile keeps backups: the loop runs the object store"
    store_id, new_id = "backed-up", "came-back"
    namespace = f"store-{store_id}"
    describe = _describe(cluster, namespace)
    base = f"http://127.0.0.1:{cluster.node.ingress_port}"
    asked = time.monotonic()
    answer = loop.request_store({"id": store_id, "name": "Backed Up", "engine": "medusa", "plan": "small",
                                 "cluster": demo.CLUSTER, "owner": OWNER})  # fmt: skip
    assert loop.wait_request(answer["request_id"])["status"] == "committed"
    events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=asked, timeout=READY_TIMEOUT)
    assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
    host = str(urllib.parse.urlsplit(str(events[-1]["url"])).hostname)
    key = _wait("the publishable key", lambda: _secret(loop, namespace).get("publishable-key"),
                timeout=KEY_TIMEOUT, describe=describe)  # fmt: skip
    with httpx.Client(base_url=base, headers={"Host": host, "x-publishable-api-key": key}, timeout=120) as store:
        order_id, email = _place_order(store)
        products = {p["id"]: p["title"] for p in _ok(store.get("/store/products"))["products"]}
    assert products
    # The storeops-backup keys reached the namespace; a backup now, as the owner.
    taken = time.monotonic()
    status, started = _owner_call(loop, "POST", f"/v1/stores/{store_id}/backups")
    assert status == 202, started

    def listed(kind: str) -> list[dict[str, Any]]:
        status, found = _owner_call(loop, "GET", f"/v1/stores/{store_id}/backups")
        assert status == 200, found
        return [b for b in found["backups"] if b["kind"] == kind]

    manual = _wait("the manual backup listed", lambda: listed("manual"), timeout=600, describe=describe)[0]
    assert manual["files"] == ["database.sql.gz", "files.tar.gz"], manual
    print(f"medusa: backup asked -> listed {time.monotonic() - taken:.0f}s ({manual['size']} bytes)", flush=True)

    # Deleted: Argo CD runs the chart's final backup before anything of the store goes.
    deleted = time.monotonic()
    status, gone = _owner_call(loop, "DELETE", f"/v1/stores/{store_id}")
    assert status == 202, gone
    assert loop.wait_request(gone["request_id"])["status"] == "committed"
    _wait("the store's namespace gone", lambda: cluster.kubectl.get("namespace", namespace) is None,
          timeout=READY_TIMEOUT, describe=describe)  # fmt: skip
    final = _wait("the final backup listed", lambda: listed("final"), timeout=120, describe=describe)[0]
    status, view = _owner_call(loop, "GET", f"/v1/stores/{store_id}/backups")
    assert status == 200 and view["exists"] is False
    print(f"medusa: delete -> namespace gone {time.monotonic() - deleted:.0f}s, final backup {final['id']}",
          flush=True)

    # Restored into a new id from the manual backup: a new store, its data the backed-up one's.
    restored = time.monotonic()
    status, queued = _owner_call(loop, "POST", f"/v1/stores/{store_id}/restore", {"from": manual["id"], "to": new_id})
    assert status == 202, queued
    assert loop.wait_request(queued["request_id"])["status"] == "committed"
    new_describe = _describe(cluster, f"store-{new_id}")
    events = loop.follow(new_id, until=("ready", "failed", "degraded"), since=restored, timeout=READY_TIMEOUT)
    assert events[-1]["status"] == "ready", f"{events[-1]}\n{new_describe()}"
    new_host = str(urllib.parse.urlsplit(str(events[-1]["url"])).hostname)
    print(f"medusa: restore asked -> ready {time.monotonic() - restored:.0f}s", flush=True)
    admin, password = _owner_admin(loop, new_id, base, new_host, timeout=READY_TIMEOUT, describe=new_describe)
    try:
        orders = _ok(admin.get("/admin/orders", params={"fields": "id,email,total"}))["orders"]
        found = [o for o in orders if o["id"] == order_id]
        assert found and found[0]["email"] == email, orders
        titles = {p["id"]: p["title"] for p in _ok(admin.get("/admin/products", params={"fields": "id,title"}))[
            "products"]}
    finally:
        admin.close()
    assert products.items() <= titles.items(), (products, titles)
    # The restored shop's admin has a password of its own (changed once restored), not the backed-up one's.
    assert password == _secret(loop, f"store-{new_id}")["admin-password"]
    print(f"medusa: backup -> delete -> restore as {new_id}: order {order_id} and {len(products)} product(s) there, "
          f"{time.monotonic() - asked:.0f}s in all", flush=True)


def _suspend(loop: demo.Loop, *store_ids: str) -> None:
    """Suspend those of the stores that exist and run, and wait until their pods are gone (room on the node)."""
    for store_id in store_ids:
        status, seen = _owner_call(loop, "GET", f"/v1/stores/{store_id}")
        if status == 200 and seen["entry"].get("state") != "suspended":
            status, asked = _owner_call(loop, "PATCH", f"/v1/stores/{store_id}", {"state": "suspended"})
            assert status == 202, asked
            assert loop.wait_request(asked["request_id"])["status"] == "committed"
    for store_id in store_ids:
        _wait(f"{store_id}'s pods to stop", lambda store_id=store_id: not [
            p for p in _kubectl_json(loop.stack.kubectl, "get", "pods", "-n", f"store-{store_id}")["items"]
            if p["status"].get("phase") in ("Running", "Pending")], timeout=600, describe=lambda: "")


def _orders(admin: httpx.Client) -> set[str]:
    return {o["id"] for o in _ok(admin.get("/admin/orders", params={"fields": "id"}))["orders"]}


def test_a_rollout_in_waves_halts_at_a_failure_and_the_rollback_restores_the_store_s_pre_upgrade_backup(
    loop: demo.Loop,
) -> None:
    """Three Medusa stores pinned to a release move to the next in waves of one: the canary first; the second
    store's namespace refuses the new release (an injected ValidatingAdmissionPolicy), so the rollout halts
    there with the third store untouched, and says so. Rolled back, the failed store is ready again at a new
    commit with its data from the backup taken before its upgrade: an order placed before it is there, one
    placed after it is not."""
    cluster = loop.stack
    assert cluster.node is not None and cluster.node.ingress_port
    first, second = RELEASES["first"], RELEASES["second"]
    base = f"http://127.0.0.1:{cluster.node.ingress_port}"
    # The node has two cores: the module's earlier stores are suspended first, so three more fit.
    _suspend(loop, STORE_ID, "came-back")

    ids = list(WAVE_IDS)
    describe = _describe(cluster, f"store-{ids[1]}")
    asked_at = time.monotonic()
    for store_id in ids:
        answer = loop.request_store({"id": store_id, "name": f"Shop {store_id}", "engine": "medusa", "plan": "small",
                                     "cluster": demo.CLUSTER, "chartVersion": first, "owner": OWNER})
        assert loop.wait_request(answer["request_id"])["status"] == "committed"
    hosts = {}
    for store_id in ids:
        events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=asked_at, timeout=READY_TIMEOUT)
        assert events[-1]["status"] == "ready", f"{events[-1]}\n{_describe(cluster, f'store-{store_id}')()}"
        hosts[store_id] = str(urllib.parse.urlsplit(str(events[-1]["url"])).hostname)
    print(f"medusa rollout: three stores on {first} ready {time.monotonic() - asked_at:.0f}s", flush=True)
    key = _wait("the publishable key", lambda: _secret(loop, f"store-{ids[1]}").get("publishable-key"),
                timeout=KEY_TIMEOUT, describe=describe)  # fmt: skip
    with httpx.Client(base_url=base, headers={"Host": hosts[ids[1]], "x-publishable-api-key": key},
                      timeout=120) as store:  # fmt: skip
        before_order, _ = _place_order(store)

    policy = _refuse_release(loop, ids[1])
    try:
        halted_rollout(loop, "medusa", second, ids, wave_timeout=900)

        def app_path(store_id: str) -> str:
            return str((cluster.application(f"store-{store_id}") or {})["spec"]["source"]["path"])  # type: ignore[index]

        # The canary runs the new release; the third store was not touched: no backup, its entry and app as before.
        assert app_path(ids[0]) == releases.chart_dir("medusa", second)
        assert app_path(ids[2]) == releases.chart_dir("medusa", first)
        status, third = loop.call("GET", f"/v1/stores/{ids[2]}")
        assert status == 200 and third["entry"]["chartVersion"] == first, third

        def backups(store_id: str) -> list[dict[str, Any]]:
            status, found = _owner_call(loop, "GET", f"/v1/stores/{store_id}/backups")
            assert status == 200, found
            return [b for b in found["backups"] if b["kind"] == "pre-upgrade"]

        assert backups(ids[0]) and backups(ids[1]) and not backups(ids[2])

        # After the failed store's pre-upgrade backup, a second order; the rollback's restore drops it.
        with httpx.Client(base_url=base, headers={"Host": hosts[ids[1]], "x-publishable-api-key": key},
                          timeout=120) as store:  # fmt: skip
            after_order, _ = _place_order(store)
        status, failing = loop.call("GET", f"/v1/stores/{ids[1]}")
        assert status == 200 and failing["status"] in ("failed", "degraded"), failing
        failed_at = str((failing.get("deployment") or {}).get("revision") or "")
        rolled_back = time.monotonic()
        status, answer = loop.call("POST", f"/v1/stores/{ids[1]}/rollback",
                                   {"reason": "the new release is refused in this namespace"})
        assert status == 202, answer
        assert loop.wait_request(answer["request_id"])["status"] == "committed"
        events = loop.follow(ids[1], until=("ready",), since=rolled_back, timeout=READY_TIMEOUT,
                             after_revision=failed_at)  # fmt: skip
        assert events[-1]["status"] == "ready" and events[-1]["revision"] != failed_at, f"{events[-1]}\n{describe()}"
        status, back = loop.call("GET", f"/v1/stores/{ids[1]}")
        assert status == 200 and back["entry"]["chartVersion"] == first, back
        assert back["entry"]["restoreFrom"] == backups(ids[1])[0]["reference"], back["entry"]
        assert app_path(ids[1]) == releases.chart_dir("medusa", first)
        admin, _ = _owner_admin(loop, ids[1], base, hosts[ids[1]], timeout=READY_TIMEOUT, describe=describe)
        try:
            orders = _wait("the restored orders", lambda: _orders(admin) if before_order in _orders(admin) else None,
                           timeout=600, describe=describe)  # fmt: skip
        finally:
            admin.close()
        assert after_order not in orders, orders
        print(f"medusa rollout: rollback of {ids[1]} ready again {time.monotonic() - rolled_back:.0f}s after asking, "
              f"at {str(events[-1]['revision'])[:12]}; order {before_order} back, {after_order} (after the backup) "
              f"gone", flush=True)
    finally:
        cluster.kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy,
                            "--ignore-not-found")


def test_on_a_reviewed_cluster_a_merged_request_runs_on_the_node_and_a_closed_one_frees_its_id(
    loop: demo.Loop, tmp_path: pathlib.Path
) -> None:
    """Review mode through GitHub's API shapes (a local server on the remote) and the real node: the merged
    pull request's store is committed and ready, and its shop answers; a closed one's request is rejected,
    its branch deleted, and its id can be requested again."""
    cluster = loop.stack
    assert cluster.node is not None and cluster.node.ingress_port
    fake: FakeGitHub = loop.fake  # type: ignore[attr-defined]
    _suspend(loop, *WAVE_IDS)
    clone = tmp_path / "platform"
    full_loop._set_review(loop, clone, True)
    merged_id, closed_id = "reviewed-shop", "closed-shop"

    def pending(store_id: str) -> tuple[dict[str, Any], Any]:
        answer = loop.request_store({"id": store_id, "name": f"Shop {store_id}", "engine": "medusa", "plan": "small",
                                     "cluster": demo.CLUSTER, "owner": OWNER})  # fmt: skip
        view = loop.wait_request(answer["request_id"])
        assert view["status"] == "pending-review", view
        pull = full_loop.wait_for(lambda: next((p for p in fake.pulls.values()
                                                if p.state == "open" and store_id in (p.title + p.body)), None))
        return view, pull

    def deliver_closed(number: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{loop.port}", timeout=30) as github_side:
            assert payloads.deliver(github_side, "pull_request",  # type: ignore[arg-type]
                                    payloads.pull_request(fake, number, "closed")).status_code == 202

    try:
        asked = time.monotonic()
        view, pull = pending(merged_id)
        fake.merge_pull(n=str(pull.number), body={})
        deliver_closed(pull.number)
        done = full_loop.wait_for(lambda: (lambda v: v if v["status"] == "committed" else None)(
            loop.call("GET", f"/v1/requests/{view['request_id']}")[1]), timeout=120)
        describe = _describe(cluster, f"store-{merged_id}")
        events = loop.follow(merged_id, until=("ready", "failed", "degraded"), since=asked, timeout=READY_TIMEOUT)
        assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
        host = str(urllib.parse.urlsplit(str(events[-1]["url"])).hostname)
        with httpx.Client(base_url=f"http://127.0.0.1:{cluster.node.ingress_port}", headers={"Host": host},
                          timeout=60) as shop:  # fmt: skip
            assert shop.get("/health").status_code == 200
        full_loop.wait_for(lambda: pull.head not in fake.git("for-each-ref", "--format=%(refname:short)",
                                                             "refs/heads/"))  # fmt: skip
        print(f"medusa review: merged pull request #{pull.number} -> committed in {str(done['commit'])[:12]} -> "
              f"ready on the node {time.monotonic() - asked:.0f}s after the request", flush=True)

        view, pull = pending(closed_id)
        fake.update_pull(n=str(pull.number), body={"state": "closed"})
        deliver_closed(pull.number)
        rejected = full_loop.wait_for(lambda: (lambda v: v if v["status"] == "rejected" else None)(
            loop.call("GET", f"/v1/requests/{view['request_id']}")[1]), timeout=120)
        assert "closed" in json.dumps(rejected["problems"]), rejected
        full_loop.wait_for(lambda: pull.head not in fake.git("for-each-ref", "--format=%(refname:short)",
                                                             "refs/heads/"))  # fmt: skip
        assert cluster.kubectl.get("namespace", f"store-{closed_id}") is None
        again = loop.request_store({"id": closed_id, "name": "Again", "engine": "medusa", "plan": "small",
                                    "cluster": demo.CLUSTER, "owner": OWNER})  # fmt: skip
        assert loop.wait_request(again["request_id"])["status"] == "pending-review"
        print(f"medusa review: closed pull request #{pull.number} -> rejected, branch deleted; {closed_id} "
              f"requested again -> pending-review", flush=True)
    finally:
        full_loop._set_review(loop, clone, False)
