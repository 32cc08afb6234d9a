"""The status reader against real Argo CD: the states it reports come from status Argo CD itself wrote."""

from __future__ import annotations

import collections.abc
import itertools
import pathlib
import subprocess
import threading
import uuid
from typing import Any

import pytest

from generator import planning, trees
from generator.publishing import Published
from harness import stack
from tests.integration.status import support
from webhook.settings import StatusSettings
from webhook.status import reader as statusreader

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: store\nversion: 0.1.0\n",
    "values.yaml": "message: hello\n",
    "templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n"
        "data:\n  message: {{ .Values.message | quote }}\n"
    ),
}


def _git(repo: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=storeops tests", "-c", "user.email=tests@storeops.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def chart_repo(tmp_path: pathlib.Path) -> pathlib.Path:
    repo = tmp_path / "repo"
    for name, text in CHART.items():
        path = repo / "chart" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "store chart")
    return repo


@pytest.fixture
def receiver() -> collections.abc.Iterator[support.Receiver]:
    found = support.Receiver()
    yield found
    found.close()


def commit(repo: pathlib.Path, path: str, text: str, message: str) -> str:
    (repo / "chart" / path).write_text(text)
    _git(repo, "commit", "--quiet", "-am", message)
    return _git(repo, "rev-parse", "HEAD")


def published(sha: str, store_id: str) -> Published:
    changes = planning.ChangeSet(
        added=[], changed=[store_id], removed=[], files=trees.Changes([f"rendered/local/values/{store_id}.yaml"], [])
    )
    return Published(sha=sha, changes=changes, committed=True, attempts=1)


@pytest.mark.e2e
def test_the_reader_follows_argo_cd_from_sync_to_ready_to_failed_to_deleted(
    argocd_stack: stack.Stack, chart_repo: pathlib.Path, receiver: support.Receiver, tmp_path: pathlib.Path
) -> None:
    sid = f"e2e{uuid.uuid4().hex[:6]}"
    namespace = argocd_stack.namespace
    head = _git(chart_repo, "rev-parse", "HEAD")
    config = StatusSettings(
        namespace=namespace,
        ledger=tmp_path / "status.sqlite3",
        workdir=chart_repo,
        callback_url=receiver.url, callback_allow="127.0.0.1",
        callback_secret=support.SECRET,
        backoff_min=0.1,
        retry_min=0.1,
        tick=0.2,
        root_selector="",
    )
    reader = statusreader.build(config, api=support.api_client(argocd_stack.kubeconfig))
    stop = threading.Event()
    reader.start(stop=stop)

    def reports() -> list[dict[str, Any]]:
        return [r.payload for r in receiver.all() if r.payload["store_id"] == sid]

    try:
        app: dict[str, Any] = support.application(sid, namespace)
        app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
        app["spec"]["source"] = {"repoURL": f"file://{chart_repo}", "targetRevision": "main", "path": "chart"}
        app["spec"]["destination"]["namespace"] = f"store-{sid}"
        app["spec"]["syncPolicy"] = {"automated": {"prune": True}, "syncOptions": ["CreateNamespace=true"]}
        argocd_stack.kubectl.apply(app)
        support.wait_until(
            "ready at the first commit", lambda: [p["status"] for p in reports()][-1:] == ["ready"], timeout=300
        )
        assert reports()[-1]["revision"] == head
        assert reports()[-1]["url"] == f"http://{sid}.stores.localtest.me"

        changed = commit(chart_repo, "values.yaml", "message: changed\n", "change the store")
        assert reader.note_published(published(changed, sid)) == [f"store-{sid}"]
        support.wait_until(
            "ready at the change",
            lambda: reports()[-1]["status"] == "ready" and reports()[-1]["revision"] == changed,
            timeout=180,
        )
        settings = argocd_stack.kubectl.get("configmap", f"store-{sid}-settings", namespace=f"store-{sid}")
        assert settings is not None and settings["data"] == {"message": "changed"}

        broken = commit(chart_repo, "templates/configmap.yaml", "{{ .Values.nope.deeper }}\n", "break the chart")
        reader.note_published(published(broken, sid))
        support.wait_until("failed on the broken chart", lambda: reports()[-1]["status"] == "failed", timeout=180)
        assert "ComparisonError" in reports()[-1]["error"]

        argocd_stack.kubectl.run("delete", "application", f"store-{sid}", "-n", namespace, "--wait=false")
        support.wait_until("deleted", lambda: reports()[-1]["status"] == "deleted", timeout=180)
    finally:
        stop.set()
        reader.join()
        reader.close()

    statuses = [p["status"] for p in reports()]
    seen = [(p["status"], p["revision"] if p["status"] == "ready" else None) for p in reports()]
    assert all(a != b for a, b in itertools.pairwise(seen)), f"a transition reported twice: {seen}"
    assert statuses.index("ready") < statuses.index("failed") < statuses.index("deleted")
    assert "deleting" in statuses or statuses[-2] == "failed"
    assert all(r.signature_ok for r in receiver.all())
