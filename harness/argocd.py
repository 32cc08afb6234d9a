"""The Argo CD objects the stack creates, since no Argo CD install manifests or argocd-server run here.

The CRDs come from the argo-cd module (build.sh copies them next to the binary); the rest is the
minimum the application-controller and repo-server need: argocd-cm, argocd-secret with
server.secretkey, argocd-rbac-cm, the `default` AppProject (argocd-server would create it), and
cluster-admin for the identity Argo CD's kubeconfig carries.
"""

from __future__ import annotations

import base64
import pathlib
import secrets
from collections.abc import Mapping

__all__ = ["NAMESPACE", "PART_OF", "bootstrap_manifests", "crd_files"]

NAMESPACE = "argocd"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}
# Short reconciliation so tests see a pushed change within seconds rather than minutes.
RECONCILIATION_TIMEOUT = "10s"
#: What Argo CD's install manifests put in argocd-cm (manifests/base/config/argocd-cm.yaml) for this cluster's
#: kinds: high-churn objects never declared in Git, left out of the controller's watch (node heartbeats,
#: leader-election Leases, Endpoints) so their changes cost it nothing. The fleet benchmark sets it.
RESOURCE_EXCLUSIONS = """\
- apiGroups: ["", "discovery.k8s.io"]
  kinds: [Endpoints, EndpointSlice]
- apiGroups: [apiregistration.k8s.io]
  kinds: [APIService]
- apiGroups: [coordination.k8s.io]
  kinds: [Lease]
- apiGroups: [authentication.k8s.io, authorization.k8s.io]
  kinds: [SelfSubjectReview, TokenReview, LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview,
          SubjectAccessReview]
- apiGroups: [certificates.k8s.io]
  kinds: [CertificateSigningRequest]
"""


def crd_files(crds: pathlib.Path) -> list[pathlib.Path]:
    return sorted(crds.glob("*-crd.yaml"))


def bootstrap_manifests(*, namespace: str, argocd_user: str, settings: Mapping[str, str] | None = None,
                        ) -> list[dict[str, object]]:
    """settings: more keys of argocd-cm (they win over the harness's)."""
    def labelled(name: str) -> dict[str, object]:
        return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name, **PART_OF}}

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": labelled("argocd-cm"),
            "data": {
                "timeout.reconciliation": RECONCILIATION_TIMEOUT,
                "timeout.reconciliation.jitter": "0s",
                **(settings or {}),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": labelled("argocd-secret"),
            "type": "Opaque",
            "data": {"server.secretkey": base64.b64encode(secrets.token_bytes(32)).decode()},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": labelled("argocd-rbac-cm"),
            "data": {"policy.default": "role:readonly"},
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"namespace": "*", "server": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "storeops-argocd-cluster-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": argocd_user}],
        },
    ]
