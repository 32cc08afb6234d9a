"""Argo CD Applications without Argo CD: the CRD in a real API server, and Applications written the way
Argo CD's controller writes them, for the status reader's tests and benchmark.

The minimal ``kube_apiserver`` stack does not install Argo CD's CRDs; :func:`install_application_crd`
applies the Application CRD the harness build copied from the argo-cd module. The CRD has no
status subresource (``subresources: {}``): Argo CD writes ``status`` with an ordinary update, and
so does :func:`set_status` (a merge patch of the whole object).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config

from harness import stack as harness_stack
from webhook.status.watching import GROUP, PLURAL, VERSION

STORE_LABELS = {"app.kubernetes.io/part-of": "storeops", "app.kubernetes.io/component": "store"}


def install_application_crd(stack: harness_stack.Stack) -> None:
    crd = stack.binaries.argocd_crds / "application-crd.yaml"
    stack.kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=storeops-tests",
                      f"-f={crd}")

    def established() -> bool:  # polled: `kubectl wait` fails while the CRD has no conditions yet
        found = json.loads(stack.kubectl.run("get", "crd/applications.argoproj.io", "-o", "json"))
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    wait_until("the Application CRD to be Established", established, timeout=60)


def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig),  # type: ignore[no-untyped-call]
                            client_configuration=configuration)
    return client.ApiClient(configuration)


def close(api: client.ApiClient) -> None:
    """Close the client's connection pool (the client's own method is untyped)."""
    closing: Any = api
    closing.close()


def application(store_id: str, namespace: str, *, url: str = "", callback_url: str = "") -> dict[str, Any]:
    annotations = {"storeops.io/url": url or f"http://{store_id}.stores.localtest.me"}
    if callback_url:
        annotations["storeops.io/callback-url"] = callback_url
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Application",
        "metadata": {"name": f"store-{store_id}", "namespace": namespace,
                     "labels": {**STORE_LABELS, "storeops.io/store": store_id}, "annotations": annotations},
        "spec": {"project": "default",
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": f"store-{store_id}"},
                 "source": {"repoURL": "git://127.0.0.1:9418/storeops.git", "path": "templates/woocommerce",
                            "targetRevision": "main"}},
    }


def argo_status(*, sync: str, health: str, revision: str = "r" * 40, phase: str | None = None,
                conditions: list[dict[str, str]] | None = None, health_message: str = "") -> dict[str, Any]:
    """``status`` as Argo CD's application-controller writes it (the fields the reader reads, and some it does not)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision,
                 "comparedTo": {"source": {"repoURL": "git://127.0.0.1:9418/storeops.git", "path": "templates/x"},
                                "destination": {"server": "https://kubernetes.default.svc"}}},
        "health": {"status": health, "lastTransitionTime": now, **({"message": health_message} if health_message
                                                                   else {})},
        "reconciledAt": now, "sourceType": "Helm", "summary": {},
        "resources": [{"kind": "Deployment", "name": "web", "namespace": "x", "status": sync, "version": "v1",
                       "group": "apps", "health": {"status": health}}],
        "conditions": conditions or None,
    }
    if phase:
        status["operationState"] = {"phase": phase, "message": f"sync {phase.lower()}", "startedAt": now,
                                    "finishedAt": now, "operation": {"sync": {"revision": revision}},
                                    "syncResult": {"revision": revision}}
    return status


def set_status(custom: client.CustomObjectsApi, namespace: str, store_id: str, status: Mapping[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, f"store-{store_id}", {"status": status},
                                          _content_type="application/merge-patch+json")


def wait_until(what: str, predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
