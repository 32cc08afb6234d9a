"""Talking to the API server: kubeconfig files, a tiny HTTPS client for probes, and kubectl."""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import http.client
import json
import pathlib
import ssl
import subprocess
import time
import urllib.parse

from harness import errors, pki

__all__ = ["ApiClient", "Kubectl", "write_kubeconfig"]


def write_kubeconfig(
    path: pathlib.Path,
    *,
    server: str,
    ca_cert: pathlib.Path,
    client: pki.ClientCert,
    namespace: str | None = None,
) -> pathlib.Path:
    """A self-contained kubeconfig (certificates embedded) for one client identity.

    JSON is valid YAML, so kubectl, client-go and the Python client all read it.
    """

    def b64(p: pathlib.Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    context: dict[str, str] = {"cluster": "storeops", "user": client.user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "storeops", "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)}}],
        "users": [
            {
                "name": client.user,
                "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
            }
        ],
        "contexts": [{"name": "storeops", "context": context}],
        "current-context": "storeops",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


@dataclasses.dataclass(frozen=True)
class ApiClient:
    """Minimal HTTPS client for the API server (stdlib only): readiness probes, raw requests, watches."""

    url: str
    ca_cert: pathlib.Path
    client: pki.ClientCert

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.client.cert), str(self.client.key))
        return context

    def connection(self, *, timeout: float = 10.0) -> http.client.HTTPSConnection:
        parsed = urllib.parse.urlsplit(self.url)
        return http.client.HTTPSConnection(
            parsed.hostname or "127.0.0.1", parsed.port, context=self._context(), timeout=timeout
        )

    def request(
        self, method: str, path: str, body: object | None = None, *, timeout: float = 10.0
    ) -> tuple[int, dict[str, object]]:
        """Send one request; returns (HTTP status, decoded JSON body or {"raw": text})."""
        conn = self.connection(timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            decoded = {"raw": text}
        return response.status, decoded if isinstance(decoded, dict) else {"raw": decoded}

    def ready(self) -> bool:
        status, _ = self.request("GET", "/readyz", timeout=5)
        return status == 200

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 5
    ) -> collections.abc.Iterator[dict[str, object]]:
        """Yield the events of one watch request (ends when the server closes it)."""
        sep = "&" if "?" in path else "?"
        query = urllib.parse.urlencode(
            {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds)}
        )
        conn = self.connection(timeout=timeout_seconds + 10)
        try:
            conn.request("GET", f"{path}{sep}{query}", headers={"Accept": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                body = response.read().decode("utf-8", "replace")
                yield {"type": "HTTP_ERROR", "object": {"code": response.status, "message": body}}
                return
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


@dataclasses.dataclass(frozen=True)
class Kubectl:
    """The kubectl built by build.sh, bound to one kubeconfig."""

    binary: pathlib.Path
    kubeconfig: pathlib.Path

    def run(self, *args: str, input: str | None = None, timeout: float = 120.0, check: bool = True) -> str:
        """Run kubectl; returns stdout, or raises CommandError with stderr when check and it fails."""
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise errors.CommandError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def apply(self, *manifests: collections.abc.Mapping[str, object] | str, server_side: bool = True) -> str:
        """Apply manifests given as dicts or YAML/JSON text (server-side: CRDs are too big otherwise)."""
        docs = [m if isinstance(m, str) else json.dumps(m) for m in manifests]
        flags = ["--server-side", "--force-conflicts", "--field-manager=storeops-harness"] if server_side else []
        return self.run("apply", *flags, "-f", "-", input="\n---\n".join(docs))

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, object] | None:
        """The object as a dict, or None when it does not exist."""
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.run(*args)
        if not out.strip():
            return None
        decoded = json.loads(out)
        assert isinstance(decoded, dict)
        return decoded

    def wait_for(
        self,
        what: str,
        check: collections.abc.Callable[[], bool],
        *,
        timeout: float = 120.0,
        interval: float = 1.0,
    ) -> None:
        """Poll check() until True; TimeoutError naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)
