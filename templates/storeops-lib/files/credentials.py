"""Create the store's credentials Secret inside the cluster, once, and never change a value in it
(but the admin password, when the store's owner asks: see the end).

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

The one value that does change is the shop admin's password, and only when the store entry's
``adminPasswordRotation`` goes up. The rotation Job runs this script twice around the engine's own
step that sets the password in the shop (ROTATION is the wanted count, ROTATION_FILE a file on a
volume of that pod only):

  * ``prepare-rotation``: when the Secret's annotation storeops.io/admin-password-rotation is below
    ROTATION, keep a new password as the key admin-password-next (or keep the one an interrupted
    attempt left there: the shop may have it already) and write it to ROTATION_FILE; otherwise write
    nothing, and the next steps do nothing;
  * ``finish-rotation``: after the shop took it, make it admin-password, drop admin-password-next
    and set the annotation to ROTATION, in one patch.

storeops shows the password only when the annotation has reached the entry's count, so the owner never
gets a password the shop does not have yet.
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


ROTATION_ANNOTATION = "storeops.io/admin-password-rotation"
PASSWORD_KEY = "admin-password"
NEXT_KEY = "admin-password-next"


def _secret(namespace: str, name: str) -> dict[str, object]:
    status, body = _request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    if status != 200:
        raise SystemExit(f"Secret {namespace}/{name}: HTTP {status}: {body.get('message', body)}")
    return body


def _rotation(secret: dict[str, object]) -> int:
    metadata = secret.get("metadata") or {}
    assert isinstance(metadata, dict)
    value = (metadata.get("annotations") or {}).get(ROTATION_ANNOTATION, "0")
    return int(value) if str(value).isdigit() else 0


def _patch(namespace: str, name: str, secret: dict[str, object], patch: dict[str, object]) -> int:
    metadata = secret.get("metadata") or {}
    assert isinstance(metadata, dict)
    own: dict[str, object] = {}
    extra = patch.get("metadata")
    if isinstance(extra, dict):
        own.update(extra)
    # The precondition makes a concurrent writer fail this patch instead of being overwritten.
    own["resourceVersion"] = metadata.get("resourceVersion")
    status, body = _request("PATCH", f"/api/v1/namespaces/{namespace}/secrets/{name}", {**patch, "metadata": own})
    if status not in (200, 409):
        raise SystemExit(f"Secret {namespace}/{name}: HTTP {status}: {body.get('message', body)}")
    return status


def prepare_rotation(namespace: str, name: str, want: int, out: pathlib.Path) -> str:
    """Keep the next admin password in the Secret and hand it to the shop's step through ``out``."""
    for _ in range(ATTEMPTS):
        secret = _secret(namespace, name)
        have = _rotation(secret)
        if have >= want:
            return f"the admin password is at rotation {have}; nothing to change"
        data = secret.get("data") or {}
        assert isinstance(data, dict)
        pending = data.get(NEXT_KEY)
        if pending is None:
            pending = _value()
            if _patch(namespace, name, secret, {"data": {NEXT_KEY: pending}}) == 409:
                continue
        out.touch(mode=0o600)
        out.write_text(base64.b64decode(str(pending)).decode())
        return f"a new admin password is ready for rotation {want} (was {have})"
    raise SystemExit(f"Secret {namespace}/{name}: still conflicting after {ATTEMPTS} attempts")


def finish_rotation(namespace: str, name: str, want: int, given: pathlib.Path) -> str:
    """Make the password the shop now has the Secret's admin-password, at rotation ``want``."""
    if not given.exists():
        return "no password was changed; nothing to finish"
    password = given.read_text()
    for _ in range(ATTEMPTS):
        secret = _secret(namespace, name)
        data = secret.get("data") or {}
        assert isinstance(data, dict)
        pending = data.get(NEXT_KEY)
        if pending is None or base64.b64decode(str(pending)).decode() != password:
            raise SystemExit(f"Secret {namespace}/{name}: {NEXT_KEY} is not the password the shop was given; "
                             f"the next run starts the rotation again")
        patch = {
            "metadata": {"annotations": {ROTATION_ANNOTATION: str(want)}},
            "data": {PASSWORD_KEY: pending, NEXT_KEY: None},  # null drops the key (JSON merge patch)
        }
        if _patch(namespace, name, secret, patch) == 200:
            return f"the admin password was changed (rotation {want})"
    raise SystemExit(f"Secret {namespace}/{name}: still conflicting after {ATTEMPTS} attempts")


def _once() -> str:
    namespace, name = os.environ["POD_NAMESPACE"], os.environ["SECRET_NAME"]
    mode = sys.argv[1] if len(sys.argv) > 1 else "ensure"
    if mode == "ensure":
        keys = os.environ["SECRET_KEYS"].split()
        labels = json.loads(os.environ.get("SECRET_LABELS") or "{}")
        return ensure(namespace, name, keys, labels)
    want, file = int(os.environ["ROTATION"]), pathlib.Path(os.environ["ROTATION_FILE"])
    if mode == "prepare-rotation":
        return prepare_rotation(namespace, name, want, file)
    if mode == "finish-rotation":
        return finish_rotation(namespace, name, want, file)
    raise SystemExit(f"no mode {mode!r} (ensure, prepare-rotation, finish-rotation)")


def main() -> int:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            print(_once(), flush=True)
            return 0
        except (OSError, urllib.error.URLError) as e:  # API server not reachable yet
            print(f"attempt {attempt}: {e}", file=sys.stderr, flush=True)
            time.sleep(min(2**attempt, 30))
    return 1


if __name__ == "__main__":
    sys.exit(main())
