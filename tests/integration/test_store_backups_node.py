"""Backup and restore of a store of each engine on the real node, with the chart's own Jobs.

The SeaweedFS add-on (harness/objectstore.py) runs in namespace storeops-backups; per engine, two
stores are applied from `helm template` of its chart with the local images (as
tests/integration/test_store_images.py does, in the order Argo CD's waves and hooks give):

1. the old store, with backups on: credentials, the database, (Redis,) the web component (Medusa and
   its migrations; WordPress, which copies itself onto its content volume), then a row and an uploaded
   file of its own; a manual backup is a Job made from the CronJob's
   jobTemplate with BACKUP_KIND=manual, as storeops makes them. Its pods reach the add-on through
   the store's NetworkPolicies (default-deny ingress, the backup pods' egress policy);
2. a new store in a fresh namespace with restore.from naming that backup: its restore Job (with the
   database, before the web component), then the web component, which waits for the restore marker.
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


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    example: str
    #: Chart value blocks -> local Debian images.
    images: dict[str, str]
    database: str
    web: str
    #: The web container's content volume mount.
    content: str
    #: Objects of wave 0 (with the database), applied before the web Deployment.
    first: tuple[tuple[str, str], ...]
    #: sh -c in the database pod: runs $SQL as the chart's user in the chart's database.
    sql: str


ENGINES = {
    "medusa": Engine(
        name="medusa", example="bookworm", images={"postgres": "postgres", "redis": "redis", "credentials": "python"},
        database="postgres", web="medusa", content="/app/.medusa/server/static",
        first=(("Service", "postgres"), ("StatefulSet", "postgres"), ("Service", "redis"), ("Deployment", "redis"),
               ("PersistentVolumeClaim", "medusa-uploads"), ("Service", "medusa")),
        sql='PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAq -c "$SQL"',
    ),
    "woocommerce": Engine(
        name="woocommerce", example="acme-outdoor",
        images={"mariadb": "mariadb", "wordpress": "wordpress", "credentials": "python"},
        database="mariadb", web="wordpress", content="/var/www/html",
        first=(("Service", "mariadb"), ("StatefulSet", "mariadb"), ("PersistentVolumeClaim", "wordpress-content"),
               ("Service", "wordpress")),
        sql='MYSQL_PWD="$MARIADB_PASSWORD" mariadb -h 127.0.0.1 -u "$MARIADB_USER" -N -B "$MARIADB_DATABASE" -e "$SQL"',
    ),
}  # fmt: skip
JOB_TIMEOUT = 600
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(node_stack: stack.Stack) -> stack.Stack:
    """The node with the store images imported and the StorageClass of the local volumes."""
    assert node_stack.node is not None
    archives = [debian.build(name).image.archive for name in ("postgres", "redis", "python", "mariadb", "wordpress")]
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


def _render(
    engine: Engine, store_id: str, folder: pathlib.Path, s3: objectstore.ClusterObjectStore, **extra: Any
) -> Rendered:
    fleet = operations.load(REPO)
    entry = fleet.stores[f"stores/{engine.example}.yaml"].entry
    assert entry is not None
    model = dataclasses.replace(entry.store, id=store_id)
    values = rendering.values(model, fleet.clusters[model.cluster][0], fleet.plans[model.plan])
    overrides: dict[str, Any] = {
        "persistence": {"storageClassName": STORAGE_CLASS},
        "backup": {
            "enabled": True,
            "s3": {"endpoint": s3.endpoint, "bucket": s3.bucket, "region": s3.region, "prefix": "local"},
            "egress": {"namespace": s3.namespace},
        },
        **extra,
    }
    for block, image in engine.images.items():
        spec = debian.IMAGES[image]
        overrides[block] = {"image": {"repository": spec.ref.rsplit(":", 1)[0], "tag": spec.tag}}
    if engine.name == "medusa":
        overrides["medusa"] = {"image": {"repository": medusa.IMAGE.ref.rsplit(":", 1)[0], "tag": medusa.IMAGE.tag}}
    (folder / f"{store_id}.yaml").write_text(yaml.safe_dump(values))
    (folder / f"{store_id}-local.yaml").write_text(yaml.safe_dump(overrides))
    helm = versions.locate().helm
    out = subprocess.run(
        [str(helm), "template", f"store-{store_id}", str(REPO / "templates" / engine.name), "--namespace",
         model.namespace, "--values", str(folder / f"{store_id}.yaml"), "--values",
         str(folder / f"{store_id}-local.yaml")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    manifests = [d for d in yaml.safe_load_all(out) if d]
    return Rendered(id=store_id, engine=engine.name, namespace=model.namespace, url=str(values["url"]),
                    manifests=manifests)  # fmt: skip


def _named(store: Rendered, *names: tuple[str, str]) -> list[Manifest]:
    return [store.one(kind, name) for kind, name in names]


def _prepare(
    kubectl: kube.Kubectl, engine: Engine, store: Rendered, s3: objectstore.ClusterObjectStore, volumes: pathlib.Path
) -> None:
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
    claims = _claims_of(engine, store)
    kubectl.apply(*[_local_volume(volumes, store.namespace, claim, size) for claim, size in claims])
    kubectl.apply(store.one("ConfigMap", "backup-script"))


def _claims_of(engine: Engine, store: Rendered) -> list[tuple[str, str]]:
    """The content claim and the database's claim (data-<database>-0), with their sizes."""
    template = store.one("StatefulSet", engine.database)["spec"]["volumeClaimTemplates"][0]
    database = f"{template['metadata']['name']}-{engine.database}-0"
    size = template["spec"]["resources"]["requests"]["storage"]
    # The chart renders the database's claim as an object of its own too (the name the StatefulSet gives it).
    content = next(m for m in store.manifests
                   if m["kind"] == "PersistentVolumeClaim" and m["metadata"]["name"] != database)
    return [(content["metadata"]["name"], content["spec"]["resources"]["requests"]["storage"]), (database, size)]


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


def _sql(kubectl: kube.Kubectl, engine: Engine, namespace: str, sql: str) -> str:
    """SQL in the database's pod, as the chart's user (its credentials from the pod's own environment)."""
    out: str = kubectl.run("exec", "-n", namespace, f"{engine.database}-0", "--", "env", f"SQL={sql}", "sh", "-c",
                           engine.sql, timeout=60)  # fmt: skip
    return out.strip()


def _web_pod(kubectl: kube.Kubectl, engine: Engine, namespace: str) -> str:
    out = kubectl.run("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={engine.web}", "-o", "name")
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


def _egress_is_the_endpoint_only(cluster: stack.Stack, store: Rendered, s3: objectstore.ClusterObjectStore) -> None:
    """A pod with the backup pods' label reaches the endpoint and not the ingress controller, which a
    pod of the same namespace without the label does reach: the store's policy `backup-egress`."""
    assert cluster.node is not None
    kubectl = cluster.kubectl
    traefik = kubectl.run("get", "pods", "-n", "traefik", "-o", "jsonpath={.items[0].status.podIP}").strip()
    container = {"name": "probe", "image": cluster.node.images["busybox"], "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"],
                 "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}  # fmt: skip
    security = {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}}
    for name, component in (("egress-backup", "backup"), ("egress-other", "probe")):
        metadata = {"name": name, "namespace": store.namespace, "labels": {"app.kubernetes.io/component": component}}
        kubectl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                       "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                                "securityContext": security, "containers": [container]}})  # fmt: skip
        kubectl.run("wait", "-n", store.namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=120s",
                    timeout=150)  # fmt: skip

    def fetch(pod: str, url: str) -> subprocess.CompletedProcess[str]:
        # busybox's `timeout`: Debian's busybox 1.35 wget crashes with -T.
        argv = ["exec", "-n", store.namespace, pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url]
        return subprocess.run([str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", *argv],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    def reaches(pod: str, url: str) -> None:
        # A new pod's first connections may come before the policy enforcer knows it: retry a little.
        for _ in range(10):
            result = fetch(pod, url)
            if result.returncode == 0:
                return
            time.sleep(3)
        pytest.fail(f"{pod} could not fetch {url}: {result.stdout}{result.stderr}", pytrace=False)

    service = kubectl.run("get", "service", "seaweedfs", "-n", s3.namespace, "-o", "jsonpath={.spec.clusterIP}")
    reaches("egress-backup", f"http://{service.strip()}:{objectstore.S3_PORT}/healthz")
    reaches("egress-other", f"http://{traefik}:8080/ping")  # control: the ingress controller answers
    refused = fetch("egress-backup", f"http://{traefik}:8080/ping")
    assert refused.returncode != 0, refused.stdout
    kubectl.run("delete", "pod", "-n", store.namespace, "egress-backup", "egress-other", "--wait=false")


COUNT_TABLES = {
    "medusa": "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    "woocommerce": "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
}


@pytest.mark.parametrize("engine", [ENGINES["medusa"], ENGINES["woocommerce"]], ids=lambda e: e.name)
def test_a_store_is_backed_up_to_the_add_on_and_restored_into_a_new_namespace(
    cluster: stack.Stack, s3: objectstore.ClusterObjectStore, engine: Engine, tmp_path: pathlib.Path,
    request: pytest.FixtureRequest,
) -> None:
    kubectl = cluster.kubectl
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    short = engine.name[:3]
    # The node has two cores: the other engine's stores go when this one is done.
    namespaces = [f"store-bk-{short}-old", f"store-bk-{short}-new"]
    request.addfinalizer(lambda: kubectl.run("delete", "namespace", *namespaces, "--ignore-not-found", "--wait=true",
                                             timeout=300, check=False))  # fmt: skip
    old = _render(engine, f"bk-{short}-old", tmp_path, s3)
    _prepare(kubectl, engine, old, s3, volumes)
    kubectl.apply(*_named(old, *engine.first, ("CronJob", "backup")))
    _wait_ready(kubectl, old.namespace, engine.database)
    kubectl.apply(old.one("Deployment", engine.web))
    _wait_ready(kubectl, old.namespace, engine.web)
    _sql(kubectl, engine, old.namespace, "CREATE TABLE storeops_check (note text)")
    _sql(kubectl, engine, old.namespace, "INSERT INTO storeops_check VALUES ('order 1001: 2 mugs')")
    tables = _sql(kubectl, engine, old.namespace, COUNT_TABLES[engine.name])
    if engine.name == "medusa":
        assert int(tables) > 50, "Medusa's migrations made its tables"
    pod = _web_pod(kubectl, engine, old.namespace)
    kubectl.run("exec", "-n", old.namespace, pod, "--", "sh", "-c",
                f"mkdir -p {engine.content}/products && echo mug > {engine.content}/products/mug.txt")  # fmt: skip

    kubectl.apply(_manual_job(old, "backup-manual-1"))
    _job_done(kubectl, old.namespace, "backup-manual-1")
    on_host = s3.on_host()
    script = objectstore.client_module()
    keys, _ = on_host.client().list(f"local/{old.id}/")  # type: ignore[attr-defined]
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert len(manifests) == 1, keys
    ident = manifests[0].split("/")[2]
    assert script.BACKUP_ID.match(ident).group("kind") == "manual"
    manifest = json.loads(on_host.client().get_bytes(manifests[0]))  # type: ignore[attr-defined]
    assert manifest["store"] == old.id and manifest["engine"] == engine.name and manifest["kind"] == "manual"
    assert set(manifest["files"]) == {"database.sql.gz", "files.tar.gz"}

    if engine.name == "medusa":
        _egress_is_the_endpoint_only(cluster, old, s3)

    new = _render(engine, f"bk-{short}-new", tmp_path, s3, restore={"from": f"{old.id}/{ident}"})
    _prepare(kubectl, engine, new, s3, volumes)
    # Wave 0 of the sync: the database (and Redis), the content claim and the restore hook; wave 1: the web.
    kubectl.apply(*_named(new, *engine.first, ("Job", "restore")))
    _job_done(kubectl, new.namespace, "restore")
    kubectl.apply(new.one("Deployment", engine.web))
    _wait_ready(kubectl, new.namespace, engine.web)
    assert _sql(kubectl, engine, new.namespace, "SELECT note FROM storeops_check") == "order 1001: 2 mugs"
    assert _sql(kubectl, engine, new.namespace, COUNT_TABLES[engine.name]) == tables
    pod = _web_pod(kubectl, engine, new.namespace)
    uploaded = kubectl.run("exec", "-n", new.namespace, pod, "--", "cat", f"{engine.content}/products/mug.txt")
    assert uploaded.strip() == "mug"

    # The hook again (Argo CD deletes and recreates it on each sync): it finds the marker, loads nothing.
    _sql(kubectl, engine, new.namespace, "INSERT INTO storeops_check VALUES ('order 1002, after the restore')")
    kubectl.run("delete", "-n", new.namespace, "job/restore", "--wait=true", timeout=120)
    kubectl.apply(new.one("Job", "restore"))
    _job_done(kubectl, new.namespace, "restore")
    assert _sql(kubectl, engine, new.namespace, "SELECT count(*) FROM storeops_check") == "2"
    logs = kubectl.run("logs", "-n", new.namespace, "job/restore", "--all-containers")
    assert "already restored" in logs
