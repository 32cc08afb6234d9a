"""argocd/ and rendered/ manifests are accepted by a real API server (server-side dry run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness.stack import Stack

REPO = Path(__file__).resolve().parents[2]
PLATFORM = REPO / "argocd" / "platform"


def test_platform_manifests_pass_server_side_dry_run(kube_apiserver: Stack) -> None:
    kubectl = kube_apiserver.kubectl
    # The namespace must exist for a dry run of what goes into it.
    kubectl.apply((PLATFORM / "namespace.yaml").read_text())
    # ... and Argo CD's, where the status reader's Role and RoleBinding go (status-reader-rbac.yaml).
    if kubectl.get("namespace", "argocd") is None:
        kubectl.run("create", "namespace", "argocd")
    for path in sorted(PLATFORM.glob("*.yaml")):
        out = kubectl.run("apply", "--dry-run=server", "-f", str(path))
        assert "(server dry run)" in out, f"{path.name}: {out}"


def test_every_setting_the_deployment_passes_is_read_by_the_service() -> None:
    deployment = yaml.safe_load((PLATFORM / "deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    names = {e["name"] for e in env}
    source = "\n".join(p.read_text() for p in (REPO / "generator").glob("*.py")) + \
        "\n".join(p.read_text() for p in (REPO / "webhook").rglob("*.py"))
    unread = sorted(n for n in names if not re.search(rf'"{n}"', source))
    assert not unread, f"the Deployment sets settings no code reads: {unread}"


@pytest.mark.parametrize("cluster", ["local", "prod"])
def test_rendered_argo_objects_pass_server_side_dry_run(argocd_stack: Stack, cluster: str) -> None:
    """With the Argo CD CRDs installed, every rendered AppProject and Application is accepted under strict field
    validation (Argo CD applies them with Validate=false, where an unknown field would be dropped silently)."""
    kubectl = argocd_stack.kubectl
    files = [REPO / f"rendered/{cluster}/root.yaml", *sorted((REPO / f"rendered/{cluster}/apps").glob("*.yaml"))]
    for path in files:
        out = kubectl.run("apply", "--dry-run=server", "--validate=strict", "-n", "argocd", "-f", str(path))
        assert out.count("(server dry run)") == 2, f"{path}: {out}"
