"""Create the store's credentials Secret inside the cluster, once, and never change a value in it.

Runs as a hook Job on every sync. Talks to the API server with the pod's own ServiceAccount token
(a Role allows get/patch on this one Secret and create on Secrets). Standard library only.

  * Secret absent        -> create it with a fresh random value for every key;
  * Secret present       -> add only the keys it lacks (a newer chart may need more); existing
                            values are never read out, logged or replaced;
  * created concurrently -> 409 on create: read it again and continue as above.

Values come from the kernel CSPRNG (secrets.token_urlsafe): URL- and shell-safe, so they can be
embedded in connection URLs. Nothing random is ever rendered by Helm, so Argo CD re-renders and
self-heal cannot rotate a password.

Environment: SECRET_NAME, SECRET_KEYS (space-separated), SECRET_LABELS (JSON object, optional),
POD_NAMESPACE; the in-cluster KUBERNETES_SERVICE_HOST/PORT; SERVICEACCOUNT_DIR (token, ca.crt)
defaults to the projected service-account volume.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request

TOKEN_BYTES = 32  # 43 characters of base64url
ATTEMPTS = 10


def _request(method: str, path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    account = pathlib.Path(os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    if ":" in host:
        host = f"[{host}]"
    url = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}{path}"
    token = (account / "token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = (
            "application/merge-patch+json" if method == "PATCH" else "application/json"
        )
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=20) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _value() -> str:
    return base64.b64encode(secrets.token_urlsafe(TOKEN_BYTES).encode()).decode()


def ensure(namespace: str, name: str, keys: list[str], labels: dict[str, str]) -> str:
    """Make sure Secret namespace/name holds every key; returns what was done."""
    path = f"/api/v1/namespaces/{namespace}/secrets"
    for _ in range(ATTEMPTS):
        status, body = _request("GET", f"{path}/{name}")
        if status == 404:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "labels": labels},
                "data": {key: _value() for key in keys},
            }
            status, body = _request("POST", path, secret)
            if status == 201:
                return f"created Secret {namespace}/{name} with keys {', '.join(keys)}"
            if status == 409:
                continue  # somebody else created it meanwhile: read it again
        elif status == 200:
            data = body.get("data") or {}
            assert isinstance(data, dict)
            missing = [key for key in keys if key not in data]
            if not missing:
                return f"Secret {namespace}/{name} already holds every key; nothing changed"
            metadata = body.get("metadata") or {}
            assert isinstance(metadata, dict)
            patch = {
                # The precondition makes a concurrent writer fail this patch instead of being overwritten.
                "metadata": {"resourceVersion": metadata.get("resourceVersion")},
                "data": {key: _value() for key in missing},
            }
            status, body = _request("PATCH", f"{path}/{name}", patch)
            if status == 200:
                return f"added keys {', '.join(missing)} to Secret {namespace}/{name}"
            if status == 409:
                continue
        raise SystemExit(f"Secret {namespace}/{name}: HTTP {status}: {body.get('message', body)}")
    raise SystemExit(f"Secret {namespace}/{name}: still conflicting after {ATTEMPTS} attempts")


def main() -> int:
    keys = os.environ["SECRET_KEYS"].split()
    labels = json.loads(os.environ.get("SECRET_LABELS") or "{}")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            print(ensure(os.environ["POD_NAMESPACE"], os.environ["SECRET_NAME"], keys, labels), flush=True)
            return 0
        except (OSError, urllib.error.URLError) as e:  # API server not reachable yet
            print(f"attempt {attempt}: {e}", file=sys.stderr, flush=True)
            time.sleep(min(2**attempt, 30))
    return 1


if __name__ == "__main__":
    sys.exit(main())
