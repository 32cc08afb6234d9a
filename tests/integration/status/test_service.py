"""The status reader inside the service (``create_app(..., status=...)``), against the real API server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from kubernetes import client
from starlette.testclient import TestClient

from harness import examples
from harness import stack as harness_stack
from harness.processes import free_port
from tests.integration.status import support
from webhook import app
from webhook.settings import StatusSettings
from webhook.status.watching import GROUP, PLURAL, VERSION

READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}


def test_the_service_runs_the_reader_when_a_kubeconfig_is_set_and_answers_with_its_tokens(
        tmp_path: Path, apiserver: harness_stack.Stack, custom: client.CustomObjectsApi) -> None:
    namespace = support.new_namespace(apiserver)
    body = support.application("svc1", namespace)
    body["status"] = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    config = examples.service_settings(tmp_path)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace,
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1, tick=0.1)
    with TestClient(app.create_app(config, status=status)) as http:
        support.wait_until("svc1 ready over HTTP", lambda: http.get(
            "/v1/stores/svc1/status", headers=READ).json().get("status") == "ready")
        assert http.get("/v1/stores/svc1/status").status_code == 401
        assert 'storeops_stores{state="ready"} 1' in http.get("/metrics/status").text
        reader = http.app.state.status_reader  # type: ignore[attr-defined]
        assert reader is not None and not reader.stopped.is_set()
    assert reader.stopped.is_set(), "the reader stops with the app"
    assert all(not thread.is_alive() for thread in reader.threads)

    with TestClient(app.create_app(config)) as http:
        off = http.get("/v1/stores/svc1/status", headers=READ)
        assert off.status_code == 503
        assert "STOREOPS_KUBECONFIG" in off.json()["error"]


def test_an_intake_publish_refreshes_argo_cd_and_get_store_shows_the_deployment(
        tmp_path: Path, apiserver: harness_stack.Stack, custom: client.CustomObjectsApi) -> None:
    namespace = support.new_namespace(apiserver)
    root = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Application",
        "metadata": {"name": "storeops-local", "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "storeops", "app.kubernetes.io/component": "root"}},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc",
                                                       "namespace": namespace},
                 "source": {"repoURL": "git://127.0.0.1:9418/storeops.git", "path": "rendered/local/apps"}},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, root)
    config = examples.service_settings(tmp_path)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace,
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1, tick=0.1)
    write = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
    entry = {"id": "wired", "name": "Wired", "engine": "medusa", "plan": "small", "cluster": "local",
             "owner": {"name": "Pat", "email": "pat@example.com"}}
    with TestClient(app.create_app(config, status=status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        answer = http.post("/v1/stores", json=entry, headers=write)
        assert answer.status_code == 202, answer.text

        def refreshed() -> bool:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "storeops-local")
            return (obj["metadata"].get("annotations") or {}).get("argocd.argoproj.io/refresh") == "normal"

        # The intake's push asks Argo CD to look again at once (the root creates the new store's app).
        support.wait_until("root Application refresh after the intake push", refreshed)
        view = http.get("/v1/stores/wired", headers=READ).json()
        assert view["status"] == "committed"
        assert "deployment" in view
        # Once Argo CD has created and synced the store's Application, the store view says where it is.
        body = support.application("wired", namespace)
        body["status"] = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded",
                                             revision=examples.git(config.git.workdir, "rev-parse", "HEAD").strip())
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        support.wait_until("deployment ready in GET /v1/stores/wired", lambda: (http.get(
            "/v1/stores/wired", headers=READ).json().get("deployment") or {}).get("status") == "ready")
        assert 'storeops_stores{state="ready"} 1' in http.get("/metrics", headers=READ).text


def test_sigterm_with_followers_connected_exits_within_seconds_and_loses_nothing(
        tmp_path: Path, apiserver: harness_stack.Stack) -> None:
    namespace = support.new_namespace(apiserver)
    config = examples.service_settings(tmp_path)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STOREOPS_")},
           "PYTHONPATH": str(examples.ROOT), "STOREOPS_PORT": str(port), "STOREOPS_REPO": str(config.git.repo),
           "STOREOPS_REMOTE": config.git.remote, "STOREOPS_STATE_DIR": str(config.git.state_dir),
           "STOREOPS_API_TOKENS": f"{examples.WRITE_TOKEN},{examples.READ_TOKEN}:read",
           "STOREOPS_KUBECONFIG": str(apiserver.kubeconfig), "STOREOPS_ARGOCD_NAMESPACE": namespace,
           "STOREOPS_SHUTDOWN_GRACE": "10"}
    url = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen[bytes]:
        server = subprocess.Popen([sys.executable, "-m", "webhook.cli", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        support.wait_until("storeops serve to be ready", lambda: _ready(url) and server.poll() is None, timeout=30)
        return server

    server = serve()
    opened = threading.Event()

    def follow(store_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "GET", f"{url}/v1/stores/{store_id}/events", headers=READ, timeout=60) as stream:
            for _ in stream.iter_lines():
                opened.set()

    followers = [threading.Thread(target=follow, args=(f"s{i}",), daemon=True) for i in range(3)]
    for follower in followers:
        follower.start()
    assert opened.wait(10)
    accepted = httpx.post(f"{url}/v1/stores", json=examples.store_payload("sigterm-shop"),
                          headers={"Authorization": f"Bearer {examples.WRITE_TOKEN}"})
    assert accepted.status_code == 202
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    took = time.monotonic() - started
    assert took < 5, f"storeops serve took {took:.1f}s to stop with 3 followers connected"
    assert server.returncode in (0, -signal.SIGTERM)
    for follower in followers:
        follower.join(5)
        assert not follower.is_alive(), "each event stream ended"
    # The accepted request was on disk before its 202: it lands, now or after a restart.
    server = serve()
    try:
        support.wait_until("the accepted request in Git",
                           lambda: "sigterm-shop" in examples.remote_stores(Path(config.git.remote)), timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
