"""The whole storeops loop on this machine: request a store, watch Argo CD make it, see it ready.

    python -m harness.demo start   # build-cached stack + storeops serve + one store, until ready
    python -m harness.demo stop    # stop the service and the stack the demo started

``start`` runs the control plane from harness/stack.py with Argo CD at its own defaults, seeds a
local bare Git remote from this repository's example data, publishes it (Applications point at the
remote through a ``file://`` URL, which Argo CD's repo-server reads with git), applies the local
cluster's root Application, starts ``storeops serve`` with the status reader, requests a store
through the API and follows its Server-Sent Events until it is ready, printing every stage with
the time since the request. Everything keeps running for you to explore until ``stop``.

:class:`Loop` is the same machinery for the end-to-end tests (tests/e2e/test_full_loop.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from generator import publishing, rendering
from generator.settings import Settings
from harness import errors, objectstore, processes, stack
from harness import node as real_node
from harness.images import debian, medusa

logger = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLUSTER = "local"
# Medusa: its whole store runs on this machine (WooCommerce's plugin cannot be fetched here).
DEMO_STORE = {
    "id": "demo-shop",
    "name": "Demo Shop",
    "engine": "medusa",
    "plan": "small",
    "cluster": CLUSTER,
    "owner": {"name": "Demo Owner", "email": "owner@demo-shop.example"},
}


@dataclasses.dataclass
class Loop:
    """storeops wired to a running stack: a local remote, the root app, and ``storeops serve``."""

    stack: stack.Stack
    work: pathlib.Path
    token: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = dataclasses.field(default_factory=processes.free_port)
    callback_url: str = ""
    callback_secret: str = dataclasses.field(default_factory=lambda: secrets.token_hex(16))
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    service: subprocess.Popen[bytes] | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    #: The S3 add-on of the stores' backups (a real node whose profile keeps backups), once prepared.
    object_store: objectstore.ClusterObjectStore | None = None

    @property
    def remote(self) -> pathlib.Path:
        return self.work / "remote.git"

    @property
    def repo_url(self) -> str:
        return f"file://{self.remote}"

    @property
    def settings(self) -> Settings:
        """What a person's `storeops publish` (or CI after a merge) uses: its own clone, no Argo CD refresh."""
        return Settings(repo=ROOT, remote=str(self.remote), state_dir=self.work / "publisher",
                        repo_url=self.repo_url)

    def env(self) -> dict[str, str]:
        state = self.work / "service"
        env = {
            "STOREOPS_REPO": str(ROOT),
            "STOREOPS_REMOTE": str(self.remote),
            "STOREOPS_STATE_DIR": str(state),
            "STOREOPS_REPO_URL": self.repo_url,
            "STOREOPS_HOST": "127.0.0.1",
            "STOREOPS_PORT": str(self.port),
            "STOREOPS_API_TOKENS": self.token,
            "STOREOPS_KUBECONFIG": str(self.stack.kubeconfig),
            "STOREOPS_ARGOCD_NAMESPACE": self.stack.namespace,
            "STOREOPS_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            # The receiver is on this machine: loopback, which callbacks reach only when allowed.
            **({"STOREOPS_CALLBACK_URL": self.callback_url, "STOREOPS_CALLBACK_SECRET": self.callback_secret,
                "STOREOPS_CALLBACK_ALLOW": "127.0.0.1"}
               if self.callback_url else {}),
            **self.extra_env,
        }
        return env

    def _object_store(self) -> None:
        """With a real node and a local profile that keeps backups: the S3 add-on its stores back up to (the
        profile names its in-cluster endpoint and its keys' Secret), and the service's way to it."""
        profile = subprocess.run(["git", "-C", str(self.remote), "show", f"main:clusters/{CLUSTER}.yaml"],
                                 capture_output=True, text=True, check=True).stdout
        if self.stack.node is None or "backups" not in (yaml.safe_load(profile) or {}):
            return
        began = time.monotonic()
        store = objectstore.deploy(kubectl=self.stack.kubectl, ctr=self.stack.node.ctr,
                                   node_selector=real_node.NODE_SELECTOR)
        self.extra_env.setdefault("STOREOPS_BACKUP_ENDPOINTS", f"{CLUSTER}={store.host_endpoint}")
        self.object_store = store
        self.stage(f"object store for backups at {store.endpoint} (from here {store.host_endpoint}), "
                   f"{time.monotonic() - began:.1f}s")

    def stage(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    # --- setting up -------------------------------------------------------------------------------

    def prepare(self) -> str:
        """Seed the remote, publish it for this Argo CD, and apply the cluster's root Application."""
        self.work.mkdir(parents=True, exist_ok=True)
        if not (self.remote / "HEAD").exists():
            publishing.seed_remote(self.remote, ROOT, "main")
        published = publishing.publish(self.settings, allow_mass_delete=True)
        self.stage(f"remote {self.remote} at {published.sha[:12]} ({published.changes.summary()})")
        self._object_store()
        root = subprocess.run(["git", "-C", str(self.remote), "show", f"main:{rendering.root_path(CLUSTER)}"],
                              capture_output=True, text=True, check=True).stdout
        self.stack.kubectl.apply(root)
        self.stack.wait_application(f"storeops-{CLUSTER}", timeout=300)
        self.stage(f"root Application storeops-{CLUSTER} Synced/Healthy")
        return published.sha

    def start_service(self, *, log_path: pathlib.Path | None = None, detach: bool = False) -> None:
        log_path = log_path or self.work / "service.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.service = subprocess.Popen(
                [sys.executable, "-m", "webhook.cli", "-v", "serve"], cwd=ROOT, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env(),
                                                          "PYTHONPATH": str(ROOT)},
                start_new_session=detach)
        (self.work / "service.pid").write_text(f"{self.service.pid}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise errors.StartupError(f"storeops serve exited ({self.service.returncode}); see {log_path}")
            with contextlib.suppress(OSError):
                if self.call("GET", "/readyz", auth=False)[0] == 200:
                    self.stage(f"storeops serve ready on http://127.0.0.1:{self.port}")
                    return
            time.sleep(0.2)
        raise errors.StartupError(f"storeops serve not ready after 60s; see {log_path}")

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()

    # --- talking to the service -------------------------------------------------------------------

    def call(self, method: str, path: str, body: object | None = None, *, auth: bool = True,
             content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        return response.status, (json.loads(text) if text.startswith("{") else {"raw": text})

    def request_store(self, entry: Mapping[str, object]) -> dict[str, Any]:
        status, answer = self.call("POST", "/v1/stores", dict(entry))
        if status != 202:
            raise errors.HarnessError(f"POST /v1/stores answered {status}: {answer}")
        return answer

    def wait_request(self, request_id: str, *, timeout: float = 120) -> dict[str, Any]:
        """The request once the writer has handled it (committed, pending-review or rejected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, view = self.call("GET", f"/v1/requests/{request_id}")
            if status == 200 and view["status"] != "requested":
                return view
            time.sleep(0.2)
        raise TimeoutError(f"request {request_id} still queued after {timeout:.0f}s")

    def events(self, store_id: str, *, timeout: float) -> Iterator[dict[str, Any]]:
        """The store's status events from ``GET /v1/stores/{id}/events`` (SSE), as they come."""
        deadline = time.monotonic() + timeout
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", f"/v1/stores/{store_id}/events", headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            if response.status != 200:
                raise errors.HarnessError(f"events for {store_id}: HTTP {response.status} {response.read()!r}")
            data: list[str] = []
            while time.monotonic() < deadline:
                line = response.readline().decode()
                if not line:
                    return
                line = line.rstrip("\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    yield json.loads("\n".join(data))
                    data = []
            raise TimeoutError(f"no end to {store_id}'s events after {timeout:.0f}s")
        finally:
            conn.close()

    def follow(self, store_id: str, *, until: tuple[str, ...], since: float, timeout: float = 600,
               after_revision: str = "") -> list[dict[str, Any]]:
        """Print each event with the time since ``since``; stop at a status in ``until``.

        With ``after_revision``, an ``until`` status counts only at a revision other than that one
        (a store that was ready before a change is ready again only at the change).
        """
        seen: list[dict[str, Any]] = []
        for event in self.events(store_id, timeout=timeout):
            seen.append(event)
            extra = event.get("url") or event.get("error") or event.get("message") or ""
            revision = str(event.get("revision") or "")[:12]
            print(f"  [+{time.monotonic() - since:6.1f}s] {store_id}: {event['status']}"
                  f"{f' at {revision}' if revision else ''}{f' - {extra}' if extra else ''}", flush=True)
            if event["status"] in until and (not after_revision or event.get("revision") != after_revision):
                return seen
        raise errors.HarnessError(f"{store_id}'s events ended before {until}: {[e['status'] for e in seen]}")


# --- the command --------------------------------------------------------------------------------

def _reach_lines(running: stack.Stack, last: Mapping[str, Any], namespace: str) -> str:
    """How to reach the store from this machine (through the ingress controller) and its credentials."""
    if running.node is None or not running.node.ingress_port:
        return (
            f"  credentials:  Secret store-credentials in {namespace}, made by the store's credentials Job in a\n"
            "                real cluster (the simulated node here runs no containers, so it stays absent)\n"
        )
    host = urllib.parse.urlsplit(str(last.get("url") or "")).hostname or f"{DEMO_STORE['id']}.stores.localtest.me"
    base = f"http://127.0.0.1:{running.node.ingress_port}"
    secret = running.kubectl.get("secret", "store-credentials", namespace=namespace) or {}
    data = secret.get("data") or {}
    assert isinstance(data, dict)
    key = base64.b64decode(data["publishable-key"]).decode() if "publishable-key" in data else ""
    products = (f"                curl -H 'Host: {host}' -H 'x-publishable-api-key: {key}' {base}/store/products\n"
                if key else "")  # fmt: skip
    return (
        f"  the store:    curl -H 'Host: {host}' {base}/health\n{products}"
        f"                (through Traefik, the node's ingress controller; in a browser that resolves\n"
        f"                *.localtest.me to 127.0.0.1: http://{host}:{running.node.ingress_port}/app is the admin)\n"
        f"  credentials:  the owner gets a one-time link: POST /v1/stores/{DEMO_STORE['id']}/credentials/link\n"
        f"                (Secret store-credentials in {namespace}, made by the store's credentials Job)\n"
    )


def import_store_images(node: real_node.Node) -> list[str]:
    """Build (or find cached) every image the local profile names and import it into the node."""
    refs = []
    for image in [built.image for built in debian.build_all().values()] + [medusa.build().image]:
        node.ctr("images", "import", str(image.archive), timeout=600)
        refs.append(image.ref)
    return refs


def _state(base: pathlib.Path) -> pathlib.Path:
    return base / "demo"


def start(base: pathlib.Path) -> int:
    work = _state(base)
    stop(base, quiet=True)
    shutil.rmtree(work, ignore_errors=True)
    began = time.monotonic()
    problems = real_node.host_problems()
    if problems:
        print("storeops demo: this machine cannot run the real node (" + "; ".join(problems) + "): store Pods "
              "will be simulated by kwok and nothing will answer HTTP", flush=True)  # fmt: skip
    print("storeops demo: starting the local control plane (etcd, kube-apiserver, controller-manager, "
          f"scheduler, kwok, Redis, Argo CD{'' if problems else ', and a real node'})", flush=True)  # fmt: skip
    running = stack.start(work / "stack", full=True, argocd_defaults=True, node=not problems)
    loop = Loop(stack=running, work=work, started=began)
    loop.stage(f"control plane ready; export KUBECONFIG={running.kubeconfig}")
    if running.node is not None:
        imported = import_store_images(running.node)
        loop.stage(f"store images built here and imported into the node: {', '.join(imported)}")
    loop.prepare()
    loop.start_service(detach=True)
    (work / "api-token").write_text(loop.token + "\n")
    asked = time.monotonic()
    answer = loop.request_store(DEMO_STORE)
    loop.stage(f"POST /v1/stores -> 202, request {answer['request_id']}")
    view = loop.wait_request(answer["request_id"])
    loop.stage(f"request {view['status']} in commit {str(view['commit'])[:12]}")
    events = loop.follow(str(DEMO_STORE["id"]), until=("ready", "failed", "degraded"), since=asked)
    last = events[-1]
    loop.stage(f"store {DEMO_STORE['id']} is {last['status']} {time.monotonic() - asked:.1f}s after the request")
    token = work / "api-token"
    store = f"store-{DEMO_STORE['id']}"
    print(f"""
The store is {last['status']}{f" at {last.get('url')}" if last.get('url') else ''}.
  kubectl:      export KUBECONFIG={running.kubeconfig} PATH={running.binaries.kubectl.parent}:$PATH
                kubectl get all,pvc,ingress -n {store}; kubectl get applications -n argocd
{_reach_lines(running, last, store)}  request form: http://127.0.0.1:{loop.port}/
  API:          curl -H "Authorization: Bearer $(cat {token})" http://127.0.0.1:{loop.port}/v1/stores/{DEMO_STORE['id']}
  status:       STOREOPS_KUBECONFIG={running.kubeconfig} STOREOPS_STATE_DIR={work / 'service'} storeops status
  events:       curl -N -H "Authorization: Bearer $(cat {token})" \\
                  http://127.0.0.1:{loop.port}/v1/stores/{DEMO_STORE['id']}/events
  Git remote:   {loop.remote}
  logs:         {work / 'service.log'}, {work / 'stack' / 'logs'}/
Stop everything with: make demo-stop
""", flush=True)
    return 0 if last["status"] == "ready" else 1


def stop(base: pathlib.Path, *, quiet: bool = False) -> int:
    work = _state(base)
    pid_file = work / "service.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not quiet:
                print(f"stopped storeops serve (pid {pid})")
        pid_file.unlink()
    if (work / "stack" / stack.STATE_FILE).exists():
        stack.load(work / "stack").stop()
        if not quiet:
            print(f"stopped the control plane in {work / 'stack'}")
    elif not quiet:
        print("no demo stack running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", default=os.environ.get("STOREOPS_STATE_DIR", str(ROOT / ".storeops")),
                        help="where the demo keeps its stack, remote and service state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = pathlib.Path(args.state).resolve()
    try:
        return start(base) if args.action == "start" else stop(base)
    except (errors.HarnessError, TimeoutError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
