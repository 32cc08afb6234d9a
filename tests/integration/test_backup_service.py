"""Backups from the service's side, against a real S3-compatible server (SeaweedFS on loopback) and the
real API server: the keys reach store namespaces, backups are listed (finished ones only) for the owner,
a backup is started from the store's CronJob, a store is restored into a new id or back under its own
once deleted, and a deleted store's backups go after the profile's ``finalBackupDays``."""

from __future__ import annotations

import base64
import collections.abc
import contextlib
import datetime
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from generator import fleet, trees
from harness import errors, examples, objectstore
from harness import stack as harness_stack
from tests.integration.status import support
from tests.integration.status.test_rollouts import _finish_job
from webhook import backups
from webhook.settings import StatusSettings, Token

JANE = {"Authorization": "Bearer jane-owner-token"}  # owns acme-outdoor in the example data
SAM = {"Authorization": "Bearer sam-owner-token"}
KEYS_NAMESPACE = "storeops-system"
KEYS_SECRET = "backup-s3"
PROFILE = f"""\
backups:
  endpoint: http://seaweedfs.storeops-backups.svc:8333
  bucket: {objectstore.BUCKET}
  credentialsSecret:
    namespace: {KEYS_NAMESPACE}
    name: {KEYS_SECRET}
  finalBackupDays: 1
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[objectstore.ObjectStore]:
    try:
        objectstore.binary()
    except errors.MissingBinariesError as e:  # with STOREOPS_NO_SKIPS=1 (CI) the skip fails the run
        pytest.skip(f"SeaweedFS is not built: {e}")
    with objectstore.running(directory=tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


def _keys_secret(core: client.CoreV1Api, s3: objectstore.ObjectStore, *, access_key: str | None = None) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=KEYS_SECRET, namespace=KEYS_NAMESPACE), string_data={
        "AWS_ACCESS_KEY_ID": access_key or s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key})
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=KEYS_NAMESPACE)))
    except client.ApiException as e:
        assert e.status == 409
    try:
        core.create_namespaced_secret(KEYS_NAMESPACE, body)
    except client.ApiException as e:
        assert e.status == 409
        core.replace_namespaced_secret(KEYS_SECRET, KEYS_NAMESPACE, body)


def _namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as e:
        assert e.status == 409


def _upload(s3: objectstore.ObjectStore, store: str, backup_id: str, *, finished: bool = True,
            engine: str = "woocommerce") -> None:
    """A backup as the charts' Job leaves it: its files, then its manifest last."""
    s3client: Any = s3.client()
    data = f"-- dump of {store} {backup_id}\n".encode()
    s3client.put_bytes(f"local/{store}/{backup_id}/database.sql.gz", data, content_type="application/gzip")
    if finished:
        manifest = {"store": store, "engine": engine, "kind": backup_id.partition("-")[2],
                    "files": {"database.sql.gz": {"size": len(data), "sha256": "0" * 64}}}
        s3client.put_bytes(f"local/{store}/{backup_id}/manifest.json", json.dumps(manifest).encode())


def _cronjob(batch: client.BatchV1Api, namespace: str) -> None:
    container = client.V1Container(name="upload", image="storeops.local/python:3.13-trixie",
                                   command=["python3", "/backup/backup.py", "backup"],
                                   env=[client.V1EnvVar(name="BACKUP_KIND", value="scheduled")])
    batch.create_namespaced_cron_job(namespace, client.V1CronJob(
        metadata=client.V1ObjectMeta(name="backup"),
        spec=client.V1CronJobSpec(schedule="17 3 * * *", job_template=client.V1JobTemplateSpec(
            spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never", containers=[container])))))))


def test_backups_from_the_service(tmp_path: Path, apiserver: harness_stack.Stack,
                                  s3: objectstore.ObjectStore) -> None:
    from starlette.testclient import TestClient

    from webhook import app

    api = support.api_client(apiserver.kubeconfig)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    _keys_secret(core, s3)
    base = examples.service_settings(tmp_path, local_extra=PROFILE)
    config = replace(base, tokens=(*base.tokens,
                                   Token("jane-owner-token", name="jane", owner="jane@acme-outdoor.example"),
                                   Token("sam-owner-token", name="sam", owner="sam@bookworm.example")),
                     backup_interval=0.2, backup_endpoints={"local": s3.endpoint}, final_backup_wait=15)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=support.new_namespace(apiserver),
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1)
    bare = Path(str(config.git.remote))
    older, newer = "20261120T031700Z-scheduled", "20261126T101500Z-manual"
    for backup_id in (older, newer):
        _upload(s3, "acme-outdoor", backup_id)
    _upload(s3, "acme-outdoor", "20261127T000000Z-manual", finished=False)
    try:
        with TestClient(app.create_app(config, status=status)) as http:
            support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)

            # The keys reach the store's namespace once it is there, and follow a change of the source.
            _namespace(core, "store-acme-outdoor")

            def copied() -> dict[str, str]:
                try:
                    secret = core.read_namespaced_secret("storeops-backup", "store-acme-outdoor")
                except client.ApiException:
                    return {}
                return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

            support.wait_until("the keys in store-acme-outdoor",
                               lambda: copied().get("AWS_ACCESS_KEY_ID") == s3.access_key, timeout=20)
            assert copied()["AWS_SECRET_ACCESS_KEY"] == s3.secret_key
            _keys_secret(core, s3, access_key="rotated-key")
            support.wait_until("the new key copied", lambda: copied().get("AWS_ACCESS_KEY_ID") == "rotated-key",
                               timeout=20)
            _keys_secret(core, s3)
            support.wait_until("the key back", lambda: copied().get("AWS_ACCESS_KEY_ID") == s3.access_key, timeout=20)

            # Finished backups only, newest first, for the owner; another owner sees nothing.
            listed = http.get("/v1/stores/acme-outdoor/backups", headers=JANE)
            assert listed.status_code == 200, listed.text
            assert [b["id"] for b in listed.json()["backups"]] == [newer, older]
            assert listed.json()["backups"][0] == {
                "id": newer, "reference": f"acme-outdoor/{newer}", "kind": "manual", "created": "2026-11-26T10:15:00Z",
                "size": len(f"-- dump of acme-outdoor {newer}\n"), "files": ["database.sql.gz"]}
            assert http.get("/v1/stores/acme-outdoor/backups", headers=SAM).status_code == 404

            # Back up now: a Job from the store's CronJob, of kind manual; none before the CronJob is there.
            with contextlib.suppress(client.ApiException):  # another test's, on this API server
                batch.delete_namespaced_cron_job("backup", "store-acme-outdoor")
            early = http.post("/v1/stores/acme-outdoor/backups", headers=JANE)
            assert early.status_code == 503 and "no backup CronJob yet" in early.json()["error"]
            _cronjob(batch, "store-acme-outdoor")
            started = http.post("/v1/stores/acme-outdoor/backups", headers=JANE)
            assert started.status_code == 202, started.text
            job = batch.read_namespaced_job(started.json()["job"], "store-acme-outdoor")
            env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
            assert env["BACKUP_KIND"] == "manual"
            assert job.metadata.owner_references[0].kind == "CronJob"
            assert http.post("/v1/stores/acme-outdoor/backups", headers=SAM).status_code == 404

            # Restore: refused into the living store, for a malformed or unknown backup; into a new id it is
            # a new store with the backed-up store's fields and restoreFrom.
            same = http.post("/v1/stores/acme-outdoor/restore", json={"from": newer}, headers=JANE)
            assert same.status_code == 409 and "keeps its data" in same.json()["error"]
            assert http.post("/v1/stores/acme-outdoor/restore", json={"from": "yesterday", "to": "acme-again"},
                             headers=JANE).status_code == 422
            unfinished = http.post("/v1/stores/acme-outdoor/restore", headers=JANE,
                                   json={"from": "20261127T000000Z-manual", "to": "acme-again"})
            assert unfinished.status_code == 404 and "no finished backup" in unfinished.json()["error"]
            restored = http.post("/v1/stores/acme-outdoor/restore", json={"from": newer, "to": "acme-again"},
                                 headers=JANE)
            assert restored.status_code == 202, restored.text
            support.wait_until("acme-again in Git", lambda: "acme-again" in examples.remote_stores(bare))
            original = examples.remote_stores(bare)["acme-outdoor"]
            again = examples.remote_stores(bare)["acme-again"]
            assert again["restoreFrom"] == f"acme-outdoor/{newer}"
            # The restored shop's admin gets a new password once restored (the backup holds the old one's).
            assert again["adminPasswordRotation"] == 1
            assert {k: again[k] for k in ("name", "engine", "plan", "cluster", "owner")} == \
                {k: original[k] for k in ("name", "engine", "plan", "cluster", "owner")}
            assert "domain" not in again

            # Deleted only after its final backup, which storeops starts and waits for: the test plays the job
            # controller (and the Job's upload) from a thread while the delete waits.
            def final_job() -> str:
                jobs = batch.list_namespaced_job("store-acme-outdoor", label_selector="storeops.io/backup-kind=final")
                running = [j.metadata.name for j in jobs.items if not (j.status and j.status.conditions)]
                return running[0] if running else ""

            def finish_final(ok: bool) -> threading.Thread:
                def run() -> None:
                    support.wait_until("a final backup Job", lambda: bool(final_job()), timeout=20)
                    job = final_job()
                    if ok:
                        _upload(s3, "acme-outdoor",
                                datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-final")
                    _finish_job(batch, "acme-outdoor", str(job), ok=ok)
                thread = threading.Thread(target=run, daemon=True)
                thread.start()
                return thread

            worker = finish_final(ok=False)
            refused = http.delete("/v1/stores/acme-outdoor", headers=JANE)
            worker.join(30)
            assert refused.status_code == 409 and "final backup of acme-outdoor failed" in refused.json()["error"]
            assert "BackoffLimitExceeded" in refused.json()["error"] and "acme-outdoor" in examples.remote_stores(bare)
            worker = finish_final(ok=True)
            deleted = http.delete("/v1/stores/acme-outdoor", headers=JANE)
            worker.join(30)
            assert deleted.status_code == 202, deleted.text
            support.wait_until("acme-outdoor gone from Git", lambda: "acme-outdoor" not in examples.remote_stores(bare))
            gone = http.get("/v1/stores/acme-outdoor/backups", headers=JANE)
            assert gone.status_code == 200 and gone.json()["exists"] is False
            assert [b["kind"] for b in gone.json()["backups"]] == ["final", "manual", "scheduled"]
            assert http.get("/v1/stores/acme-outdoor/backups", headers=SAM).status_code == 404
            back = http.post("/v1/stores/acme-outdoor/restore", json={"from": older}, headers=JANE)
            assert back.status_code == 202, back.text
            support.wait_until("acme-outdoor back in Git", lambda: "acme-outdoor" in examples.remote_stores(bare))
            assert examples.remote_stores(bare)["acme-outdoor"]["restoreFrom"] == f"acme-outdoor/{older}"
    finally:
        support.close(api)


def test_a_deleted_stores_backups_go_after_final_backup_days(apiserver: harness_stack.Stack,
                                                             s3: objectstore.ObjectStore) -> None:
    api = support.api_client(apiserver.kubeconfig)
    try:
        _keys_secret(client.CoreV1Api(api), s3)
        files: dict[str, bytes | str] = dict(trees.read_inputs(examples.ROOT))
        files["clusters/local.yaml"] = examples.with_profile_keys(bytes(files["clusters/local.yaml"]).decode(),
                                                                  PROFILE)
        built = fleet.build(files)
        clusters = {name: cluster for name, (cluster, _) in built.clusters.items()}
        for store in ("gone-shop", "live-shop"):
            _upload(s3, store, "20261127T031700Z-final" if store == "gone-shop" else "20261127T031700Z-scheduled")
        _upload(s3, "gone-shop", "20261127T040000Z-manual", finished=False)
        now = datetime.datetime.now(datetime.UTC)
        keeper = backups.Keeper(api=api, fleet=lambda: (clusters, {"live-shop": "local"}), interval=1,
                                endpoints={"local": s3.endpoint}, clock=lambda: now)
        objects = keeper.objects(clusters["local"])
        # Within the day both stay.
        assert keeper.once()["removed"] == []
        assert {"gone-shop", "live-shop"} <= objects.stores()
        # A day and more later the deleted store's backups (finished or not) go; the live store's stay.
        keeper.clock = lambda: now + datetime.timedelta(days=1, minutes=5)
        # (Other tests' stores in the bucket are not live here either, and go with it.)
        removed = keeper.once()["removed"]
        assert "gone-shop" in removed and "live-shop" not in removed
        left = list(objects.client.list_objects(objects.settings.bucket, prefix="local/gone-shop/", recursive=True))
        assert left == [] and objects.of("gone-shop") == []
        # Nothing of it is left to remove (an empty folder some servers keep is not a store's backup).
        assert keeper.once()["removed"] == []
        assert [b.id for b in objects.of("live-shop")] == ["20261127T031700Z-scheduled"]
        # Wrong keys in the Secret: listing says so instead of pretending there is nothing.
        _keys_secret(client.CoreV1Api(api), s3, access_key="not-a-key")
        with pytest.raises(Exception, match=r"(?i)access ?key|InvalidAccessKeyId|denied|signature"):
            keeper.objects(clusters["local"]).of("live-shop")
        _keys_secret(client.CoreV1Api(api), s3)
        assert yaml.safe_load(PROFILE)["backups"]["finalBackupDays"] == 1
    finally:
        support.close(api)


def test_a_medusa_rollback_of_a_chart_move_restores_its_pre_upgrade_backup(
        tmp_path: Path, apiserver: harness_stack.Stack, s3: objectstore.ObjectStore) -> None:
    """Medusa migrates forward only: rolling back a failed chart move also puts back the store's newest
    pre-upgrade backup (restoreFrom in the entry), refused without one unless the entry alone is asked for."""
    from starlette.testclient import TestClient

    from generator import releasing
    from harness import applications
    from webhook import app

    api = support.api_client(apiserver.kubeconfig)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    _keys_secret(core, s3)
    base = examples.service_settings(tmp_path, local_extra=PROFILE)
    config = replace(base, tokens=(*base.tokens, Token("sam-owner-token", name="sam", owner="sam@bookworm.example")),
                     backup_interval=60, backup_endpoints={"local": s3.endpoint})
    bare = Path(str(config.git.remote))
    work = tmp_path / "release"
    examples.git(tmp_path, "clone", "-q", str(bare), str(work))
    releasing.release(work, "medusa")
    examples.git(work, "add", "-A")
    examples.git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "Release medusa 0.1.0")
    examples.git(work, "push", "-q", "origin", "HEAD:main")
    namespace = support.new_namespace(apiserver)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace, tick=0.1,
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1)
    first = examples.git(bare, "rev-parse", "main").strip()
    body = applications.application("bookworm", namespace)
    body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded", revision=first)
    custom.create_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace, applications.PLURAL,
                                           body)
    try:
        with TestClient(app.create_app(config, status=status)) as http:
            support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)

            def state() -> str:
                return str(http.get("/v1/stores/bookworm", headers=SAM).json()["status"])

            support.wait_until("bookworm ready", lambda: state() == "ready", timeout=30)
            # A restoreFrom naming another store's backup never lands on an existing store.
            other = http.patch("/v1/stores/bookworm", headers=SAM,
                               json={"restoreFrom": "acme-outdoor/20261126T101500Z-pre-upgrade"})
            assert other.status_code == 422 and "keeps its data" in other.text
            moved = http.patch("/v1/stores/bookworm", json={"chartVersion": "0.1.0"}, headers=SAM)
            assert moved.status_code == 202, moved.text
            support.wait_until("the move in Git", lambda: examples.remote_stores(bare)["bookworm"].get(
                "chartVersion") == "0.1.0")
            second = examples.git(bare, "rev-parse", "main").strip()
            applications.set_status(custom, namespace, "bookworm", applications.argo_status(
                sync="Synced", health="Degraded", phase="Failed", revision=second,
                health_message="medusa: the server exits after its migrations"))
            support.wait_until("bookworm failing", lambda: state() in ("failed", "degraded"), timeout=30)

            # No pre-upgrade backup: the rollback says why, and what to ask for instead.
            refused = http.post("/v1/stores/bookworm/rollback", json={"reason": "server exits"}, headers=SAM)
            assert refused.status_code == 409 and "no pre-upgrade backup" in refused.json()["error"]
            older, newest = "20261127T080000Z-pre-upgrade", "20261127T090000Z-pre-upgrade"
            for backup_id in (older, newest, "20261127T100000Z-manual"):
                _upload(s3, "bookworm", backup_id, engine="medusa")
            rolled = http.post("/v1/stores/bookworm/rollback", json={"reason": "server exits"}, headers=SAM)
            assert rolled.status_code == 202, rolled.text
            support.wait_until("the rollback in Git", lambda: "chartVersion" not in examples.remote_stores(bare)[
                "bookworm"])
            entry = examples.remote_stores(bare)["bookworm"]
            assert entry["restoreFrom"] == f"bookworm/{newest}"
            message = examples.git(bare, "log", "-1", "--format=%B", "main")
            assert f"data from bookworm/{newest}" in message and "server exits" in message
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                                   applications.PLURAL, "store-bookworm")
        support.close(api)


def test_storeops_does_its_backup_work_with_the_rights_the_chart_and_the_platform_give(
        apiserver: harness_stack.Stack) -> None:
    """As storeops' ServiceAccount, with only the chart's Role (storeops.backupKeeper, as rendered) and the
    platform's (argocd/platform/backup-keys-rbac.yaml): the keys copied and kept, a backup started and
    followed; nothing else of the namespace."""
    import subprocess
    import uuid

    from generator import models
    from harness import versions

    store_id = f"keeper-{uuid.uuid4().hex[:6]}"
    namespace = f"store-{store_id}"
    admin = support.api_client(apiserver.kubeconfig)
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    for name in (namespace, "storeops"):
        _namespace(core, name)
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="backup-s3", namespace="storeops"),
                           string_data={"AWS_ACCESS_KEY_ID": "key-1", "AWS_SECRET_ACCESS_KEY": "secret-1"})
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_secret("backup-s3", "storeops")
    core.create_namespaced_secret("storeops", body)
    values = {"store": {"id": store_id, "name": "Keeper", "engine": "medusa", "plan": "small",
                        "owner": {"name": "P", "email": "p@keeper.example"}},
              "backup": {"enabled": True, "schedule": "5 3 * * *", "retention": 7, "secretName": "storeops-backup",
                         "s3": {"endpoint": "http://s3.example:8333", "bucket": "backups", "prefix": "local"}}}
    rendered = subprocess.run(
        [str(versions.binaries().helm), "template", store_id, str(examples.ROOT / "templates" / "medusa"),
         "--namespace", namespace, "--values", "-"], input=json.dumps(values), capture_output=True, text=True,
        check=True).stdout
    rbac = [d for d in yaml.safe_load_all(rendered) if d and d["metadata"]["name"] == "storeops-backups"]
    assert sorted(d["kind"] for d in rbac) == ["Role", "RoleBinding"]
    apiserver.kubectl.apply(*rbac, *yaml.safe_load_all((examples.ROOT / "argocd/platform/backup-keys-rbac.yaml")
                                                       .read_text()))
    _cronjob(batch, namespace)
    cluster = models.Cluster(
        name="local", argocd_namespace="argocd", repo_url="git://x", base_domain="x.example", ingress_class="x",
        capacity=models.Capacity(stores=1),
        backups=models.Backups(endpoint="http://s3.example:8333", bucket="backups",
                               credentials_secret=("storeops", "backup-s3")))
    api = support.api_client(apiserver.kubeconfig)
    api.set_default_header("Impersonate-User", "system:serviceaccount:storeops:storeops")
    api.set_default_header("Impersonate-Group", "system:serviceaccounts")
    try:
        def copies() -> list[str]:
            try:
                return backups.distribute(api, cluster, [store_id])
            except client.ApiException as e:
                assert e.status == 403  # until the Roles apply
                return []

        support.wait_until("the keys copied as storeops", lambda: copies() == [namespace])
        assert backups.distribute(api, cluster, [store_id]) == []  # in step: nothing written
        core.patch_namespaced_secret("backup-s3", "storeops", {"stringData": {"AWS_ACCESS_KEY_ID": "key-2"}})
        assert backups.distribute(api, cluster, [store_id]) == [namespace]
        copied = core.read_namespaced_secret("storeops-backup", namespace)
        assert base64.b64decode(copied.data["AWS_ACCESS_KEY_ID"]).decode() == "key-2"
        job = backups.take(api, store_id, kind="pre-upgrade")
        assert backups.job_state(api, store_id, job) == ("running", "")
        assert backups.running_job(api, store_id, "pre-upgrade") == job
        backups.clear_jobs(api, store_id)  # before a removal: the backup Jobs go, and their Pods with them
        support.wait_until("the backup Jobs gone", lambda: not batch.list_namespaced_job(namespace).items)
        job = backups.take(api, store_id, kind="final")
        as_storeops = client.CoreV1Api(api)
        for forbidden in (lambda: as_storeops.list_namespaced_secret(namespace),
                          lambda: as_storeops.read_namespaced_secret("default-token", namespace),
                          lambda: client.BatchV1Api(api).delete_namespaced_job(job, namespace),
                          lambda: as_storeops.list_namespaced_secret("storeops")):
            with pytest.raises(client.ApiException) as refused:
                forbidden()
            assert refused.value.status == 403
    finally:
        support.close(api)
        support.close(admin)
