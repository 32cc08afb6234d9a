"""Stores' backups, from the service's side: listing them, taking one now, the keys, and old ones going.

The backups themselves are made in each store's namespace by its chart (``generator.backups``): a
CronJob on the plan's schedule, an Argo CD ``PreDelete`` hook Job as the store is deleted, and a
restore Job in a store that starts from one (``restoreFrom``). Each lands in the cluster profile's
S3-compatible store under ``<cluster>/<store id>/<backup id>/``, its ``manifest.json`` written last: a
backup without one is unfinished and is not listed.

The service's part:

- :class:`Objects` lists a store's backups and removes them (the ``minio`` client: S3 Signature V4
  against any S3-compatible store). Its keys are read from the Secret the profile names
  (``backups.credentialsSecret``), through the Kubernetes API, when needed: they are never in Git or in
  the service's own settings. ``STOREOPS_BACKUP_ENDPOINTS`` (``cluster=url,...``) gives the service its
  own way to the endpoint where it differs from the Pods' (a service outside the cluster).
- :func:`take` starts a backup now: a Job made from the store's ``backup`` CronJob, of kind ``manual``.
- :class:`Keeper` (in the service, every ``STOREOPS_BACKUP_INTERVAL`` seconds) copies the keys into each
  store namespace of a cluster with backups (Secret ``storeops-backup``, made by storeops and never
  written to Git), and removes every backup of a store deleted more than ``finalBackupDays`` ago (its
  newest backup, the final one its deletion took, is older than that).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from generator import backups, constants
from generator.models import Cluster
from webhook.errors import NotFound, NotReady

__all__ = ["Backup", "Keeper", "Objects", "backup_time", "take"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: The keys the Secret carries (the names the AWS tools read from the environment).
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
#: The backup CronJob each chart renders when the store's cluster keeps backups.
CRONJOB = "backup"
#: Marks what storeops itself made in a store namespace.
MANAGED = {constants.LABEL_MANAGED_BY: "storeops"}


@dataclass(frozen=True)
class Backup:
    store: str
    id: str
    kind: str
    created: str
    #: Bytes of its files together.
    size: int
    manifest: Mapping[str, Any]

    @property
    def reference(self) -> str:
        return f"{self.store}/{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reference": self.reference, "kind": self.kind, "created": self.created,
                "size": self.size, "files": sorted(self.manifest.get("files") or {})}


def backup_time(backup_id: str) -> datetime.datetime:
    """When the backup was taken, from its id (``20261127T031700Z-manual``)."""
    return datetime.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


def read_keys(api: client.ApiClient, cluster: Cluster) -> dict[str, bytes]:
    """The S3 keys of the cluster's backups, as the Secret the profile names holds them (base64)."""
    assert cluster.backups is not None
    namespace, name = cluster.backups.credentials_secret
    try:
        secret: Any = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as e:
        if e.status == 404:
            raise NotReady(f"the backups of cluster {cluster.name!r} need the Secret {namespace}/{name} "
                           f"(backups.credentialsSecret in {cluster.source}), which is not there") from e
        raise
    data = secret.data or {}
    missing = [key for key in KEYS if not data.get(key)]
    if missing:
        raise NotReady(f"the Secret {namespace}/{name} has no {', '.join(missing)}")
    return {key: str(data[key]).encode() for key in KEYS}


class Objects:
    """One cluster's backups in its S3-compatible store."""

    def __init__(self, cluster: Cluster, *, api: client.ApiClient, endpoint: str | None = None) -> None:
        if cluster.backups is None:
            raise NotFound(f"cluster {cluster.name!r} keeps no backups (no backups in {cluster.source})")
        self.cluster = cluster
        self.settings = cluster.backups
        keys = {k: base64.b64decode(v).decode() for k, v in read_keys(api, cluster).items()}
        url = urllib.parse.urlsplit(endpoint or self.settings.endpoint)
        self.client = Minio(url.netloc, access_key=keys["AWS_ACCESS_KEY_ID"], secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                            secure=url.scheme == "https", region=self.settings.region,
                            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30),
                                                            retries=urllib3.Retry(total=2, backoff_factor=0.2)))

    def _prefix(self, store_id: str = "") -> str:
        return f"{self.cluster.name}/{store_id}/" if store_id else f"{self.cluster.name}/"

    def of(self, store_id: str) -> list[Backup]:
        """The store's finished backups, newest first."""
        found = []
        for item in self.client.list_objects(self.settings.bucket, prefix=self._prefix(store_id), recursive=True):
            name = item.object_name or ""
            backup_id, _, file = name.removeprefix(self._prefix(store_id)).partition("/")
            if file != MANIFEST or not backups.BACKUP_ID.fullmatch(backup_id):
                continue
            manifest = self._manifest(name)
            if manifest is None:
                continue
            files = manifest.get("files") or {}
            found.append(Backup(store=store_id, id=backup_id, kind=backup_id.partition("-")[2],
                                created=backup_time(backup_id).isoformat().replace("+00:00", "Z"),
                                size=sum(int((f or {}).get("size", 0)) for f in files.values()), manifest=manifest))
        return sorted(found, key=lambda b: b.id, reverse=True)

    def _manifest(self, name: str) -> dict[str, Any] | None:
        try:
            answer = self.client.get_object(self.settings.bucket, name)
            try:
                data = json.loads(answer.read())
            finally:
                answer.close()
                answer.release_conn()
        except (S3Error, ValueError) as e:
            log.warning("backup manifest %s unreadable: %s", name, e)
            return None
        return data if isinstance(data, dict) else None

    def find(self, store_id: str, backup_id: str) -> Backup:
        for backup in self.of(store_id):
            if backup.id == backup_id:
                return backup
        raise NotFound(f"no finished backup {store_id}/{backup_id} on cluster {self.cluster.name!r} "
                       f"(storeops backups {store_id} lists them)")

    def stores(self) -> set[str]:
        """Ids of the stores that have anything in the bucket."""
        out = set()
        for item in self.client.list_objects(self.settings.bucket, prefix=self._prefix(), recursive=False):
            name = (item.object_name or "").removeprefix(self._prefix()).rstrip("/")
            if re.fullmatch(r"[a-z](?:[-a-z0-9]*[a-z0-9])?", name):
                out.add(name)
        return out

    def remove_store(self, store_id: str) -> int:
        """Every object of the store (finished backups or not); how many were removed."""
        names = [item.object_name for item in self.client.list_objects(
            self.settings.bucket, prefix=self._prefix(store_id), recursive=True) if item.object_name]
        errors = list(self.client.remove_objects(self.settings.bucket, (DeleteObject(n) for n in names)))
        if errors:
            raise RuntimeError(f"removing the backups of {store_id}: {errors[0]}")
        return len(names)

    def expired(self, live: Iterable[str], now: datetime.datetime) -> list[str]:
        """Stores gone from Git whose newest object is older than the profile's ``finalBackupDays``."""
        keep = datetime.timedelta(days=self.settings.final_backup_days)
        out = []
        for store_id in sorted(self.stores() - set(live)):
            newest = max((item.last_modified for item in self.client.list_objects(
                self.settings.bucket, prefix=self._prefix(store_id), recursive=True) if item.last_modified),
                default=None)
            if newest is not None and now - newest > keep:
                out.append(store_id)
        return out


def take(api: client.ApiClient, store_id: str, *, kind: str = "manual", now: datetime.datetime | None = None) -> str:
    """Start a backup of the store now: a Job from its ``backup`` CronJob, of ``kind`` (``manual``, or
    ``pre-upgrade`` before a rollout moves the store); its name."""
    if kind not in ("manual", "pre-upgrade", "final"):
        raise ValueError(f"a backup taken now is manual, pre-upgrade or final, not {kind!r}")
    namespace = constants.NAMESPACE_PREFIX + store_id
    batch = client.BatchV1Api(api)
    try:
        cronjob: Any = batch.read_namespaced_cron_job(CRONJOB, namespace)
    except ApiException as e:
        if e.status == 404:
            raise NotReady(f"store {store_id!r} has no backup CronJob yet (its cluster keeps backups once the "
                           f"store's chart is synced with them)") from e
        raise
    at = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dt%H%M%S")
    spec: Any = cronjob.spec.job_template.spec
    for container in [*(spec.template.spec.init_containers or []), *spec.template.spec.containers]:
        for variable in container.env or []:
            if variable.name == "BACKUP_KIND":
                variable.value = kind
                variable.value_from = None
    job: Any = client.V1Job(
        metadata=client.V1ObjectMeta(
            name=f"backup-{kind}-{at}", namespace=namespace,
            labels={**(cronjob.spec.job_template.metadata.labels or {} if cronjob.spec.job_template.metadata
                       else {}), **MANAGED, "storeops.io/backup-kind": kind},
            owner_references=[client.V1OwnerReference(api_version="batch/v1", kind="CronJob",
                                                      name=cronjob.metadata.name, uid=cronjob.metadata.uid)]),
        spec=spec)
    try:
        batch.create_namespaced_job(namespace, job)
    except ApiException as e:
        if e.status == 409:
            raise NotReady(f"a backup of {store_id!r} was started this second already") from e
        raise
    log.info("%s backup of %s started: Job %s/%s", kind, store_id, namespace, job.metadata.name)
    return str(job.metadata.name)


def running_job(api: client.ApiClient, store_id: str, kind: str) -> str | None:
    """A Job of ``kind`` storeops started in the store's namespace that has not finished yet, if any."""
    found: Any = client.BatchV1Api(api).list_namespaced_job(
        constants.NAMESPACE_PREFIX + store_id, label_selector=f"storeops.io/backup-kind={kind}")
    for job in sorted(found.items, key=lambda j: j.metadata.name, reverse=True):
        conditions = (job.status.conditions if job.status else None) or []
        if not any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions):
            return str(job.metadata.name)
    return None


def clear_jobs(api: client.ApiClient, store_id: str) -> None:
    """Remove the store's finished backup Jobs (and their Pods) before its removal: a Pod that mounted the
    content volume, even one that ended, keeps the claim's deletion waiting (pvc-protection), and Argo CD
    waits for the claim before it deletes the rest of the store."""
    # The CronJob's Jobs, and those storeops made from its template.
    for selector in ("app.kubernetes.io/component=backup", "storeops.io/backup-kind"):
        client.BatchV1Api(api).delete_collection_namespaced_job(
            constants.NAMESPACE_PREFIX + store_id, label_selector=selector, propagation_policy="Background")


def job_state(api: client.ApiClient, store_id: str, job: str) -> tuple[str, str]:
    """Where a backup Job is: ``running``, ``done`` or ``failed``, with what its conditions say."""
    try:
        found: Any = client.BatchV1Api(api).read_namespaced_job(job, constants.NAMESPACE_PREFIX + store_id)
    except ApiException as e:
        if e.status == 404:
            return "failed", f"the backup Job {job} is gone"
        raise
    for condition in (found.status.conditions if found.status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return "done", ""
        if condition.type == "Failed":
            return "failed", f"{condition.reason or 'Failed'}: {condition.message or 'the backup Job failed'}"
    return "running", ""


def distribute(api: client.ApiClient, cluster: Cluster, store_ids: Iterable[str]) -> list[str]:
    """Put the cluster's S3 keys into each store's namespace that exists (Secret ``storeops-backup``);
    the namespaces written to. A Secret already holding the keys is left alone."""
    keys = read_keys(api, cluster)
    core = client.CoreV1Api(api)
    written = []
    for store_id in store_ids:
        namespace = constants.NAMESPACE_PREFIX + store_id
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=backups.SECRET_NAME, namespace=namespace,
                                                            labels=dict(MANAGED)),
                               type="Opaque", data={k: v.decode() for k, v in keys.items()})
        try:
            current: Any = core.read_namespaced_secret(backups.SECRET_NAME, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            current = None
        if current is not None:
            if {k: str((current.data or {}).get(k, "")).encode() for k in KEYS} == keys:
                continue
            core.replace_namespaced_secret(backups.SECRET_NAME, namespace, body)
        else:
            try:
                core.create_namespaced_secret(namespace, body)
            except ApiException as e:
                if e.status in (404, 403):  # no namespace yet (or it is going): the next pass
                    continue
                if e.status != 409:
                    raise
        written.append(namespace)
    return written


class Keeper:
    """Keys into store namespaces, and deleted stores' backups out after their time (see the module)."""

    def __init__(self, *, api: client.ApiClient, fleet: Callable[[], tuple[Mapping[str, Cluster], Mapping[str, str]]],
                 interval: float, endpoints: Mapping[str, str],
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        self.api = api
        #: () -> (clusters by name, cluster name by store id), as Git has them.
        self.fleet = fleet
        self.interval = interval
        self.endpoints = endpoints
        self.clock = clock

    def objects(self, cluster: Cluster) -> Objects:
        return Objects(cluster, api=self.api, endpoint=self.endpoints.get(cluster.name))

    def once(self) -> dict[str, list[str]]:
        """One pass over every cluster with backups: {"keys": namespaces written, "removed": stores}."""
        clusters, stores = self.fleet()
        out: dict[str, list[str]] = {"keys": [], "removed": []}
        for cluster in clusters.values():
            if cluster.backups is None:
                continue
            mine = sorted(s for s, c in stores.items() if c == cluster.name)
            try:
                out["keys"] += distribute(self.api, cluster, mine)
                objects = self.objects(cluster)
                for store_id in objects.expired(mine, self.clock()):
                    count = objects.remove_store(store_id)
                    log.info("backups of deleted store %s removed (%d objects): older than %d days", store_id,
                             count, cluster.backups.final_backup_days)
                    out["removed"].append(store_id)
            except (NotReady, ApiException, S3Error, urllib3.exceptions.HTTPError, RuntimeError) as e:
                log.warning("backups of cluster %s: %s", cluster.name, e)
        return out

    async def run(self, *, stop: anyio.Event) -> None:
        while not stop.is_set():
            await anyio.to_thread.run_sync(self.once)
            with anyio.move_on_after(self.interval):
                await stop.wait()

