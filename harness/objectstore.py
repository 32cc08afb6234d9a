"""A real S3-compatible object store for store backups: SeaweedFS (``weed mini``, Apache-2.0).

Built by build.sh from its Go module (harness/gomod/seaweedfs) into
``<cache>/bin/seaweedfs-<SEAWEEDFS_VERSION>/weed``. Two ways to run it, each with one bucket
(BUCKET, made at its start) and one identity whose keys are random for each start (nothing fixed is
a secret anywhere):

* ``start()``: a host process on 127.0.0.1 with a fresh folder, for the backup script's tests;
* ``deploy()``: an add-on Pod on the real node (namespace NAMESPACE, Service ``seaweedfs`` port
  S3_PORT) from a local image of the same binary, as harness/addons.py runs CoreDNS and Traefik. Its
  keys are in the Secret CREDENTIALS_SECRET of that namespace (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY: what a store's backup Secret holds, so storeops can copy them); the host
  reaches it on 127.0.0.1:<host_port> too (a hostPort on loopback), to look at what stores uploaded.

The S3 client is the charts' own (templates/storeops-lib/files/backup.py, standard library only).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib.util
import json
import logging
import pathlib
import secrets
import socket
import sys
import types
from collections.abc import Callable, Iterator

from harness import addon_manifests, errors, images, kube, processes, versions

__all__ = [
    "BUCKET",
    "CREDENTIALS_SECRET",
    "NAMESPACE",
    "REGION",
    "S3_PORT",
    "ClusterObjectStore",
    "ObjectStore",
    "binary",
    "client_module",
    "deploy",
    "s3_config",
    "start",
]

logger = logging.getLogger(__name__)

BUCKET = "storeops-backups"
REGION = "us-east-1"
NAMESPACE = addon_manifests.OBJECT_STORE_NAMESPACE
S3_PORT = addon_manifests.OBJECT_STORE_S3_PORT
CREDENTIALS_SECRET = addon_manifests.OBJECT_STORE_SECRET
BACKUP_SCRIPT = versions.HARNESS_DIR.parent / "templates" / "storeops-lib" / "files" / "backup.py"
STARTUP_TIMEOUT = 90.0


def binary(*, cache: pathlib.Path | None = None) -> pathlib.Path:
    """The built ``weed``, or MissingBinariesError saying how to build it."""
    v = versions.read_versions()
    path = (cache or versions.cache_dir()) / "bin" / f"seaweedfs-{v.seaweedfs}" / "weed"
    if not path.is_file():
        raise errors.MissingBinariesError(f"{path} is missing: run `{versions.BUILD_COMMAND}`")
    return path


def client_module() -> types.ModuleType:
    """templates/storeops-lib/files/backup.py as a module (its S3 client, its commands)."""
    name = "storeops_backup_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BACKUP_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def s3_config(access_key: str, secret_key: str) -> str:
    """SeaweedFS's static identities file (-s3.config): one identity with every action."""
    identity = {
        "name": "storeops",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=2) + "\n"


def mini_args(*, data: str, s3_config_path: str, ports: dict[str, int], bind: str) -> list[str]:
    """``weed mini`` with the S3 gateway only on what it must open (no WebDAV, Iceberg, Lance, admin UI)."""
    return [
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        f"-ip.bind={bind}",
        f"-s3.config={s3_config_path}",
        f"-bucket={BUCKET}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-admin.port={ports['admin']}",
    ]


@dataclasses.dataclass
class ObjectStore:
    """A running S3 endpoint, its bucket and keys."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = REGION
    process: processes.Process | None = None

    def client(self, *, secret_key: str | None = None) -> object:
        """The backup script's S3 client for the bucket (another secret key: to see it refused)."""
        module = client_module()
        return module.S3(endpoint=self.endpoint, bucket=self.bucket, access_key=self.access_key,
                         secret_key=secret_key or self.secret_key, region=self.region)  # fmt: skip

    def env(self, *, prefix: str = "") -> dict[str, str]:
        """What the backup script reads to reach this bucket."""
        return {
            "S3_ENDPOINT": self.endpoint,
            "S3_BUCKET": self.bucket,
            "S3_REGION": self.region,
            "S3_PREFIX": prefix,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _free_port_with_grpc() -> int:
    """A loopback port free now whose +10000 twin (SeaweedFS's default gRPC port) is free too."""
    for _ in range(200):
        port = processes.free_port()
        if port + 10000 > 65535:
            continue
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", port + 10000))
            return port
    raise errors.StartupError("no free loopback port pair (p, p+10000) for SeaweedFS")


def _bucket_answers(store: ObjectStore) -> bool:
    try:
        store.client().list("", delimiter="/")  # type: ignore[attr-defined]
    except client_module().BackupError:
        return False
    return True


def start(*, directory: pathlib.Path, timeout: float = STARTUP_TIMEOUT) -> ObjectStore:
    """SeaweedFS on 127.0.0.1 with a fresh data folder under `directory`, random keys and BUCKET made."""
    data = directory / "data"
    data.mkdir(parents=True)
    access_key, secret_key = "storeops-" + secrets.token_hex(6), secrets.token_urlsafe(24)
    config = directory / "s3.json"
    config.write_text(s3_config(access_key, secret_key))
    config.chmod(0o600)
    ports: dict[str, int] = {}
    while len(ports) < 5:
        port = _free_port_with_grpc()
        if port not in ports.values() and port + 10000 not in ports.values():
            ports[("master", "volume", "filer", "s3", "admin")[len(ports)]] = port
    process = processes.spawn(
        "seaweedfs", [str(binary()), *mini_args(data=str(data), s3_config_path=str(config), ports=ports,
                                                bind="127.0.0.1")],
        log_dir=directory, tie_to_parent=True,
    )  # fmt: skip
    store = ObjectStore(endpoint=f"http://127.0.0.1:{ports['s3']}", bucket=BUCKET, access_key=access_key,
                        secret_key=secret_key, process=process)  # fmt: skip
    try:
        processes.wait_until(f"SeaweedFS's bucket {BUCKET} at {store.endpoint}", lambda: _bucket_answers(store),
                             timeout=timeout, interval=0.5, process=process)  # fmt: skip
    except errors.StartupError:
        process.stop()
        raise
    logger.info("SeaweedFS S3 at %s (bucket %s), data in %s", store.endpoint, BUCKET, data)
    return store


@contextlib.contextmanager
def running(*, directory: pathlib.Path) -> Iterator[ObjectStore]:
    store = start(directory=directory)
    try:
        yield store
    finally:
        store.stop()


# --- the add-on on the real node ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClusterObjectStore:
    """The add-on: where store pods reach it, where the host does, and its keys."""

    #: In-cluster endpoint, for the charts' backup.s3.endpoint.
    endpoint: str
    namespace: str
    bucket: str
    access_key: str
    secret_key: str
    #: The same server from the host: http://127.0.0.1:<port>.
    host_endpoint: str
    region: str = REGION

    def on_host(self) -> ObjectStore:
        return ObjectStore(endpoint=self.host_endpoint, bucket=self.bucket, access_key=self.access_key,
                           secret_key=self.secret_key, region=self.region)  # fmt: skip


def deploy(
    *,
    kubectl: kube.Kubectl,
    ctr: Callable[..., str],
    node_selector: dict[str, str],
    timeout: float = 180.0,
) -> ClusterObjectStore:
    """Run the add-on on the node (or find it running): import its image, apply it, wait for its bucket."""
    existing = kubectl.get("secret", CREDENTIALS_SECRET, namespace=NAMESPACE)
    if existing is not None:
        data = existing["data"]
        assert isinstance(data, dict)
        access_key = base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode()
        secret_key = base64.b64decode(data["AWS_SECRET_ACCESS_KEY"]).decode()
        service = kubectl.get("deployment", "seaweedfs", namespace=NAMESPACE)
        assert service is not None, f"secret {CREDENTIALS_SECRET} in {NAMESPACE} but no Deployment seaweedfs"
        host_port = addon_manifests.object_store_host_port(service)
    else:
        access_key, secret_key = "storeops-" + secrets.token_hex(6), secrets.token_urlsafe(24)
        host_port = processes.free_port()
    v = versions.read_versions()
    image = images.static_binary("seaweedfs", binary(), version=v.seaweedfs)
    ctr("images", "import", str(image.archive), timeout=300)
    kubectl.apply(*addon_manifests.object_store(
        image.ref, node_selector=node_selector, host_port=host_port, bucket=BUCKET,
        access_key=access_key, secret_key=secret_key, s3_config=s3_config(access_key, secret_key),
    ))  # fmt: skip
    store = ClusterObjectStore(
        endpoint=f"http://seaweedfs.{NAMESPACE}.svc.{addon_manifests.CLUSTER_DOMAIN}:{S3_PORT}",
        namespace=NAMESPACE, bucket=BUCKET, access_key=access_key, secret_key=secret_key,
        host_endpoint=f"http://127.0.0.1:{host_port}",
    )  # fmt: skip
    on_host = store.on_host()
    try:
        processes.wait_until(f"the SeaweedFS add-on's bucket {BUCKET} (from the host: {store.host_endpoint})",
                             lambda: _bucket_answers(on_host), timeout=timeout, interval=1.0)  # fmt: skip
    except errors.StartupError as e:
        raise errors.StartupError(f"{e}\n{_describe(kubectl)}") from e
    logger.info("SeaweedFS add-on ready: %s (host %s), bucket %s", store.endpoint, store.host_endpoint, BUCKET)
    return store


def _describe(kubectl: kube.Kubectl) -> str:
    """The add-on's pods, events and logs, for an error that says why it did not answer."""
    out = []
    for args in (("get", "pods,services,endpointslices", "-n", NAMESPACE, "-o", "wide"),
                 ("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp"),
                 ("logs", "-n", NAMESPACE, "deployment/seaweedfs", "--all-containers", "--tail=40")):
        try:
            out.append(kubectl.run(*args))
        except errors.HarnessError as e:
            out.append(f"kubectl {' '.join(args)}: {e}")
    return "\n".join(out)
