"""The kube_apiserver fixture: a real API server that watches, restarts and answers 410 after compaction."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from harness import gitserver, stack


def _namespace(kube_apiserver: stack.Stack) -> str:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    status, body = kube_apiserver.api.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    assert status == 201, body
    return name


def _configmap(kube_apiserver: stack.Stack, namespace: str, value: str) -> dict[str, object]:
    status, body = kube_apiserver.api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}, "data": {"value": value}},
    )
    assert status == 201, body
    return body


def _resource_version(obj: dict[str, object]) -> str:
    metadata = obj["metadata"]
    assert isinstance(metadata, dict)
    return str(metadata["resourceVersion"])


@pytest.mark.controlplane
def test_watch_sees_an_update_from_the_listed_resource_version(kube_apiserver: stack.Stack) -> None:
    namespace = _namespace(kube_apiserver)
    created = _configmap(kube_apiserver, namespace, "one")
    path = f"/api/v1/namespaces/{namespace}/configmaps/probe"
    status, updated = kube_apiserver.api.request("PUT", path, {**created, "data": {"value": "two"}})
    assert status == 200, updated

    events = kube_apiserver.api.watch(
        f"/api/v1/namespaces/{namespace}/configmaps",
        resource_version=_resource_version(created),
        timeout_seconds=2,
    )
    modified = [e for e in events if e["type"] == "MODIFIED"]

    assert [e["object"]["data"] for e in modified] == [{"value": "two"}]  # type: ignore[index]


@pytest.mark.controlplane
def test_compacting_etcd_makes_an_old_resource_version_gone(kube_apiserver: stack.Stack) -> None:
    namespace = _namespace(kube_apiserver)
    old = _resource_version(_configmap(kube_apiserver, namespace, "one"))
    _configmap_update(kube_apiserver, namespace, "two")

    compacted = kube_apiserver.compact_etcd()
    events = list(
        kube_apiserver.api.watch(f"/api/v1/namespaces/{namespace}/configmaps", resource_version=old, timeout_seconds=2)
    )

    assert compacted > int(old)
    assert events, "the watch ended without any event"
    assert events[0]["type"] == "ERROR", events
    assert events[0]["object"]["code"] == 410, events  # type: ignore[index]


def _configmap_update(kube_apiserver: stack.Stack, namespace: str, value: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/probe"
    status, current = kube_apiserver.api.request("GET", path)
    assert status == 200, current
    status, body = kube_apiserver.api.request("PUT", path, {**current, "data": {"value": value}})
    assert status == 200, body


@pytest.mark.controlplane
def test_data_survives_an_apiserver_restart(kube_apiserver: stack.Stack) -> None:
    namespace = _namespace(kube_apiserver)
    _configmap(kube_apiserver, namespace, "kept")
    old_pid = kube_apiserver.processes["kube-apiserver"].pid

    kube_apiserver.restart_apiserver()

    assert kube_apiserver.processes["kube-apiserver"].pid != old_pid
    got = kube_apiserver.kubectl.get("configmap", "probe", namespace=namespace)
    assert got is not None and got["data"] == {"value": "kept"}


@pytest.mark.controlplane
def test_anonymous_requests_are_denied_by_rbac(kube_apiserver: stack.Stack) -> None:
    context = ssl.create_default_context(cafile=str(kube_apiserver.certs.ca_cert))

    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{kube_apiserver.url}/api/v1/namespaces", context=context, timeout=10)

    assert denied.value.code == 403


def test_git_daemon_serves_clone_and_push(git_daemon: gitserver.GitDaemon, tmp_path: pathlib.Path) -> None:
    def git(cwd: pathlib.Path, *args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@storeops.invalid", *args]
        return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    name = f"remote-{uuid.uuid4().hex[:6]}.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(git_daemon.base_path / name))
    git(tmp_path, "clone", "--quiet", git_daemon.url(name), "work")
    (tmp_path / "work" / "README").write_text("hello\n")
    git(tmp_path / "work", "add", "README")
    git(tmp_path / "work", "commit", "--quiet", "-m", "first")
    git(tmp_path / "work", "push", "--quiet", "origin", "HEAD:main")

    pushed = git(tmp_path, "--git-dir", str(git_daemon.base_path / name), "rev-parse", "main")
    assert pushed == git(tmp_path / "work", "rev-parse", "HEAD")
