"""Shared parts of the status reader's integration tests: the Application helpers and callback receiver
of the harness (``harness.applications``, ``harness.receivers``), a namespace per test and a TCP proxy
that can go silent.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes import client

from harness import examples, receivers
from harness import stack as harness_stack
from harness.applications import (
    GROUP,
    PLURAL,
    VERSION,
    api_client,
    application,
    argo_status,
    close,
    install_application_crd,
    set_status,
    wait_until,
)
from webhook import credentials
from webhook.settings import ServiceSettings, StatusSettings, Token

SECRET = "callback-secret-for-tests"
TOKEN = "shared-token-for-tests"
__all__ = ["SECRET", "TOKEN", "Receiver", "TcpProxy", "api_client", "application", "argo_status", "close",
           "credentials_secret", "install_application_crd", "new_namespace", "set_status", "token", "wait_until"]


def new_namespace(stack: harness_stack.Stack) -> str:
    name = f"status-{uuid.uuid4().hex[:8]}"
    stack.kubectl.run("create", "namespace", name)
    return name


def Receiver(secret: str = SECRET) -> receivers.CallbackReceiver:
    return receivers.CallbackReceiver(secret=secret)


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


#: Owner-scoped tokens of the example stores' owners (see :func:`owners_service`).
JANE = {"Authorization": "Bearer jane-owner-token"}  # owns acme-outdoor
SAM = {"Authorization": "Bearer sam-owner-token"}  # owns bookworm


def owners_service(tmp_path: Path, apiserver: harness_stack.Stack, **status: Any) -> tuple[ServiceSettings,
                                                                                           StatusSettings]:
    """Service settings on a fresh copy of the example data with Jane's and Sam's owner tokens, and a
    status reader on ``apiserver`` in a namespace of its own."""
    base = examples.service_settings(tmp_path)
    config = replace(base, tokens=(*base.tokens,
                                   Token("jane-owner-token", name="jane", owner="jane@acme-outdoor.example"),
                                   Token("sam-owner-token", name="sam", owner="sam@bookworm.example")))
    reader = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=new_namespace(apiserver),
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1,
                            **status)
    return config, reader


@dataclass(frozen=True)
class OwnersApp:
    http: Any
    bare: Path
    namespace: str
    custom: client.CustomObjectsApi


@contextlib.contextmanager
def owners_app(tmp_path: Path, apiserver: harness_stack.Stack, store_id: str) -> Iterator[OwnersApp]:
    """The real app with the owners' tokens (:func:`owners_service`) and its status reader, ready; the store's
    Application a test creates is deleted after."""
    from starlette.testclient import TestClient

    from webhook import app

    config, status = owners_service(tmp_path, apiserver, tick=0.1)
    api = api_client(apiserver.kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        with TestClient(app.create_app(config, status=status)) as http:
            wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
            yield OwnersApp(http, Path(str(config.git.remote)), status.namespace, custom)
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, status.namespace, PLURAL, f"store-{store_id}")
        close(api)


def rotate_credentials_secret(apiserver: harness_stack.Stack, store_id: str, password: str, rotation: int) -> None:
    """What a store chart's rotation Job leaves in the Secret: the new password, at its count."""
    api = api_client(apiserver.kubeconfig)
    try:
        client.CoreV1Api(api).patch_namespaced_secret(credentials.SECRET_NAME, f"store-{store_id}", {
            "metadata": {"annotations": {credentials.ROTATION_ANNOTATION: str(rotation)}},
            "data": {"admin-password": base64.b64encode(password.encode()).decode()}})
    finally:
        close(api)


def credentials_secret(apiserver: harness_stack.Stack, store_id: str, password: str) -> None:
    """The Secret a store chart's credentials Job makes in the store's namespace (no Job runs without a node)."""
    api = api_client(apiserver.kubeconfig)
    try:
        core = client.CoreV1Api(api)
        namespace = f"store-{store_id}"
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        except client.ApiException as e:
            if e.status != 409:  # there already
                raise
        with contextlib.suppress(client.ApiException):  # another test's, on the shared API server
            core.delete_namespaced_secret(credentials.SECRET_NAME, namespace)
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=credentials.SECRET_NAME),
            data={"admin-password": base64.b64encode(password.encode()).decode(),
                  "postgres-password": base64.b64encode(b"never-shown").decode()}))
    finally:
        close(api)
