"""The status reader inside the service (``create_app(..., status=...)``), against the real API server."""

from __future__ import annotations

import collections.abc
from pathlib import Path

import pytest
from kubernetes import client
from starlette.testclient import TestClient

from harness import stack as harness_stack
from tests.integration import status_support as support
from webhook import app, testing
from webhook.statussettings import StatusSettings
from webhook.watching import GROUP, PLURAL, VERSION

READ = {"Authorization": f"Bearer {testing.READ_TOKEN}"}


@pytest.fixture(scope="module")
def apiserver(kube_apiserver: harness_stack.Stack) -> harness_stack.Stack:
    support.install_application_crd(kube_apiserver)
    return kube_apiserver


@pytest.fixture
def custom(apiserver: harness_stack.Stack) -> collections.abc.Iterator[client.CustomObjectsApi]:
    api = support.api_client(apiserver.kubeconfig)
    yield client.CustomObjectsApi(api)
    support.close(api)


def test_the_service_runs_the_reader_when_a_kubeconfig_is_set_and_answers_with_its_tokens(
        tmp_path: Path, apiserver: harness_stack.Stack, custom: client.CustomObjectsApi) -> None:
    namespace = support.new_namespace(apiserver)
    body = support.application("svc1", namespace)
    body["status"] = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    config = testing.service_settings(tmp_path)
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
