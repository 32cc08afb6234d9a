"""Every repository path, label, annotation and name pattern storeops uses, in one place."""

from __future__ import annotations

# --- Repository layout -------------------------------------------------------------------------

STORES_DIR = "stores"
CLUSTERS_DIR = "clusters"
TEMPLATES_DIR = "templates"
#: The library chart every engine chart depends on (its templates are part of every store's chart).
LIBRARY_CHART = f"{TEMPLATES_DIR}/storeops-lib"
ARGOCD_DIR = "argocd"
#: The generated folder: written by the generator only, never by hand.
RENDERED_DIR = "rendered"
#: Under ``rendered/<cluster>/``: the Argo CD objects the cluster's root Application syncs.
APPS_SUBDIR = "apps"
#: Under ``rendered/<cluster>/``: one Helm values file per store (not applied by the root app).
VALUES_SUBDIR = "values"
#: Under ``rendered/<cluster>/``: the cluster's root AppProject and Application (applied once by hand).
ROOT_FILE = "root.yaml"
ROOT_PREFIX = "storeops-"
IN_CLUSTER = "https://kubernetes.default.svc"
PLANS_FILE = "templates/plans.yaml"
#: The engine whose stores a cluster profile's ``woocommerce`` settings apply to.
WOOCOMMERCE = "woocommerce"
#: Engines whose upgrades migrate the database forward only (Medusa's `db:migrate`): a rollback of a chart
#: move also restores the store's pre-upgrade backup, as the older server cannot run on the newer schema.
FORWARD_ONLY_MIGRATIONS = ("medusa",)
#: Released chart versions: ``templates/releases/<engine>/<version>/`` holds an immutable snapshot of the
#: engine's chart (``<engine>/``) and of the library (``storeops-lib/``) as they were when released, beside
#: ``<version>.sha256`` (the digest of every file of the snapshot). A store that names a ``chartVersion``
#: renders from its snapshot; one that names none follows the working chart ``templates/<engine>/``.
RELEASES_DIR = f"{TEMPLATES_DIR}/releases"
RELEASE_DIGEST_SUFFIX = ".sha256"
#: In each engine's chart (``templates/<engine>/``): its defaults, among them the images it runs.
CHART_VALUES_FILE = "values.yaml"
ENTRY_SUFFIX = ".yaml"
#: Files in ``stores/`` and ``clusters/`` whose name starts with this are not entries.
IGNORED_PREFIXES = ("_", ".")

STORE_SCHEMA = "store.schema.json"
CLUSTER_SCHEMA = "cluster.schema.json"
PLANS_SCHEMA = "plans.schema.json"
#: How a store file points editors at its schema (relative to ``stores/``).
STORE_SCHEMA_COMMENT = "# yaml-language-server: $schema=../generator/schemas/store.schema.json"

# --- Kubernetes and Argo CD names ----------------------------------------------------------------

NAMESPACE_PREFIX = "store-"
APPLICATION_KIND = "Application"
APPPROJECT_KIND = "AppProject"
ARGOCD_API_VERSION = "argoproj.io/v1alpha1"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"

#: Names derived from a store id, with the Kubernetes limit each must fit.
#: Helm's release name (53) is the tightest: Argo CD passes the release name to Helm.
DERIVED_NAME_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("namespace", "store-{id}", 63),
    ("Application", "store-{id}", 63),
    ("AppProject", "store-{id}", 63),
    ("Helm release", "store-{id}", 53),
    ("admin Secret", "store-{id}-admin", 63),
    ("host label", "{id}", 63),
)

# --- Labels and annotations ----------------------------------------------------------------------

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
PART_OF = "storeops"
MANAGED_BY = "storeops"

LABEL_STORE = "storeops.io/store"
LABEL_ENGINE = "storeops.io/engine"
LABEL_CLUSTER = "storeops.io/cluster"
LABEL_OWNER = "storeops.io/owner"
LABEL_PLAN = "storeops.io/plan"
LABEL_STATE = "storeops.io/state"

ANNOTATION_SOURCE = "storeops.io/source"
ANNOTATION_URL = "storeops.io/url"
ANNOTATION_OWNER_EMAIL = "storeops.io/owner-email"
#: Where the status reader POSTs this store's status changes (besides the global callback).
ANNOTATION_CALLBACK_URL = "storeops.io/callback-url"
ANNOTATION_MANIFEST_PATHS = "argocd.argoproj.io/manifest-generate-paths"
ANNOTATION_SYNC_WAVE = "argocd.argoproj.io/sync-wave"
#: Argo CD shows ``link.argocd.argoproj.io/<title>`` annotations as links on the Application.
ANNOTATION_STORE_LINK = "link.argocd.argoproj.io/store"
#: Setting this on an Application asks Argo CD to refresh it now (value ``normal`` or ``hard``).
ANNOTATION_REFRESH = "argocd.argoproj.io/refresh"

POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
POD_SECURITY_AUDIT = "pod-security.kubernetes.io/audit"
POD_SECURITY_WARN = "pod-security.kubernetes.io/warn"

# --- Commits -------------------------------------------------------------------------------------

#: Trailer on every commit the generator makes; its presence tells a push hook to ignore the push.
COMMIT_TRAILER = "Storeops-Rendered-From"
COMMIT_AUTHOR_NAME = "storeops"
COMMIT_AUTHOR_EMAIL = "storeops@localhost"
