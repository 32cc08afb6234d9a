"""Smoke test of the harness: real Argo CD syncs a chart from a local Git repo into the real API server."""

from __future__ import annotations

import pathlib
import subprocess
import uuid

import pytest

from harness import kube, stack

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
    "values.yaml": "replicas: 2\nmessage: hello\n",
    "templates/configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  message: {{ .Values.message | quote }}
""",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
""",
}


def _git(repo: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=storeops tests", "-c", "user.email=tests@storeops.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _available_replicas(kubectl: kube.Kubectl, name: str) -> object:
    deployment = kubectl.get("deployment", name, namespace=name) or {}
    status = deployment.get("status") or {}
    assert isinstance(status, dict)
    return status.get("availableReplicas")


@pytest.fixture
def chart_repo(tmp_path: pathlib.Path) -> pathlib.Path:
    """A Git repository on disk holding a tiny chart under chart/, on branch main."""
    repo = tmp_path / "repo"
    for name, text in CHART.items():
        path = repo / "chart" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "smoke chart")
    return repo


@pytest.mark.e2e
def test_argocd_syncs_a_chart_from_git_follows_a_push_and_deleting_the_app_removes_it(
    argocd_stack: stack.Stack, chart_repo: pathlib.Path
) -> None:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    kubectl = argocd_stack.kubectl
    head = _git(chart_repo, "rev-parse", "HEAD")
    kubectl.apply(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": name,
                "namespace": argocd_stack.namespace,
                "finalizers": ["resources-finalizer.argocd.argoproj.io"],
            },
            "spec": {
                "project": "default",
                "source": {"repoURL": f"file://{chart_repo}", "targetRevision": "main", "path": "chart"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
                "syncPolicy": {"automated": {"prune": True}, "syncOptions": ["CreateNamespace=true"]},
            },
        }
    )

    app = argocd_stack.wait_application(name, sync="Synced", health="Healthy", timeout=300)

    status = app["status"]
    assert isinstance(status, dict)
    assert status["sync"]["revision"] == head
    assert status["sourceType"] == "Helm"
    deployment = kubectl.get("deployment", name, namespace=name)
    assert deployment is not None
    assert deployment["status"]["availableReplicas"] == 2  # type: ignore[index]
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}  # type: ignore[index]
    assert available["Available"] == "True"
    configmap = kubectl.get("configmap", f"{name}-settings", namespace=name)
    assert configmap is not None and configmap["data"] == {"message": "hello"}

    (chart_repo / "chart" / "values.yaml").write_text("replicas: 3\nmessage: changed\n")
    _git(chart_repo, "commit", "--quiet", "-am", "three replicas")
    changed = _git(chart_repo, "rev-parse", "HEAD")
    argocd_stack.wait_application(name, revision=changed, timeout=120)

    configmap = kubectl.get("configmap", f"{name}-settings", namespace=name)
    assert configmap is not None and configmap["data"] == {"message": "changed"}
    kubectl.wait_for("3 available replicas", lambda: _available_replicas(kubectl, name) == 3, timeout=60)

    kubectl.run("delete", "application", name, "-n", argocd_stack.namespace, "--wait=false")
    argocd_stack.wait_gone("application", name, namespace=argocd_stack.namespace, timeout=180)

    assert kubectl.get("deployment", name, namespace=name) is None
    assert kubectl.get("configmap", f"{name}-settings", namespace=name) is None
