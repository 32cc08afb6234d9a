"""How each component is launched on 127.0.0.1 and how its readiness is probed.

Each start_* function spawns one process and waits until it is ready; it never stops anything it
did not start. Ports come from the caller so a restart can reuse them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pathlib
import shutil
import socket
import ssl
import sys
import urllib.request
from collections.abc import Sequence

from harness import kube, pki, processes, versions

__all__ = [
    "SERVICE_CLUSTER_IP_RANGE",
    "compact_etcd",
    "etcd_revision",
    "port_open",
    "start_apiserver",
    "start_application_controller",
    "start_controller_manager",
    "start_etcd",
    "start_kwok",
    "start_redis",
    "start_repo_server",
    "start_scheduler",
]

logger = logging.getLogger(__name__)

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
STARTUP_TIMEOUT = 90.0
# How often Argo CD compares each Application with Git (there is no argocd-server to take webhooks).
RESYNC_SECONDS = 10


def start_etcd(
    binaries: versions.Binaries, *, state: pathlib.Path, client_port: int, peer_port: int, tie_to_parent: bool = False
) -> processes.Process:
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    argv = [
        str(binaries.etcd),
        "--name=storeops",
        f"--data-dir={state / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=storeops={peer}",
        # Test data is disposable: skipping fsync makes every write (and the whole suite) faster.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    process = processes.spawn("etcd", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    processes.wait_until(
        "etcd /health",
        lambda: _http_json(f"{client}/health").get("health") == "true",
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def etcd_revision(client_port: int) -> int:
    """The current etcd revision, through etcd's JSON gateway."""
    header = _http_json(f"http://127.0.0.1:{client_port}/v3/kv/range", {"key": "AA=="}).get("header", {})
    assert isinstance(header, dict)
    return int(header["revision"])


def compact_etcd(client_port: int) -> int:
    """Compact etcd so that every resourceVersion read before this call answers 410 Gone.

    A watch from resourceVersion R reads etcd from R+1, which is only refused once the compacted
    revision is above R+1: two writes to a key outside /registry move the revision past any R
    already handed out, then etcd is compacted (physically) at that revision, which is returned.
    """
    url = f"http://127.0.0.1:{client_port}/v3/kv/put"
    key = base64.b64encode(b"/storeops-harness/compaction-marker").decode()
    for value in (b"1", b"2"):
        _http_json(url, {"key": key, "value": base64.b64encode(value).decode()})
    revision = etcd_revision(client_port)
    _http_json(f"http://127.0.0.1:{client_port}/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def start_apiserver(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    certs: pki.Pki,
    etcd_port: int,
    port: int,
    watch_cache: bool,
    tie_to_parent: bool = False,
    address: str = "127.0.0.1",
) -> processes.Process:
    """kube-apiserver on `address`: 127.0.0.1, or with a real node the pod bridge's gateway, which the
    harness creates on this machine (Pods reach it there; it publishes the `kubernetes` Endpoints)."""
    argv = [
        str(binaries.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={port}",
        f"--cert-dir={state / 'apiserver'}",
        f"--tls-cert-file={certs.server_cert}",
        f"--tls-private-key-file={certs.server_key}",
        f"--client-ca-file={certs.ca_cert}",
        # Published in kube-system/extension-apiserver-authentication, where the controller-manager
        # and scheduler look for it (they log an error every second without it). No front proxy
        # runs here and no certificate with the allowed name is ever issued.
        f"--requestheader-client-ca-file={certs.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={certs.service_account_pub}",
        f"--service-account-signing-key-file={certs.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # logs/exec/port-forward reach a kubelet at its node's InternalIP (the real node's is the
        # pod bridge's gateway), as this client (bound to system:kubelet-api-admin when a node starts).
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={certs.clients['apiserver-kubelet'].cert}",
        f"--kubelet-client-key={certs.clients['apiserver-kubelet'].key}",
        # 127.0.0.1 is not a valid Endpoints address, so do not publish one for `kubernetes` then.
        f"--endpoint-reconciler-type={'none' if address == '127.0.0.1' else 'lease'}",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        # Off for the bare API server fixture: watches then read etcd directly, so compacting etcd
        # makes an old resourceVersion answer 410 Gone at once, as status-reader tests need.
        f"--watch-cache={'true' if watch_cache else 'false'}",
        "--v=1",
    ]
    process = processes.spawn("kube-apiserver", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    client = kube.ApiClient(url=f"https://{address}:{port}", ca_cert=certs.ca_cert, client=certs.clients["admin"])
    processes.wait_until("kube-apiserver /readyz", client.ready, timeout=STARTUP_TIMEOUT, process=process)
    return process


def start_controller_manager(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    certs: pki.Pki,
    kubeconfig: pathlib.Path,
    port: int,
    tie_to_parent: bool = False,
) -> processes.Process:
    argv = [
        str(binaries.kube_controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={state / 'controller-manager'}",
        "--leader-elect=false",
        # Each controller acts as its own service account, as on a real cluster (RBAC applies).
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={certs.service_account_key}",
        f"--root-ca-file={certs.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--cluster-name=storeops",
        # Volumes for claims, as a cloud's provisioner would make them (directories under /tmp).
        "--enable-hostpath-provisioner=true",
        "--v=1",
    ]
    process = processes.spawn("kube-controller-manager", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    processes.wait_until(
        "kube-controller-manager /healthz",
        lambda: _https_ok(f"https://127.0.0.1:{port}/healthz"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def start_scheduler(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    kubeconfig: pathlib.Path,
    port: int,
    tie_to_parent: bool = False,
) -> processes.Process:
    argv = [
        str(binaries.kube_scheduler),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={state / 'scheduler'}",
        "--leader-elect=false",
        "--v=1",
    ]
    process = processes.spawn("kube-scheduler", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    processes.wait_until(
        "kube-scheduler /healthz",
        lambda: _https_ok(f"https://127.0.0.1:{port}/healthz"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def start_kwok(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    kubeconfig: pathlib.Path,
    port: int,
    tie_to_parent: bool = False,
) -> processes.Process:
    """kwok managing the nodes labelled type=kwok, with the stage configs build.sh copied."""
    argv = [
        str(binaries.kwok),
        f"--kubeconfig={kubeconfig}",
        f"--config={binaries.kwok_stages}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-label-selector=type=kwok",
        f"--server-address=127.0.0.1:{port}",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.244.0.1",
        # Keep a node Lease: without one the node-lifecycle controller marks the node NotReady after
        # its grace period and every pod on it unready for good.
        "--node-lease-duration-seconds=40",
    ]
    process = processes.spawn("kwok", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    processes.wait_until(
        "kwok /healthz",
        lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def start_ingress_addresses(
    *, state: pathlib.Path, kubeconfig: pathlib.Path, tie_to_parent: bool = False
) -> processes.Process:
    """The ingress controller stand-in (harness/ingresses.py): publishes 127.0.0.1 for every Ingress."""
    root = pathlib.Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "harness.ingresses", f"--kubeconfig={kubeconfig}"]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    process = processes.spawn("ingress-addresses", argv, log_dir=state / "logs", env=env, cwd=root,
                              tie_to_parent=tie_to_parent)
    processes.wait_until(
        "ingress-addresses to list Ingresses",
        lambda: "publishing" in (state / "logs" / "ingress-addresses.log").read_text(errors="replace"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def start_volumes(
    *, state: pathlib.Path, kubeconfig: pathlib.Path, node: str, tie_to_parent: bool = False
) -> processes.Process:
    """The real node's volume provisioner (harness/volumes.py): writable directories under <state>/volumes."""
    root = pathlib.Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "harness.volumes", f"--kubeconfig={kubeconfig}", f"--root={state / 'volumes'}",
            f"--node={node}"]  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    process = processes.spawn("volumes", argv, log_dir=state / "logs", env=env, cwd=root, tie_to_parent=tie_to_parent)
    processes.wait_until(
        "the volume provisioner to start",
        lambda: "provisioning" in (state / "logs" / "volumes.log").read_text(errors="replace"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def start_redis(*, state: pathlib.Path, port: int, tie_to_parent: bool = False) -> processes.Process:
    data = state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data),
    ]  # fmt: skip
    process = processes.spawn("redis", argv, log_dir=state / "logs", tie_to_parent=tie_to_parent)
    processes.wait_until("redis PING", lambda: _redis_ping(port), timeout=STARTUP_TIMEOUT, process=process)
    return process


def profiler_switch(state: pathlib.Path) -> pathlib.Path:
    return state / "argocd" / "profiler.enabled"


def _argocd_env(binaries: versions.Binaries, state: pathlib.Path, kubeconfig: pathlib.Path) -> dict[str, str]:
    root = state / "argocd"
    for sub in ("tls", "ssh", "gpg", "tmp", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        # Use the kubeconfig (and its namespace) instead of a pod's service account.
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "KUBECONFIG": str(kubeconfig),
        "ARGOCD_TLS_DATA_PATH": str(root / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(root / "ssh"),
        "ARGOCD_GNUPGHOME": str(root / "gpg"),
        "ARGOCD_GPG_ENABLED": "false",
        # Repo checkouts and helm caches stay inside this stack's state folder.
        "TMPDIR": str(root / "tmp"),
        "HOME": str(root / "home"),
        # helm, and the wrapper scripts the repo-server execs (git-verify-wrapper.sh).
        "PATH": os.pathsep.join([str(binaries.helm.parent), str(binaries.argocd.parent), os.environ.get("PATH", "")]),
        "HOSTNAME": "argocd-application-controller-0",
        # Go's pprof endpoints on the metrics ports answer while this file says "true" (it does not exist
        # unless a benchmark writes it: the controller's metrics port listens on every address).
        "ARGOCD_ENABLE_PROFILER_FILE_PATH": str(profiler_switch(state)),
    }


def start_repo_server(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    kubeconfig: pathlib.Path,
    port: int,
    metrics_port: int,
    redis_port: int,
    tie_to_parent: bool = False,
    argocd_defaults: bool = False,
    extra_args: Sequence[str] = (),
) -> processes.Process:
    argv = [
        str(binaries.argocd),
        "--address=127.0.0.1",
        f"--port={port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        f"--redis=127.0.0.1:{redis_port}",
        "--loglevel=info",
    ]
    if not argocd_defaults:
        # Resolved branch heads are cached this long (3m by default): keep it short so a pushed
        # commit is seen at the next resync.
        argv.append(f"--revision-cache-expiration={RESYNC_SECONDS // 2}s")
    argv += extra_args  # last wins: these override the flags above
    env = _argocd_env(binaries, state, kubeconfig) | {"ARGOCD_BINARY_NAME": "argocd-repo-server"}
    process = processes.spawn("argocd-repo-server", argv, log_dir=state / "logs", env=env, tie_to_parent=tie_to_parent)
    processes.wait_until("argocd-repo-server port", lambda: port_open(port), timeout=STARTUP_TIMEOUT, process=process)
    return process


def start_application_controller(
    binaries: versions.Binaries,
    *,
    state: pathlib.Path,
    kubeconfig: pathlib.Path,
    metrics_port: int,
    redis_port: int,
    repo_server_port: int,
    tie_to_parent: bool = False,
    argocd_defaults: bool = False,
    extra_args: Sequence[str] = (),
) -> processes.Process:
    argv = [
        str(binaries.argocd),
        f"--metrics-port={metrics_port}",
        f"--redis=127.0.0.1:{redis_port}",
        f"--repo-server=127.0.0.1:{repo_server_port}",
        "--loglevel=info",
        "--status-processors=4",
        "--operation-processors=4",
    ]
    if not argocd_defaults:
        # Frequent resyncs (default 3m) so tests see a pushed commit within seconds.
        argv += [f"--app-resync={RESYNC_SECONDS}", "--app-resync-jitter=0"]
    argv += extra_args  # last wins: these override the flags above
    env = _argocd_env(binaries, state, kubeconfig) | {"ARGOCD_BINARY_NAME": "argocd-application-controller"}
    process = processes.spawn(
        "argocd-application-controller", argv, log_dir=state / "logs", env=env, tie_to_parent=tie_to_parent
    )
    processes.wait_until(
        "argocd-application-controller /healthz",
        lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/healthz"),
        timeout=STARTUP_TIMEOUT,
        process=process,
    )
    return process


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _http_json(url: str, body: object | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        decoded = json.loads(response.read())
    assert isinstance(decoded, dict)
    return decoded


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def _https_ok(url: str) -> bool:
    # The components' own self-signed serving certs: only liveness is checked here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return bool(response.status == 200)


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")
