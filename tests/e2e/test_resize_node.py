"""A Medusa store's plan grows on the real node, through storeops and Argo CD: its volumes grow in place.

The local cluster profile is given the StorageClass of the harness's CSI driver (``storeops-csi``,
harness/csidriver.py), which can grow volumes, and says so (``allowVolumeExpansion: true``). A Medusa
store is requested on the ``small`` plan and takes an order; its plan becomes ``medium``; storeops
commits the change, Argo CD syncs it: the quota follows the plan, the database claim (``data-postgres-0``,
an object of the chart) and the uploads claim are patched to the new size, the external-resizer and the
driver grow the volumes, the restarted pods see the bigger filesystems, the store is ``ready`` again and
the order is still there. Going back to ``small`` is refused at validation (422). The times from the
plan change to the grown claims and to ``ready`` are printed (``-s``).
"""

from __future__ import annotations

import collections.abc
import contextlib
import pathlib
import threading
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from harness import csidriver, demo, errors, stack
from tests.e2e import test_medusa_node as medusa_node
from tests.e2e.test_medusa_node import cluster  # noqa: F401  (the fixture: the stack with Medusa's images)
from tests.e2e.test_store_charts import _kubectl_json
from tests.e2e.test_store_node import _describe
from tests.medusa_checkout import ok as _ok

pytestmark = [pytest.mark.e2e, pytest.mark.node]

STORE_ID = "growing-shop"
GI = 1 << 30


def _expandable(source: pathlib.Path) -> None:
    """The local profile with the CSI class, which can grow volumes."""
    profile = source / "clusters" / f"{demo.CLUSTER}.yaml"
    text = profile.read_text()
    assert "storageClassName" not in text and "allowVolumeExpansion" not in text
    profile.write_text(text + f"storageClassName: {csidriver.STORAGE_CLASS}\nallowVolumeExpansion: true\n")


@pytest.fixture(scope="module")
def loop(cluster: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[demo.Loop]:  # noqa: F811
    yield from medusa_node.serve(cluster, tmp_path_factory.mktemp("resize-loop"), _expandable)


def _claim(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    return _kubectl_json(kubectl, "get", "pvc", name, "-n", namespace)


def _capacity(claim: dict[str, Any]) -> str:
    return str((claim.get("status") or {}).get("capacity", {}).get("storage", ""))


def _df_bytes(kubectl: Any, namespace: str, pod: str, container: str, path: str) -> int:
    lines = kubectl.run("exec", "-n", namespace, pod, "-c", container, "--", "df", "-k", path).splitlines()
    return int(lines[-1].split()[1]) * 1024


def _orders(base: str, host: str, email: str, password: str) -> set[str]:
    with httpx.Client(base_url=base, headers={"Host": host}, timeout=120) as admin:
        token = _ok(admin.post("/auth/user/emailpass", json={"email": email, "password": password}))
        orders = _ok(admin.get("/admin/orders", params={"fields": "id"},
                               headers={"Authorization": f"Bearer {token['token']}"}))["orders"]  # fmt: skip
    return {o["id"] for o in orders}


def test_a_bigger_plan_grows_the_store_s_volumes_in_place_and_keeps_its_order(loop: demo.Loop) -> None:
    running = loop.stack
    assert running.node is not None and running.node.ingress_port
    kubectl, namespace = running.kubectl, f"store-{STORE_ID}"
    describe = _describe(running, namespace)
    base = f"http://127.0.0.1:{running.node.ingress_port}"

    asked = time.monotonic()
    answer = loop.request_store({"id": STORE_ID, "name": "Growing Shop", "engine": "medusa", "plan": "small",
                                 "cluster": demo.CLUSTER, "owner": medusa_node.OWNER})  # fmt: skip
    assert loop.wait_request(answer["request_id"])["status"] == "committed"
    events = loop.follow(STORE_ID, until=("ready", "failed", "degraded"), since=asked,
                         timeout=medusa_node.READY_TIMEOUT)  # fmt: skip
    assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
    host = urllib.parse.urlsplit(str(events[-1]["url"])).hostname
    assert host
    print(f"resize: request -> ready {time.monotonic() - asked:.0f}s", flush=True)
    claims = {c["metadata"]["name"]: c for c in _kubectl_json(kubectl, "get", "pvc", "-n", namespace)["items"]}
    assert set(claims) == {"data-postgres-0", "medusa-uploads"}
    for claim in claims.values():
        assert claim["spec"]["storageClassName"] == csidriver.STORAGE_CLASS and _capacity(claim) == "2Gi", claim
    # The claim is the chart's object (Argo CD tracks it), and the StatefulSet's pod mounts it.
    assert claims["data-postgres-0"]["metadata"]["labels"]["app.kubernetes.io/component"] == "postgres"
    before = _df_bytes(kubectl, namespace, "postgres-0", "postgres", "/var/lib/postgresql/data")
    assert 1.8 * GI < before <= 2 * GI, before

    secret = medusa_node._wait(
        "the publishable key", lambda: (found := medusa_node._secret(loop, namespace)).get("publishable-key") and found,
        timeout=medusa_node.KEY_TIMEOUT, describe=describe)  # fmt: skip
    with httpx.Client(base_url=base, headers={"Host": host, "x-publishable-api-key": secret["publishable-key"]},
                      timeout=120) as store:  # fmt: skip
        order_id, _ = medusa_node._place_order(store)
    login = (str(medusa_node.OWNER["email"]), secret["admin-password"])
    assert order_id in _orders(base, host, *login)

    # small -> medium: database and uploads 2Gi -> 10Gi, quota 1 CPU / 2Gi / 10Gi -> 2 / 4Gi / 40Gi.
    status, view = loop.call("GET", f"/v1/stores/{STORE_ID}")
    assert status == 200, view
    revision = str((view.get("deployment") or {}).get("revision") or "")
    changed = time.monotonic()
    status, asked_change = loop.call("PATCH", f"/v1/stores/{STORE_ID}", {"plan": "medium"})
    assert status == 202, asked_change
    assert loop.wait_request(asked_change["request_id"])["status"] == "committed"
    # When each claim reaches its new capacity, watched beside the store's status events.
    grown: dict[str, float] = {}
    stop = threading.Event()

    def both_grown() -> bool:
        for name in ("data-postgres-0", "medusa-uploads"):
            if name not in grown and _capacity(_claim(kubectl, namespace, name)) == "10Gi":
                grown[name] = time.monotonic() - changed
        return len(grown) == 2

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(errors.CommandError):
                if both_grown():
                    return
            stop.wait(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        events = loop.follow(STORE_ID, until=("ready", "failed", "degraded"), since=changed,
                             timeout=medusa_node.READY_TIMEOUT, after_revision=revision)  # fmt: skip
        assert events[-1]["status"] == "ready", f"{events[-1]}\n{describe()}"
        to_ready = time.monotonic() - changed

        # Grown by the chart's own restart of the pods that mount them (no help from the test).
        medusa_node._wait("both claims at 10Gi", lambda: len(grown) == 2, timeout=600, describe=describe)
    finally:
        stop.set()
        watcher.join(timeout=30)
    quota = _kubectl_json(kubectl, "get", "resourcequota", "store-quota", "-n", namespace)
    assert quota["spec"]["hard"] == {"requests.cpu": "2", "requests.memory": "4Gi", "requests.storage": "40Gi"}
    for name in ("data-postgres-0", "medusa-uploads"):
        claim = _claim(kubectl, namespace, name)
        volume = _kubectl_json(kubectl, "get", "pv", claim["spec"]["volumeName"])
        assert volume["spec"]["capacity"]["storage"] == "10Gi"
        # The same volume as before the change: grown, not replaced.
        assert claim["metadata"]["uid"] == claims[name]["metadata"]["uid"]
        assert claim["spec"]["volumeName"] == claims[name]["spec"]["volumeName"]
        assert not {c["type"] for c in (claim["status"].get("conditions") or [])} & {
            "Resizing", "FileSystemResizePending"}

    def database_answers() -> bool:
        pod = _kubectl_json(kubectl, "get", "pod", "postgres-0", "-n", namespace)
        return any(c.get("ready") for c in (pod.get("status") or {}).get("containerStatuses") or [])

    medusa_node._wait("postgres ready", database_answers, timeout=600, describe=describe)
    after = _df_bytes(kubectl, namespace, "postgres-0", "postgres", "/var/lib/postgresql/data")
    assert 9 * GI < after <= 10 * GI, after

    def order_kept() -> bool:
        try:
            return order_id in _orders(base, host, *login)
        except (AssertionError, httpx.HTTPError):
            return False

    medusa_node._wait("the order after the growth", order_kept, timeout=600, describe=describe)
    print(f"resize: plan small -> medium: ready {to_ready:.0f}s, database claim at 10Gi "
          f"{grown['data-postgres-0']:.0f}s, uploads claim at 10Gi {grown['medusa-uploads']:.0f}s after the change; "
          f"database filesystem {before / GI:.2f} -> {after / GI:.2f} GiB; order {order_id} kept", flush=True)

    # Back to small would shrink the volumes: refused before anything reaches Git.
    status, refused = loop.call("PATCH", f"/v1/stores/{STORE_ID}", {"plan": "small"})
    assert status == 422, refused
    (problem,) = refused["problems"]
    assert problem["field"] == "plan" and "would shrink the store's volumes" in problem["message"], problem
    assert "database 10Gi -> 2Gi" in problem["message"]
