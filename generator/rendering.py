"""Rendering: a validated store and its cluster profile and plan become Argo CD objects and values.

Pure functions; nothing here reads or writes files. Output paths are relative to the repo root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from generator import backups, constants, destinations, emitting, images, releases
from generator.models import Backups, Cluster, Plan, Store


def app_path(cluster: str, store_id: str) -> str:
    return f"{constants.RENDERED_DIR}/{cluster}/{constants.APPS_SUBDIR}/{store_id}{constants.ENTRY_SUFFIX}"


def values_path(cluster: str, store_id: str) -> str:
    return f"{constants.RENDERED_DIR}/{cluster}/{constants.VALUES_SUBDIR}/{store_id}{constants.ENTRY_SUFFIX}"


def chart_path(engine: str) -> str:
    return f"{constants.TEMPLATES_DIR}/{engine}"


def store_chart_path(store: Store) -> str:
    """The chart the store renders from: its release's snapshot, or the working chart when it names none."""
    return releases.chart_dir(store.engine, store.chart_version) if store.chart_version else chart_path(store.engine)


def manifest_paths(store: Store, values_file: str) -> list[str]:
    """What the store's manifests are generated from (Argo CD's ``manifest-generate-paths``): a push that
    touches none of these does not make Argo CD render the store again.

    A pinned store names its release's folder (chart and library, never changed once released); an
    unpinned one the working chart and the library it follows.
    """
    charts = [releases.release_dir(store.engine, store.chart_version)] if store.chart_version \
        else [chart_path(store.engine), constants.LIBRARY_CHART]
    return [f"/{path}" for path in (*charts, values_file, constants.PLANS_FILE)]


def chart_values_path(engine: str) -> str:
    """The chart's default values: where its images' default repositories and tags are read from."""
    return f"{chart_path(engine)}/{constants.CHART_VALUES_FILE}"


def labels(store: Store) -> dict[str, str]:
    """Recommended Kubernetes labels plus the storeops labels to select stores by."""
    out = {
        constants.LABEL_NAME: store.engine,
        constants.LABEL_INSTANCE: store.app_name,
        constants.LABEL_PART_OF: constants.PART_OF,
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_COMPONENT: "store",
        constants.LABEL_STORE: store.id,
        constants.LABEL_ENGINE: store.engine,
        constants.LABEL_CLUSTER: store.cluster,
        constants.LABEL_PLAN: store.plan,
        constants.LABEL_STATE: store.state,
    }
    if store.owner.github:
        # GitHub logins are case-insensitive; labels are compared exactly.
        out[constants.LABEL_OWNER] = store.owner.github.lower()
    return out


def values(store: Store, cluster: Cluster, plan: Plan,
           chart_images: Mapping[str, images.Image] | None = None) -> dict[str, Any]:
    """The Helm values for the store's chart: the contract between generator and charts.

    ``chart_images`` are the chart's default images (see :mod:`generator.images`); the profile's
    registry mirror needs them, its overrides do not.
    """
    owner: dict[str, Any] = {"name": store.owner.name, "email": store.owner.email}
    if store.owner.github:
        owner["github"] = store.owner.github
    tls: dict[str, Any] = {"enabled": cluster.tls_issuer is not None}
    if cluster.tls_issuer:
        tls["issuer"] = cluster.tls_issuer
    persistence: dict[str, Any] = {
        "database": {"size": plan.database_volume},
        "content": {"size": plan.content_volume},
    }
    if cluster.storage_class:
        persistence["storageClassName"] = cluster.storage_class
    out: dict[str, Any] = {
        "store": {
            "id": store.id,
            "name": store.name,
            "engine": store.engine,
            "plan": store.plan,
            "owner": owner,
        },
        "suspended": store.suspended,
        "host": cluster.host_for(store),
        "url": cluster.url_for(store),
        "ingress": {"className": cluster.ingress_class, "tls": tls},
        "persistence": persistence,
        "quota": {"cpu": plan.cpu, "memory": plan.memory, "storage": plan.storage},
    }
    # Only once the password was changed: a store that never was keeps the file it had.
    if store.password_rotation:
        out.setdefault("credentials", {})["rotation"] = store.password_rotation
    # Only what the profile sets: without it the chart's defaults apply and the file stays as it was.
    if cluster.ingress_controller_namespace:
        out["networkPolicy"] = {"ingressControllerNamespace": cluster.ingress_controller_namespace}
    for component, image in images.profile_images(store.engine, cluster.images, chart_images or {}).items():
        out.setdefault(component, {})["image"] = image
    if store.engine == constants.WOOCOMMERCE and cluster.woocommerce and cluster.woocommerce.plugin_source:
        out.setdefault("setup", {})["pluginSource"] = cluster.woocommerce.plugin_source
    # Only on a cluster with backups: without them the file stays as it was.
    if cluster.backups:
        out["backup"] = _backup(store, cluster.backups, plan)
    if store.restore_from:
        # A store's own backup (a rollback's) replaces its data; another store's fills a new, empty one.
        own = store.restore_from.partition("/")[0] == store.id
        out["restore"] = {"from": store.restore_from, **({"replace": True} if own else {})}
    return out


def _backup(store: Store, settings: Backups, plan: Plan) -> dict[str, Any]:
    egress = ({"namespace": settings.egress_namespace} if settings.egress_namespace
              else {"cidr": settings.egress_cidr} if settings.egress_cidr else {})
    return {
        "enabled": True,
        "schedule": backups.schedule_for(plan.backup_schedule, store.id),
        "retention": plan.backup_retention,
        "s3": {"endpoint": settings.endpoint, "bucket": settings.bucket, "region": settings.region,
               "prefix": store.cluster},
        "secretName": backups.SECRET_NAME,
        **({"egress": egress} if egress else {}),
    }


def _destination(store: Store, cluster: Cluster) -> dict[str, str]:
    destination = {"namespace": store.namespace}
    if cluster.server:
        destination["server"] = cluster.server
    else:
        assert cluster.destination_name is not None
        destination["name"] = cluster.destination_name
    return destination


def app_project(store: Store, cluster: Cluster, repo_url: str) -> dict[str, Any]:
    """A project per store: its Application may deploy from this repo into its own namespace only."""
    return {
        "apiVersion": constants.ARGOCD_API_VERSION,
        "kind": constants.APPPROJECT_KIND,
        "metadata": {
            "name": store.app_name,
            "namespace": cluster.argocd_namespace,
            "labels": labels(store),
            "annotations": {
                constants.ANNOTATION_SOURCE: store.source,
                # Before the Application that names it.
                constants.ANNOTATION_SYNC_WAVE: "-1",
            },
        },
        "spec": {
            "description": f"Store {store.id} ({store.name})",
            "sourceRepos": [repo_url],
            "destinations": [_destination(store, cluster)],
            # The only cluster-scoped object a store may own is its own namespace.
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
            "namespaceResourceBlacklist": [],
        },
    }


def application(store: Store, cluster: Cluster, repo_url: str) -> dict[str, Any]:
    url = cluster.url_for(store)
    chart = store_chart_path(store)
    values_file = values_path(cluster.name, store.id)
    annotations = {
        constants.ANNOTATION_SOURCE: store.source,
        constants.ANNOTATION_URL: url,
        constants.ANNOTATION_STORE_LINK: url,
        constants.ANNOTATION_OWNER_EMAIL: store.owner.email,
        # Only pushes touching the store's chart (its library included) or values refresh this Application.
        constants.ANNOTATION_MANIFEST_PATHS: ";".join(manifest_paths(store, values_file)),
    }
    # A callback URL that points inside the platform is never handed to the status reader (an entry
    # from before the rule; changes that bring one are refused).
    if store.callback_url and not destinations.url_problem(store.callback_url):
        annotations[constants.ANNOTATION_CALLBACK_URL] = store.callback_url
    return {
        "apiVersion": constants.ARGOCD_API_VERSION,
        "kind": constants.APPLICATION_KIND,
        "metadata": {
            "name": store.app_name,
            "namespace": cluster.argocd_namespace,
            "labels": labels(store),
            "annotations": annotations,
            "finalizers": [constants.RESOURCES_FINALIZER],
        },
        "spec": {
            "project": store.app_name,
            "source": {
                "repoURL": repo_url,
                "targetRevision": cluster.target_revision,
                "path": chart,
                "helm": {
                    "releaseName": store.app_name,
                    # Value files are resolved from the chart directory; this one stays inside the repo.
                    "valueFiles": ["../" * len(chart.split("/")) + values_file],
                },
            },
            "destination": _destination(store, cluster),
            # A StatefulSet's volumeClaimTemplates cannot change once it exists: their labels name the
            # chart version, which a new chart (a release a store moves to) changes. The live ones stay.
            "ignoreDifferences": [{"group": "apps", "kind": "StatefulSet",
                                   "jsonPointers": ["/spec/volumeClaimTemplates"]}],
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                # Validate=false: kubectl's validation in Argo CD parses the API server's OpenAPI document again
                # for every object it applies (most of the controller's CPU in a burst of new stores); the
                # charts' manifests are checked under strict field validation by their tests instead.
                # ServerSideApply: the API server merges each object, so Argo CD neither reads it first nor
                # works out a patch from the OpenAPI schema (a third of what is left of its CPU per sync).
                "syncOptions": ["CreateNamespace=true", "PruneLast=true", "RespectIgnoreDifferences=true",
                                "Validate=false", "ServerSideApply=true"],
                "managedNamespaceMetadata": {
                    "labels": {
                        constants.POD_SECURITY_ENFORCE: "baseline",
                        constants.POD_SECURITY_AUDIT: "restricted",
                        constants.POD_SECURITY_WARN: "restricted",
                        constants.LABEL_STORE: store.id,
                        constants.LABEL_PART_OF: constants.PART_OF,
                    },
                },
                "retry": {
                    "limit": 5,
                    "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"},
                },
            },
            "revisionHistoryLimit": 5,
            "info": [{"name": "Store", "value": url}],
        },
    }


@dataclass(frozen=True)
class Target:
    """Everything one store renders from."""

    store: Store
    cluster: Cluster
    plan: Plan
    #: The default images of the store's chart (``templates/<engine>/values.yaml``).
    chart_images: Mapping[str, images.Image] = field(default_factory=dict)


def _header(source: str, cluster: Cluster) -> str:
    return (f"Generated by storeops from {source} and {cluster.source}.\n"
            "Do not edit: change the store entry and run storeops render.")


def render_store(target: Target, repo_url: str = "") -> dict[str, str]:
    """The files of one store: ``{repo-relative path: content}``."""
    store, cluster = target.store, target.cluster
    url = repo_url or cluster.repo_url
    header = _header(store.source, cluster)
    return {
        app_path(cluster.name, store.id): emitting.dump_all(
            [app_project(store, cluster, url), application(store, cluster, url)], header
        ),
        values_path(cluster.name, store.id): emitting.dump(
            values(store, cluster, target.plan, target.chart_images), header + f"\nPlan from {constants.PLANS_FILE}."
        ),
    }


def root_path(cluster: str) -> str:
    return f"{constants.RENDERED_DIR}/{cluster}/{constants.ROOT_FILE}"


def root_objects(cluster: Cluster, repo_url: str) -> list[dict[str, Any]]:
    """The cluster's bootstrap: a project for the root app and the root app syncing ``apps/``.

    The root Application carries no resources finalizer on purpose: deleting it must not take
    the fleet with it. Pruning one store's Application (its entry was removed) does delete that
    store, through the store Application's own finalizer.
    """
    name = f"{constants.ROOT_PREFIX}{cluster.name}"
    labels = {
        constants.LABEL_PART_OF: constants.PART_OF,
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_COMPONENT: "root",
        constants.LABEL_CLUSTER: cluster.name,
    }
    here = {"server": constants.IN_CLUSTER, "namespace": cluster.argocd_namespace}
    project = {
        "apiVersion": constants.ARGOCD_API_VERSION,
        "kind": constants.APPPROJECT_KIND,
        "metadata": {"name": name, "namespace": cluster.argocd_namespace, "labels": labels},
        "spec": {
            "description": f"storeops root for cluster {cluster.name}: store Applications and their projects",
            "sourceRepos": [repo_url],
            "destinations": [here],
            "clusterResourceWhitelist": [],
            "namespaceResourceWhitelist": [
                {"group": "argoproj.io", "kind": constants.APPLICATION_KIND},
                {"group": "argoproj.io", "kind": constants.APPPROJECT_KIND},
            ],
        },
    }
    application = {
        "apiVersion": constants.ARGOCD_API_VERSION,
        "kind": constants.APPLICATION_KIND,
        "metadata": {
            "name": name,
            "namespace": cluster.argocd_namespace,
            "labels": labels,
            "annotations": {constants.ANNOTATION_SOURCE: cluster.source},
        },
        "spec": {
            "project": name,
            "source": {
                "repoURL": repo_url,
                "targetRevision": cluster.target_revision,
                "path": f"{constants.RENDERED_DIR}/{cluster.name}/{constants.APPS_SUBDIR}",
                "directory": {"recurse": False},
            },
            "destination": here,
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                # A commit changes a few of the fleet's Applications: the root's sync applies those, not every
                # one (without ApplyOutOfSyncOnly each sync applies all of them, a cost that grows with the
                # fleet). Validate=false as for the stores; the rendered objects are checked under strict
                # validation against Argo CD's CRDs by the tests.
                "syncOptions": ["ApplyOutOfSyncOnly=true", "Validate=false"],
                "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}},
            },
        },
    }
    return [project, application]


def render_fleet(targets: Iterable[Target], clusters: Iterable[Cluster] = (), repo_url: str = "",
                 ) -> dict[str, str]:
    files: dict[str, str] = {}
    for cluster in clusters:
        header = (f"Generated by storeops from {cluster.source}. Apply once to the Argo CD that manages "
                  f"this cluster:\n  kubectl apply -n {cluster.argocd_namespace} -f {root_path(cluster.name)}")
        files[root_path(cluster.name)] = emitting.dump_all(root_objects(cluster, repo_url or cluster.repo_url),
                                                           header)
    for target in targets:
        files.update(render_store(target, repo_url))
    return files


def store_id_of(path: str) -> str | None:
    """The store a rendered file belongs to, from its path."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == constants.RENDERED_DIR and parts[3].endswith(constants.ENTRY_SUFFIX):
        return parts[3].removesuffix(constants.ENTRY_SUFFIX)
    return None
