"""Backup and restore of a Medusa store on the real node, with the chart's own Jobs.

The SeaweedFS add-on (harness/objectstore.py) runs in namespace storeops-backups; two stores are
applied from `helm template` of the Medusa chart with the local images (as
tests/integration/test_store_images.py does, in the order Argo CD's waves and hooks give):

1. the old store, with backups on: credentials, PostgreSQL, Redis, the Medusa server (its migrations),
   then a row and an uploaded file of its own; a manual backup is a Job made from the CronJob's
   jobTemplate with BACKUP_KIND=manual, as storeops makes them. Its pods reach the add-on through
   the store's NetworkPolicies (default-deny ingress, the backup pods' egress policy);
2. a new store in a fresh namespace with restore.from naming that backup: its restore Job (with the
   database, before the web component), then the Medusa server, which waits for the restore marker.
   The row and the file are there; the restore Job run again (each sync runs the hook) loads nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import subprocess
import time
from typing import Any

import pytest
import yaml

from generator import operations, rendering
from harness import kube, node, objectstore, stack, versions
from harness.images import debian, medusa
from tests.integration.test_store_images import STORAGE_CLASS, _configmap_exists, _local_volume, _wait_ready
from tests.integration.test_store_images import Store as Rendered

pytestmark = pytest.mark.node

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = "bookworm"
LOCAL_IMAGES = {"postgres": "postgres", "redis": "redis", "credentials": "python"}
JOB_TIMEOUT = 600
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(node_stack: stack.Stack) -> stack.Stack:
    """The node with the store images imported and the StorageClass of the local volumes."""
    assert node_stack.node is not None
    archives = [debian.build(name).image.archive for name in ("postgres", "redis", "python")]
    archives.append(medusa.build().image.archive)
    for archive in archives:
        node_stack.node.ctr("images", "import", str(archive), timeout=900)
    node_stack.kubectl.apply({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
    })  # fmt: skip
    return node_stack


@pytest.fixture(scope="module")
def s3(cluster: stack.Stack) -> objectstore.ClusterObjectStore:
    assert cluster.node is not None
    return objectstore.deploy(kubectl=cluster.kubectl, ctr=cluster.node.ctr, node_selector=node.NODE_SELECTOR)


def _render(store_id: str, folder: pathlib.Path, s3: objectstore.ClusterObjectStore, **extra: Any) -> Rendered:
    fleet = operations.load(REPO)
    entry = fleet.stores[f"stores/{EXAMPLE}.yaml"].entry
    assert entry is not None
    model = dataclasses.replace(entry.store, id=store_id)
    values = rendering.values(model, fleet.clusters[model.cluster][0], fleet.plans[model.plan])
    overrides: dict[str, Any] = {
        "persistence": {"storageClassName": STORAGE_CLASS},
        "medusa": {"image": {"repository": medusa.IMAGE.ref.rsplit(":", 1)[0], "tag": medusa.IMAGE.tag}},
        "backup": {
            "enabled": True,
            "s3": {"endpoint": s3.endpoint, "bucket": s3.bucket, "region": s3.region, "prefix": "local"},
            "egress": {"namespace": s3.namespace},
        },
        **extra,
    }
    for block, image in LOCAL_IMAGES.items():
        spec = debian.IMAGES[image]
        overrides[block] = {"image": {"repository": spec.ref.rsplit(":", 1)[0], "tag": spec.tag}}
    (folder / f"{store_id}.yaml").write_text(yaml.safe_dump(values))
    (folder / f"{store_id}-local.yaml").write_text(yaml.safe_dump(overrides))
    helm = versions.locate().helm
    out = subprocess.run(
        [str(helm), "template", f"store-{store_id}", str(REPO / "templates" / "medusa"), "--namespace",
         model.namespace, "--values", str(folder / f"{store_id}.yaml"), "--values",
         str(folder / f"{store_id}-local.yaml")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    manifests = [d for d in yaml.safe_load_all(out) if d]
    return Rendered(id=store_id, engine="medusa", namespace=model.namespace, url=str(values["url"]),
                    manifests=manifests)  # fmt: skip


def _named(store: Rendered, *names: tuple[str, str]) -> list[Manifest]:
    return [store.one(kind, name) for kind, name in names]


def _prepare(kubectl: kube.Kubectl, store: Rendered, s3: objectstore.ClusterObjectStore, volumes: pathlib.Path) -> None:
    """Namespace, isolation, credentials (the PreSync hook), the backup keys storeops copies, volumes."""
    kubectl.apply(*[m for m in store.manifests if m["kind"] in ("Namespace", "ResourceQuota", "LimitRange")])
    kubectl.apply(*[m for m in store.manifests if m["kind"] == "NetworkPolicy"])
    root_ca = _configmap_exists(kubectl, store.namespace, "kube-root-ca.crt")
    kubectl.wait_for(f"kube-root-ca.crt in {store.namespace}", root_ca, timeout=60, interval=0.5)
    kubectl.apply(*_named(store, ("ServiceAccount", "credentials-writer"), ("Role", "credentials-writer"),
                          ("RoleBinding", "credentials-writer"), ("ConfigMap", "credentials-writer")))  # fmt: skip
    kubectl.apply(store.one("Job", "credentials"))
    _job_done(kubectl, store.namespace, "credentials")
    kubectl.apply({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "storeops-backup", "namespace": store.namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    })  # fmt: skip
    kubectl.apply(*[_local_volume(volumes, store.namespace, claim, size) for claim, size in _claims_of(store)])
    kubectl.apply(store.one("ConfigMap", "backup-script"))


def _claims_of(store: Rendered) -> list[tuple[str, str]]:
    """The uploads claim and the database's claim (data-postgres-0), with their sizes."""
    uploads = store.one("PersistentVolumeClaim", "medusa-uploads")["spec"]["resources"]["requests"]["storage"]
    template = store.one("StatefulSet", "postgres")["spec"]["volumeClaimTemplates"][0]
    return [("medusa-uploads", uploads),
            (f"{template['metadata']['name']}-postgres-0", template["spec"]["resources"]["requests"]["storage"])]


def _job_done(kubectl: kube.Kubectl, namespace: str, name: str, *, timeout: float = JOB_TIMEOUT) -> None:
    """Wait for the Job to complete; on failure or timeout, fail with its pods' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = kubectl.get("job", name, namespace=namespace)
        conditions = {c["type"]: c["status"] for c in (job or {}).get("status", {}).get("conditions", [])}  # type: ignore[union-attr]
        if conditions.get("Complete") == "True":
            return
        if conditions.get("Failed") == "True":
            break
        time.sleep(2)
    logs = kubectl.run("logs", "-n", namespace, f"job/{name}", "--all-containers", "--prefix", check=False)
    pods = kubectl.run("get", "pods", "-n", namespace, "-o", "wide", check=False)
    events = kubectl.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
    pytest.fail(f"job {namespace}/{name} did not complete\n{logs}\n{pods}\n{events[-4000:]}", pytrace=False)


def _psql(kubectl: kube.Kubectl, namespace: str, sql: str) -> str:
    out: str = kubectl.run("exec", "-n", namespace, "postgres-0", "--", "sh", "-c",
                           'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                           f"-tAq -c {json.dumps(sql)}", timeout=60)  # fmt: skip
    return out.strip()


def _medusa_pod(kubectl: kube.Kubectl, namespace: str) -> str:
    out = kubectl.run("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=medusa", "-o", "name")
    return out.split()[0].removeprefix("pod/")


def _manual_job(store: Rendered, name: str) -> Manifest:
    """A Job from the CronJob's jobTemplate with BACKUP_KIND=manual: what storeops creates on demand."""
    template = copy.deepcopy(store.one("CronJob", "backup")["spec"]["jobTemplate"])
    for env in template["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"] == "BACKUP_KIND":
            env["value"] = "manual"
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": store.namespace, "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}  # fmt: skip


def test_a_medusa_store_is_backed_up_to_the_add_on_and_restored_into_a_new_namespace(
    cluster: stack.Stack, s3: objectstore.ClusterObjectStore, tmp_path: pathlib.Path
) -> None:
    kubectl = cluster.kubectl
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    old = _render("bk-old", tmp_path, s3)
    _prepare(kubectl, old, s3, volumes)
    kubectl.apply(*_named(old, ("Service", "postgres"), ("StatefulSet", "postgres"), ("Service", "redis"),
                          ("Deployment", "redis"), ("PersistentVolumeClaim", "medusa-uploads"), ("Service", "medusa"),
                          ("CronJob", "backup")))  # fmt: skip
    _wait_ready(kubectl, old.namespace, "postgres")
    kubectl.apply(old.one("Deployment", "medusa"))
    _wait_ready(kubectl, old.namespace, "medusa")
    _psql(kubectl, old.namespace, "CREATE TABLE storeops_check (note text); "
                                  "INSERT INTO storeops_check VALUES ('order 1001: 2 mugs')")  # fmt: skip
    medusa_tables = _psql(kubectl, old.namespace, "SELECT count(*) FROM information_schema.tables "
                                                  "WHERE table_schema = 'public'")  # fmt: skip
    assert int(medusa_tables) > 50, "Medusa's migrations made its tables"
    pod = _medusa_pod(kubectl, old.namespace)
    uploads = "/app/.medusa/server/static"
    kubectl.run("exec", "-n", old.namespace, pod, "--", "sh", "-c",
                f"mkdir -p {uploads}/products && echo mug > {uploads}/products/mug.txt")  # fmt: skip

    kubectl.apply(_manual_job(old, "backup-manual-1"))
    _job_done(kubectl, old.namespace, "backup-manual-1")
    on_host = s3.on_host()
    script = objectstore.client_module()
    keys, _ = on_host.client().list("local/bk-old/")  # type: ignore[attr-defined]
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert len(manifests) == 1, keys
    ident = manifests[0].split("/")[2]
    assert script.BACKUP_ID.match(ident).group("kind") == "manual"
    manifest = json.loads(on_host.client().get_bytes(manifests[0]))  # type: ignore[attr-defined]
    assert manifest["store"] == "bk-old" and manifest["engine"] == "medusa" and manifest["kind"] == "manual"
    assert set(manifest["files"]) == {"database.sql.gz", "files.tar.gz"}

    new = _render("bk-new", tmp_path, s3, restore={"from": f"bk-old/{ident}"})
    _prepare(kubectl, new, s3, volumes)
    # Wave 0 of the sync: the database, Redis, the uploads claim and the restore hook; wave 1: Medusa.
    kubectl.apply(*_named(new, ("Service", "postgres"), ("StatefulSet", "postgres"), ("Service", "redis"),
                          ("Deployment", "redis"), ("PersistentVolumeClaim", "medusa-uploads"), ("Service", "medusa"),
                          ("Job", "restore")))  # fmt: skip
    _job_done(kubectl, new.namespace, "restore")
    kubectl.apply(new.one("Deployment", "medusa"))
    _wait_ready(kubectl, new.namespace, "medusa")
    assert _psql(kubectl, new.namespace, "SELECT note FROM storeops_check") == "order 1001: 2 mugs"
    assert _psql(kubectl, new.namespace, "SELECT count(*) FROM information_schema.tables "
                                         "WHERE table_schema = 'public'") == medusa_tables  # fmt: skip
    pod = _medusa_pod(kubectl, new.namespace)
    assert kubectl.run("exec", "-n", new.namespace, pod, "--", "cat",
                       "/app/.medusa/server/static/products/mug.txt").strip() == "mug"  # fmt: skip

    # The hook again (Argo CD deletes and recreates it on each sync): it finds the marker, loads nothing.
    _psql(kubectl, new.namespace, "INSERT INTO storeops_check VALUES ('order 1002, after the restore')")
    kubectl.run("delete", "-n", new.namespace, "job/restore", "--wait=true", timeout=120)
    kubectl.apply(new.one("Job", "restore"))
    _job_done(kubectl, new.namespace, "restore")
    assert _psql(kubectl, new.namespace, "SELECT count(*) FROM storeops_check") == "2"
    logs = kubectl.run("logs", "-n", new.namespace, "job/restore", "--all-containers")
    assert "already restored" in logs
