"""The stores' local images (harness/images/debian.py) under the charts' own manifests, on the real node.

Each image is built (or taken from the cache) and imported into the node's containerd; the charts are
rendered by the real helm with the generator's values for two example stores (acme-outdoor,
WooCommerce; bookworm, Medusa) and the local images; the credentials hook Job, the databases, the
cache and the web server are applied as rendered (users, read-only root filesystems, dropped
capabilities, probes, volumes) and must become Ready through the charts' own probes. Then clients on
the pod network log in with the chart's users. The chart's data volumes are local PersistentVolumes
made here (the node stack has no StorageClass), so the chart's fsGroup applies to them as it would to
a cloud disk. Nothing is sent beyond the pod network.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import pathlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from generator import operations, rendering
from harness import errors, node, stack, versions
from harness.images import debian

pytestmark = pytest.mark.node

logger = logging.getLogger(__name__)

REPO = pathlib.Path(__file__).resolve().parents[2]
STORAGE_CLASS = "storeops-test-local"
#: Chart value blocks -> the local image each one gets.
CHART_IMAGES = {"mariadb": "mariadb", "wordpress": "wordpress", "postgres": "postgres", "redis": "redis",
                "credentials": "python"}  # fmt: skip
#: What of each chart is applied: the credentials hook and the workloads these images run.
CREDENTIALS = {("ServiceAccount", "credentials-writer"), ("Role", "credentials-writer"),
               ("RoleBinding", "credentials-writer"), ("ConfigMap", "credentials-writer")}  # fmt: skip
WORKLOADS = {
    "woocommerce": {("Service", "mariadb"), ("StatefulSet", "mariadb"), ("Service", "wordpress"),
                    ("PersistentVolumeClaim", "wordpress-content"), ("Deployment", "wordpress")},
    "medusa": {("Service", "postgres"), ("StatefulSet", "postgres"), ("Service", "redis"), ("Deployment", "redis")},
}  # fmt: skip
READY_TIMEOUT = 600
WHO_AM_I = "SELECT current_user, current_database(), rolsuper FROM pg_roles WHERE rolname = current_user"
Manifest = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Store:
    id: str
    engine: str
    namespace: str
    url: str
    manifests: list[Manifest]

    def one(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name} in {self.id}: {len(found)}"
        return found[0]


@pytest.fixture(scope="module")
def built() -> dict[str, debian.Built]:
    return debian.build_all()


@pytest.fixture(scope="module")
def imported(node_stack: stack.Stack, built: dict[str, debian.Built]) -> dict[str, debian.Built]:
    assert node_stack.node is not None
    snapshots = node_stack.node.directory / "containerd" / "root"
    for name, image in built.items():
        before = _disk_usage(snapshots)
        started = time.monotonic()
        node_stack.node.ctr("images", "import", str(image.image.archive), timeout=900)
        logger.info(
            "image %s: %s in %.1fs (mmdebstrap %.1fs), archive %.0f MB, imported in %.1fs, containerd +%.0f MB",
            name, "cached" if image.cached else "built", image.seconds, image.rootfs_seconds,
            image.image.archive.stat().st_size / 1e6, time.monotonic() - started,
            (_disk_usage(snapshots) - before) / 1e6,
        )  # fmt: skip
    return built


def _disk_usage(folder: pathlib.Path) -> int:
    """Bytes of the files under `folder` (hard links once), as du counts them."""
    out = subprocess.run(["du", "-s", "-B1", str(folder)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _render(store_id: str, helm: pathlib.Path, folder: pathlib.Path) -> Store:
    """helm template of the store's chart with the generator's values and the local images."""
    fleet = operations.load(REPO)
    store_file = fleet.stores[f"stores/{store_id}.yaml"]
    entry = store_file.entry
    assert entry is not None, store_file.problems
    model = entry.store
    cluster, plan = fleet.clusters[model.cluster][0], fleet.plans[model.plan]
    values = rendering.values(model, cluster, plan)
    overrides: dict[str, Any] = {"persistence": {"storageClassName": STORAGE_CLASS}}
    chart_values = yaml.safe_load((REPO / "templates" / model.engine / "values.yaml").read_text())
    for block, image in CHART_IMAGES.items():
        if block not in chart_values:
            continue
        spec = debian.IMAGES[image]
        overrides[block] = {"image": {"repository": spec.ref.rsplit(":", 1)[0], "tag": spec.tag}}
    (folder / f"{store_id}.yaml").write_text(yaml.safe_dump(values))
    (folder / f"{store_id}-local.yaml").write_text(yaml.safe_dump(overrides))
    namespace = model.namespace
    result = subprocess.run(
        [str(helm), "template", f"store-{store_id}", str(REPO / "templates" / model.engine), "--namespace", namespace,
         "--values", str(folder / f"{store_id}.yaml"), "--values", str(folder / f"{store_id}-local.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Store(id=store_id, engine=model.engine, namespace=namespace, url=str(values["url"]), manifests=manifests)


def _local_volume(root: pathlib.Path, namespace: str, claim: str, size: str) -> Manifest:
    """A PersistentVolume on a root-owned folder of the node, for one claim of the chart."""
    path = root / f"{namespace}-{claim}"
    path.mkdir(parents=True)
    path.chmod(0o755)
    selector = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.NAME]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {"namespace": namespace, "name": claim},
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [selector]}]}},
        },
    }


def _claims(store: Store) -> list[tuple[str, str]]:
    claims = []
    for manifest in store.manifests:
        if (manifest["kind"], manifest["metadata"]["name"]) not in WORKLOADS[store.engine]:
            continue
        if manifest["kind"] == "PersistentVolumeClaim":
            claims.append((manifest["metadata"]["name"], manifest["spec"]["resources"]["requests"]["storage"]))
        for template in manifest.get("spec", {}).get("volumeClaimTemplates", []):
            name = f"{template['metadata']['name']}-{manifest['metadata']['name']}-0"
            claims.append((name, template["spec"]["resources"]["requests"]["storage"]))
    return claims


def _wait_ready(kubectl: Any, namespace: str, component: str) -> None:
    selector = f"app.kubernetes.io/component={component}"
    kubectl.wait_for(
        f"a {component} pod in {namespace}",
        lambda: bool(_pods(kubectl, namespace, selector)),
        timeout=120, interval=1,
    )  # fmt: skip
    try:
        kubectl.run("wait", "-n", namespace, "--for=condition=Ready", "pod", "-l", selector,
                    f"--timeout={READY_TIMEOUT}s", timeout=READY_TIMEOUT + 30)  # fmt: skip
    except errors.CommandError as e:
        # Say why: the pods, the claims and volumes, the events, the pod's logs.
        seen = [kubectl.run("get", "pods,pvc,pv", "-n", namespace, "-o", "wide", check=False),
                kubectl.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False),
                kubectl.run("logs", "-n", namespace, "-l", selector, "--all-containers", "--tail=60", check=False)]
        raise AssertionError(f"{e}\n" + "\n".join(str(s) for s in seen)) from e


def _pods(kubectl: Any, namespace: str, selector: str) -> list[str]:
    out: str = kubectl.run("get", "pods", "-n", namespace, "-l", selector, "-o", "name")
    return out.split()


def _configmap_exists(kubectl: Any, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: kubectl.get("configmap", name, namespace=namespace) is not None


def _cluster_dns(kubectl: Any) -> bool:
    """Whether the node stack runs cluster DNS (harness/addons.py): Services are then found by name."""
    return kubectl.get("service", "kube-dns", namespace="kube-system") is not None


def _pod_ip(kubectl: Any, namespace: str, name: str) -> str:
    pod = kubectl.get("pod", name, namespace=namespace)
    assert pod is not None
    return str(pod["status"]["podIP"])


def _client(namespace: str, name: str, image: str, user: int, env: list[Manifest]) -> Manifest:
    """A client Pod with a store image, its entrypoint bypassed (sleep), as restricted as the charts'."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                "env": env,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip


def _secret_env(env: str, key: str) -> Manifest:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": "store-credentials", "key": key}}}


def _exec(kubectl: Any, namespace: str, pod: str, *argv: str) -> str:
    out: str = kubectl.run("exec", "-n", namespace, pod, "--", *argv, timeout=120)
    return out


@pytest.fixture(scope="module")
def stores(
    node_stack: stack.Stack, imported: dict[str, debian.Built], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Store]:
    """Both example stores applied: credentials first (as the PreSync hook), then the workloads."""
    kubectl = node_stack.kubectl
    helm = versions.locate().helm
    folder = tmp_path_factory.mktemp("store-values")
    volumes = tmp_path_factory.mktemp("store-volumes")
    rendered = {engine: _render(store_id, helm, folder) for engine, store_id in
                (("woocommerce", "acme-outdoor"), ("medusa", "bookworm"))}  # fmt: skip
    kubectl.apply({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
    })  # fmt: skip
    for store in rendered.values():
        kinds = {"Namespace", "ResourceQuota", "LimitRange"}
        kubectl.apply(*[m for m in store.manifests if m["kind"] in kinds])
        kubectl.wait_for(
            f"kube-root-ca.crt in {store.namespace}",
            _configmap_exists(kubectl, store.namespace, "kube-root-ca.crt"),
            timeout=60, interval=0.5,
        )  # fmt: skip
        kubectl.apply(*[m for m in store.manifests if (m["kind"], m["metadata"]["name"]) in CREDENTIALS])
        kubectl.apply(store.one("Job", "credentials"))
    for store in rendered.values():
        kubectl.run("wait", "-n", store.namespace, "--for=condition=Complete", "job/credentials", "--timeout=300s",
                    timeout=330)  # fmt: skip
        kubectl.apply(*[_local_volume(volumes, store.namespace, claim, size) for claim, size in _claims(store)])
        workloads = [m for m in store.manifests if (m["kind"], m["metadata"]["name"]) in WORKLOADS[store.engine]]
        if store.engine == "woocommerce":
            # WordPress starts after MariaDB (an Argo CD sync wave in the chart).
            kubectl.apply(*[m for m in workloads if m["kind"] != "Deployment"])
            _wait_ready(kubectl, store.namespace, "mariadb")
            wordpress = store.one("Deployment", "wordpress")
            if not _cluster_dns(kubectl):
                # No cluster DNS on this node yet: the chart's WORDPRESS_DB_HOST (mariadb:3306) is
                # resolved through /etc/hosts instead, to the (headless) Service's pod.
                address = _pod_ip(kubectl, store.namespace, "mariadb-0")
                wordpress["spec"]["template"]["spec"]["hostAliases"] = [{"ip": address, "hostnames": ["mariadb"]}]
            kubectl.apply(wordpress)
        else:
            kubectl.apply(*workloads)
    return rendered


def test_images_are_named_and_labelled_with_their_debian_versions(built: dict[str, debian.Built]) -> None:
    refs = {b.image.ref for b in built.values()}
    assert refs == {"storeops.local/mariadb:11.8-trixie", "storeops.local/postgres:17-trixie",
                    "storeops.local/redis:8.0-trixie", "storeops.local/wordpress:6.8-apache-trixie",
                    "storeops.local/python:3.13-trixie"}  # fmt: skip
    assert built["mariadb"].packages["mariadb-server"].startswith("1:11.8.")
    assert built["postgres"].packages["postgresql-17"].startswith("17.")
    assert built["redis"].packages["redis-server"].startswith("5:8.0.")
    assert built["wordpress"].packages["wordpress"].startswith("6.8.")
    assert built["python"].packages["python3"].startswith("3.13.")
    # Built once: a second call finds every archive in the cache.
    again = debian.build("redis")
    assert again.cached and again.image.archive == built["redis"].image.archive


def test_credentials_job_runs_on_the_python_image(node_stack: stack.Stack, stores: dict[str, Store]) -> None:
    for store in stores.values():
        secret = node_stack.kubectl.get("secret", "store-credentials", namespace=store.namespace)
        assert secret is not None
        data: dict[str, str] = secret["data"]  # type: ignore[assignment]
        env = {e["name"]: e.get("value") for e in store.one("Job", "credentials")["spec"]["template"]["spec"][
            "containers"][0]["env"]}  # fmt: skip
        assert sorted(data) == sorted(str(env["SECRET_KEYS"]).split())
        assert all(len(base64.b64decode(v)) >= 32 for v in data.values())


def test_mariadb_is_ready_and_the_chart_user_logs_in(node_stack: stack.Stack, stores: dict[str, Store]) -> None:
    kubectl, store = node_stack.kubectl, stores["woocommerce"]
    _wait_ready(kubectl, store.namespace, "mariadb")
    env = {e["name"]: e.get("value") for e in store.one("StatefulSet", "mariadb")["spec"]["template"]["spec"][
        "containers"][0]["env"]}  # fmt: skip
    image = debian.IMAGES["mariadb"].ref
    kubectl.apply(
        _client(store.namespace, "mariadb-client", image, 999, [_secret_env("MYSQL_PWD", "mariadb-password")])
    )
    kubectl.run("wait", "-n", store.namespace, "--for=condition=Ready", "pod/mariadb-client", "--timeout=120s",
                timeout=150)  # fmt: skip
    address = _pod_ip(kubectl, store.namespace, "mariadb-0")
    answer = _exec(kubectl, store.namespace, "mariadb-client", "mariadb", f"--host={address}",
                   f"--user={env['MARIADB_USER']}", "--batch", "--skip-column-names", str(env["MARIADB_DATABASE"]),
                   "-e", "SELECT CURRENT_USER(), DATABASE()")  # fmt: skip
    assert answer.split() == [f"{env['MARIADB_USER']}@%", env["MARIADB_DATABASE"]]
    # The probes' account and check, as the kubelet runs them.
    assert _exec(kubectl, store.namespace, "mariadb-0", "healthcheck.sh", "--connect", "--innodb_initialized") == ""


def test_wordpress_is_ready_and_serves_the_login_page(node_stack: stack.Stack, stores: dict[str, Store]) -> None:
    kubectl, store = node_stack.kubectl, stores["woocommerce"]
    _wait_ready(kubectl, store.namespace, "wordpress")
    assert node_stack.node is not None
    pod = _pods(kubectl, store.namespace, "app.kubernetes.io/component=wordpress")[0].removeprefix("pod/")
    address = _pod_ip(kubectl, store.namespace, pod)
    # wp-config.php from the environment: the key placeholders replaced, WORDPRESS_CONFIG_EXTRA run.
    config = _exec(kubectl, store.namespace, pod, "cat", "/var/www/html/wp-config.php")
    assert "put your unique phrase here" not in config and "WORDPRESS_CONFIG_EXTRA" in config
    busybox = node_stack.node.images["busybox"]
    client = _client(store.namespace, "web-client", busybox, 65534, [])
    client["spec"]["containers"][0]["command"] = ["sleep", "3600"]
    kubectl.apply(client)
    kubectl.run("wait", "-n", store.namespace, "--for=condition=Ready", "pod/web-client", "--timeout=120s",
                timeout=150)  # fmt: skip
    # Install WordPress through its installer (as the setup Job's wp-cli would), then the login page.
    form = "weblog_title=Acme&user_name=admin&admin_password=Xx-test-123456&admin_password2=Xx-test-123456" \
           "&pw_weak=1&admin_email=jane%40acme-outdoor.example&blog_public=0"  # fmt: skip
    _exec(kubectl, store.namespace, "web-client", "timeout", "120", "wget", "-q", "-O", "/dev/null",
          "--post-data", form, f"http://{address}/wp-admin/install.php?step=2")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        answer = _exec(kubectl, store.namespace, "web-client", "sh", "-c",
                       f"timeout 30 wget -S -O - http://{address}/wp-login.php 2>&1")  # fmt: skip
        status = next((line.strip() for line in answer.splitlines() if line.strip().startswith("HTTP/")), "")
        if status == "HTTP/1.1 200 OK" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status == "HTTP/1.1 200 OK", answer[:2000]
    assert 'id="loginform"' in answer, answer[:2000]
    assert store.url in answer  # WP_HOME from WORDPRESS_CONFIG_EXTRA


def test_postgres_is_ready_and_the_chart_user_connects(node_stack: stack.Stack, stores: dict[str, Store]) -> None:
    kubectl, store = node_stack.kubectl, stores["medusa"]
    _wait_ready(kubectl, store.namespace, "postgres")
    env = {e["name"]: e.get("value") for e in store.one("StatefulSet", "postgres")["spec"]["template"]["spec"][
        "containers"][0]["env"]}  # fmt: skip
    image = debian.IMAGES["postgres"].ref
    kubectl.apply(_client(store.namespace, "postgres-client", image, 999,
                          [_secret_env("PGPASSWORD", "postgres-password")]))  # fmt: skip
    kubectl.run("wait", "-n", store.namespace, "--for=condition=Ready", "pod/postgres-client", "--timeout=120s",
                timeout=150)  # fmt: skip
    address = _pod_ip(kubectl, store.namespace, "postgres-0")
    answer = _exec(kubectl, store.namespace, "postgres-client", "psql", f"--host={address}",
                   f"--username={env['POSTGRES_USER']}", f"--dbname={env['POSTGRES_DB']}", "--no-psqlrc", "-tAc",
                   WHO_AM_I)  # fmt: skip
    assert answer.strip() == f"{env['POSTGRES_USER']}|{env['POSTGRES_DB']}|t"


def test_redis_is_ready_and_answers_ping(node_stack: stack.Stack, stores: dict[str, Store]) -> None:
    kubectl, store = node_stack.kubectl, stores["medusa"]
    _wait_ready(kubectl, store.namespace, "redis")
    pod = _pods(kubectl, store.namespace, "app.kubernetes.io/component=redis")[0].removeprefix("pod/")
    address = _pod_ip(kubectl, store.namespace, pod)
    kubectl.apply(_client(store.namespace, "redis-client", debian.IMAGES["redis"].ref, 999, []))
    kubectl.run("wait", "-n", store.namespace, "--for=condition=Ready", "pod/redis-client", "--timeout=120s",
                timeout=150)  # fmt: skip
    assert _exec(kubectl, store.namespace, "redis-client", "redis-cli", "-h", address, "ping").strip() == "PONG"
