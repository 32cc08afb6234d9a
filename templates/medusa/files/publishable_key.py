"""Put the store's publishable API key, which the bootstrap wrote, into the credentials Secret.

Runs in the bootstrap Job after the bootstrap container (templates/medusa/templates/bootstrap-job.yaml).
The bootstrap writes its result as JSON (STORE_BOOTSTRAP_OUTPUT, on a volume the two containers
share); this adds ``publishable-key`` to the Secret, or replaces it when the bootstrap's key differs,
with a merge patch. Only this container gets an API token: a Role allows get and patch on that one
Secret. The publishable key is public by design (storefronts send it with every request); it goes to
the Secret so the owner gets it with the admin password. Standard library only.

Environment: SECRET_NAME, SECRET_KEY (default publishable-key), BOOTSTRAP_OUTPUT, POD_NAMESPACE; the
in-cluster KUBERNETES_SERVICE_HOST/PORT; SERVICEACCOUNT_DIR (token, ca.crt) defaults to the
service-account volume.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import ssl
import sys
import time
import urllib.error
import urllib.request

ATTEMPTS = 8


def _request(method: str, path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    account = pathlib.Path(os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    if ":" in host:
        host = f"[{host}]"
    url = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}{path}"
    headers = {"Authorization": f"Bearer {(account / 'token').read_text().strip()}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/merge-patch+json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=20) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def publish(namespace: str, name: str, key: str, value: str) -> str:
    path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
    status, body = _request("GET", path)
    if status != 200:
        raise SystemExit(f"Secret {namespace}/{name}: HTTP {status}: {body.get('message', body)}")
    data = body.get("data") or {}
    assert isinstance(data, dict)
    encoded = base64.b64encode(value.encode()).decode()
    if data.get(key) == encoded:
        return f"Secret {namespace}/{name} holds the publishable key already; nothing changed"
    status, body = _request("PATCH", path, {"data": {key: encoded}})
    if status != 200:
        raise SystemExit(f"Secret {namespace}/{name}: HTTP {status}: {body.get('message', body)}")
    return f"{'replaced' if key in data else 'added'} {key} in Secret {namespace}/{name}"


def main() -> int:
    output = pathlib.Path(os.environ["BOOTSTRAP_OUTPUT"])
    result = json.loads(output.read_text())
    value = result.get("publishable_key")
    if not isinstance(value, str) or not value.startswith("pk_"):
        print(f"{output} holds no publishable key", file=sys.stderr)
        return 2
    namespace, name = os.environ["POD_NAMESPACE"], os.environ["SECRET_NAME"]
    key = os.environ.get("SECRET_KEY", "publishable-key")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            print(publish(namespace, name, key, value), flush=True)
            return 0
        except (OSError, urllib.error.URLError) as e:  # API server not reachable yet
            print(f"attempt {attempt}: {e}", file=sys.stderr, flush=True)
            time.sleep(min(2**attempt, 30))
    return 1


if __name__ == "__main__":
    sys.exit(main())
