"""The validated inputs as typed values: stores, clusters and plans."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from generator import constants

_CPU = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m?)")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?)?")
_MEMORY_FACTORS: dict[str | None, int] = {
    None: 1,
    **{s: 1000 ** (i + 1) for i, s in enumerate("KMGTPE")},
    **{s + "i": 1024 ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def cpu_millis(quantity: str) -> int:
    """``"500m"`` -> 500, ``"2"`` -> 2000."""
    match = _CPU.fullmatch(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a CPU quantity such as 500m or 2")
    number, milli = match.groups()
    return round(float(number)) if milli else round(float(number) * 1000)


def memory_bytes(quantity: str) -> int:
    """``"512Mi"`` -> 536870912, ``"1G"`` -> 10**9."""
    match = _MEMORY.fullmatch(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity such as 512Mi or 4Gi")
    number, suffix = match.groups()
    return round(float(number) * _MEMORY_FACTORS[suffix or None])


@dataclass(frozen=True)
class Owner:
    name: str
    email: str
    github: str | None = None


@dataclass(frozen=True)
class Store:
    id: str
    name: str
    engine: str
    plan: str
    cluster: str
    owner: Owner
    state: str = "active"
    domain: str | None = None
    callback_url: str | None = None
    #: Raised by one for each change of the shop admin's password (``adminPasswordRotation``).
    password_rotation: int = 0
    #: The released chart version the store runs (``templates/releases/<engine>/<version>``); None: the
    #: working chart ``templates/<engine>``, whatever it holds at the branch head.
    chart_version: str | None = None
    #: ``<store id>/<backup id>``: the backup a new store starts from (``restoreFrom``).
    restore_from: str | None = None

    @property
    def namespace(self) -> str:
        return constants.NAMESPACE_PREFIX + self.id

    @property
    def app_name(self) -> str:
        return constants.NAMESPACE_PREFIX + self.id

    @property
    def source(self) -> str:
        return f"{constants.STORES_DIR}/{self.id}{constants.ENTRY_SUFFIX}"

    @property
    def suspended(self) -> bool:
        return self.state == "suspended"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Store:
        owner = data["owner"]
        return cls(
            id=data["id"],
            name=data["name"],
            engine=data["engine"],
            plan=data["plan"],
            cluster=data["cluster"],
            owner=Owner(name=owner["name"], email=owner["email"], github=owner.get("github")),
            state=data.get("state", "active"),
            domain=data.get("domain"),
            callback_url=data.get("callbackUrl"),
            password_rotation=data.get("adminPasswordRotation", 0),
            chart_version=data.get("chartVersion"),
            restore_from=data.get("restoreFrom"),
        )


@dataclass(frozen=True)
class Capacity:
    stores: int
    cpu_millis: int | None = None
    memory_bytes: int | None = None
    #: Most stores one owner may have on the cluster (None: no limit).
    per_owner: int | None = None


@dataclass(frozen=True)
class ImageOverride:
    """A cluster profile's setting for one chart image: its repository, its tag, or both."""

    repository: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Images:
    """A cluster profile's ``images``: a registry mirror prefix and per-image overrides."""

    registry: str | None = None
    #: ``(image key, override)`` pairs sorted by key; the key is the chart component (``mariadb``, ...).
    overrides: tuple[tuple[str, ImageOverride], ...] = ()

    def override(self, key: str) -> ImageOverride | None:
        return dict(self.overrides).get(key)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Images:
        overrides = data.get("overrides", {})
        return cls(
            registry=data.get("registry"),
            overrides=tuple((key, ImageOverride(repository=value.get("repository"), tag=value.get("tag")))
                            for key, value in sorted(overrides.items())),
        )


@dataclass(frozen=True)
class WooCommerce:
    """A cluster profile's ``woocommerce``: settings of the WooCommerce stores on that cluster."""

    #: URL of the plugin zip, ``{version}`` standing for the chart's pinned version; None: the chart's
    #: default (wordpress.org).
    plugin_source: str | None = None

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> WooCommerce:
        return cls(plugin_source=data.get("pluginSource"))


@dataclass(frozen=True)
class Backups:
    """A cluster profile's ``backups``: the S3-compatible store its stores' backups go to."""

    endpoint: str
    bucket: str
    #: ``(namespace, name)`` of the Secret beside storeops with the S3 keys; copied into each store
    #: namespace, never written to Git.
    credentials_secret: tuple[str, str]
    region: str = "us-east-1"
    #: Where the endpoint lives, for the stores' NetworkPolicies: a namespace of the cluster or a CIDR.
    egress_namespace: str | None = None
    egress_cidr: str | None = None
    #: Days a deleted store's final backup is kept.
    final_backup_days: int = 30

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Backups:
        secret = data["credentialsSecret"]
        egress = data.get("egress", {})
        return cls(endpoint=data["endpoint"].rstrip("/"), bucket=data["bucket"],
                   credentials_secret=(secret["namespace"], secret["name"]),
                   region=data.get("region", "us-east-1"), egress_namespace=egress.get("namespace"),
                   egress_cidr=egress.get("cidr"), final_backup_days=data.get("finalBackupDays", 30))


@dataclass(frozen=True)
class Cluster:
    name: str
    argocd_namespace: str
    repo_url: str
    base_domain: str
    ingress_class: str
    capacity: Capacity
    server: str | None = None
    destination_name: str | None = None
    target_revision: str = "main"
    storage_class: str | None = None
    #: Whether the stores' StorageClass can grow a volume in place (its allowVolumeExpansion).
    volume_expansion: bool = False
    tls_issuer: str | None = None
    review: bool = False
    #: Where store images come from; None: the charts' own defaults.
    images: Images | None = None
    #: Namespace of the ingress controller the stores' NetworkPolicies admit; None: the charts' default.
    ingress_controller_namespace: str | None = None
    #: WooCommerce stores' settings (the plugin source); None: the chart's defaults.
    woocommerce: WooCommerce | None = None
    #: Where its stores are backed up; None: they are not.
    backups: Backups | None = None

    @property
    def source(self) -> str:
        return f"{constants.CLUSTERS_DIR}/{self.name}{constants.ENTRY_SUFFIX}"

    def host_for(self, store: Store) -> str:
        return store.domain or f"{store.id}.{self.base_domain}"

    def url_for(self, store: Store) -> str:
        scheme = "https" if self.tls_issuer else "http"
        return f"{scheme}://{self.host_for(store)}"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Cluster:
        capacity = data["capacity"]
        argocd = data["argocd"]
        return cls(
            name=data["name"],
            server=data["destination"].get("server"),
            destination_name=data["destination"].get("name"),
            argocd_namespace=argocd["namespace"],
            repo_url=argocd["repoURL"],
            target_revision=argocd.get("targetRevision", "main"),
            base_domain=data["baseDomain"],
            ingress_class=data["ingressClassName"],
            storage_class=data.get("storageClassName"),
            volume_expansion=data.get("allowVolumeExpansion", False),
            tls_issuer=data.get("tlsIssuer"),
            capacity=Capacity(
                stores=capacity["stores"],
                cpu_millis=cpu_millis(capacity["cpu"]) if "cpu" in capacity else None,
                memory_bytes=memory_bytes(capacity["memory"]) if "memory" in capacity else None,
                per_owner=capacity.get("storesPerOwner"),
            ),
            review=data.get("review", False),
            images=Images.from_data(data["images"]) if "images" in data else None,
            ingress_controller_namespace=data.get("ingressControllerNamespace"),
            woocommerce=WooCommerce.from_data(data["woocommerce"]) if "woocommerce" in data else None,
            backups=Backups.from_data(data["backups"]) if "backups" in data else None,
        )


@dataclass(frozen=True)
class Plan:
    name: str
    cpu: str
    memory: str
    storage: str
    database_volume: str
    content_volume: str
    #: Cron schedule of the scheduled backups (``H`` spread by store id) and how many are kept.
    backup_schedule: str = "H H * * *"
    backup_retention: int = 7

    @property
    def cpu_millis(self) -> int:
        return cpu_millis(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)

    @classmethod
    def from_data(cls, name: str, data: dict[str, Any]) -> Plan:
        return cls(
            name=name,
            cpu=data["cpu"],
            memory=data["memory"],
            storage=data["storage"],
            database_volume=data["volumes"]["database"],
            content_volume=data["volumes"]["content"],
            backup_schedule=data.get("backup", {}).get("schedule", "H H * * *"),
            backup_retention=data.get("backup", {}).get("retention", 7),
        )
