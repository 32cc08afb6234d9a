"""Shared parts of the status reader's integration tests: the Application CRD in the real API server,
Applications written the way Argo CD writes them, a real callback receiver and a TCP proxy that can
go silent.

The minimal ``kube_apiserver`` stack does not install Argo CD's CRDs; :func:`install_application_crd`
applies the Application CRD the harness build copied from the argo-cd module. The CRD has no
status subresource (``subresources: {}``): Argo CD writes ``status`` with an ordinary update, and
so do these helpers (a merge patch of the whole object).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from harness import stack as harness_stack
from webhook.status import callbacks
from webhook.status.watching import GROUP, PLURAL, VERSION

SECRET = "callback-secret-for-tests"
TOKEN = "shared-token-for-tests"
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


def new_namespace(stack: harness_stack.Stack) -> str:
    name = f"status-{uuid.uuid4().hex[:8]}"
    stack.kubectl.run("create", "namespace", name)
    return name


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


@dataclass
class Received:
    event_id: str
    payload: dict[str, Any]
    signature_ok: bool
    token: str
    at: float


@dataclass
class Receiver:
    """A real HTTP server in a thread that records callbacks; ``fail_next`` answers 503 that many times."""

    secret: str = SECRET
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= int(failing)
                    if not failing:
                        receiver.received.append(Received(
                            self.headers.get(callbacks.EVENT_HEADER, ""), json.loads(data),
                            callbacks.verify(data, receiver.secret, self.headers.get("X-Storeops-Signature-256", "")),
                            self.headers.get("X-Storeops-Token", ""), time.monotonic()))
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/storeops"

    def statuses(self, store_id: str) -> list[str]:
        with self._lock:
            return [r.payload["status"] for r in self.received if r.payload["store_id"] == store_id]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``silence()`` makes every open connection go quiet for good
    (bytes stop flowing, nothing is closed) - what a dead NAT or a hung load balancer does to a watch."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._generation = 0
        self._stopped = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        self._generation += 1

    def _accept(self) -> None:
        while not self._stopped:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [downstream, upstream]
            generation = self._generation
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(source, sink, generation), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, generation: int) -> None:
        try:
            while not self._stopped:
                data = source.recv(65536)
                if not data:
                    break
                while generation != self._generation and not self._stopped:
                    time.sleep(0.1)  # silenced: hold the bytes, keep the connection open
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped = True
        self.listener.close()
        for s in self._sockets:
            s.close()


def token() -> str:
    return secrets.token_hex(8)
