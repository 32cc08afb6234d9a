"""Start, inspect and stop the control plane; also the command line behind harness/stack.sh.

Two shapes:
  * minimal: etcd + kube-apiserver (client-cert authn, RBAC), watch cache off - fast, for watch loops;
  * full: the above plus controller-manager, scheduler, kwok with one simulated node, Redis, the
    Argo CD CRDs/config, and Argo CD's application-controller and repo-server.
Either can add (node=True) a real node where Pods really run (harness/node.py): containerd, the
kubelet and kube-proxy; the minimal shape then also runs the controller-manager and scheduler.

Everything listens on 127.0.0.1 at ports picked free at start, except that with a real node the
API server listens on the pod bridge's gateway address (harness/node.py), which the harness creates.
All state (certs, etcd data, logs, kubeconfigs) lives in one state folder outside the repo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import shutil
import sys
import time
from collections.abc import Mapping, Sequence

from harness import argocd, components, csidriver, errors, kube, pki, processes, versions
from harness import node as real_node

__all__ = ["DEFAULT_STATE", "KWOK_NODE", "Stack", "load", "main", "start"]

logger = logging.getLogger(__name__)

DEFAULT_STATE = pathlib.Path("/tmp/storeops-stack")
STATE_FILE = "stack.json"
# What start() writes into a state folder, all of it removed before a new start.
STATE_PARTS = [
    "etcd", "logs", "pki", "kubeconfig", "kubeconfigs", "apiserver", "controller-manager", "scheduler",
    "redis", "argocd", "node",
]  # fmt: skip
KWOK_NODE = "kwok-node-0"


@dataclasses.dataclass
class Stack:
    """A running control plane. Attributes are what tests and people need to reach it."""

    state: pathlib.Path
    binaries: versions.Binaries
    certs: pki.Pki
    ports: dict[str, int]
    kubeconfig: pathlib.Path
    full: bool
    watch_cache: bool
    processes: dict[str, processes.Process] = dataclasses.field(default_factory=dict)
    namespace: str = argocd.NAMESPACE
    started_seconds: float = 0.0
    # Components are killed if this Python process dies (fixtures); not for `stack.sh start`.
    tie_to_parent: bool = False
    # Argo CD with its own defaults (3-minute polling, 3-minute revision cache) instead of 10 s.
    argocd_defaults: bool = False
    # Flags appended to Argo CD's components' own, by process name (the fleet benchmark's tuning).
    argocd_flags: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # Keys added to argocd-cm (the same benchmark's).
    argocd_settings: dict[str, str] = dataclasses.field(default_factory=dict)
    # The real node (harness/node.py), when started with node=True.
    node: real_node.Node | None = None
    node_started_seconds: float = 0.0
    # Where the API server listens: 127.0.0.1, or the pod bridge's gateway with a real node.
    api_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.api_host}:{self.ports['apiserver']}"

    @property
    def kubectl(self) -> kube.Kubectl:
        return kube.Kubectl(binary=self.binaries.kubectl, kubeconfig=self.kubeconfig)

    @property
    def api(self) -> kube.ApiClient:
        return kube.ApiClient(url=self.url, ca_cert=self.certs.ca_cert, client=self.certs.clients["admin"])

    @property
    def helm(self) -> pathlib.Path:
        return self.binaries.helm

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd; waits for /readyz."""
        self.processes["kube-apiserver"].stop()
        self.processes["kube-apiserver"] = components.start_apiserver(
            self.binaries,
            state=self.state,
            certs=self.certs,
            etcd_port=self.ports["etcd"],
            port=self.ports["apiserver"],
            watch_cache=self.watch_cache,
            tie_to_parent=self.tie_to_parent,
            address=self.api_host,
        )
        self.save()

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision: watches from older resourceVersions then get 410."""
        return components.compact_etcd(self.ports["etcd"])

    def logs(self, *, lines: int = 60) -> str:
        """The last lines of each component's log, one titled block per component."""
        blocks = []
        for name, process in self.processes.items():
            state = "running" if process.alive() else "exited"
            blocks.append(f"----- {name} (pid {process.pid}, {state}) {process.log_path} -----")
            blocks.append(processes.tail(process.log_path, lines=lines))
        return "\n".join(blocks)

    def stop(self) -> None:
        """Stop every process this stack started, newest first, by pid; remove the node's pods and network."""
        with_node = self.node is not None or (self.state / "node").exists()
        if with_node:
            proxy = versions.node_binaries().kube_proxy
            real_node.cleanup(self.state, self.processes, kube_proxy=proxy)
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        if with_node:
            real_node.network_down(self.state)
        (self.state / STATE_FILE).unlink(missing_ok=True)

    def status(self) -> dict[str, bool]:
        return {name: process.alive() for name, process in self.processes.items()}

    def save(self) -> None:
        record = {
            "full": self.full,
            "node": self.node is not None,
            "api_host": self.api_host,
            "watch_cache": self.watch_cache,
            "argocd_defaults": self.argocd_defaults,
            "argocd_flags": self.argocd_flags,
            "argocd_settings": self.argocd_settings,
            "ports": self.ports,
            "kubeconfig": str(self.kubeconfig),
            "namespace": self.namespace,
            "processes": [p.describe() for p in self.processes.values()],
        }
        (self.state / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")

    # Helpers for Argo CD tests -------------------------------------------------------------

    def application(self, name: str) -> dict[str, object] | None:
        return self.kubectl.get("applications.argoproj.io", name, namespace=self.namespace)

    def refresh(self, name: str, *, hard: bool = False) -> None:
        """Ask Argo CD to compare the Application with Git now (hard: also regenerate manifests)."""
        self.kubectl.run(
            "annotate", "--overwrite", "-n", self.namespace, "applications.argoproj.io", name,
            f"argocd.argoproj.io/refresh={'hard' if hard else 'normal'}",
        )  # fmt: skip

    def wait_application(
        self,
        name: str,
        *,
        sync: str = "Synced",
        health: str = "Healthy",
        revision: str | None = None,
        timeout: float = 180.0,
    ) -> dict[str, object]:
        """Wait until the Application reports this sync and health status (at `revision`, if given)."""
        seen: dict[str, object] = {}

        def reached() -> bool:
            app = self.application(name)
            if app is None:
                return False
            seen.clear()
            seen.update(app)
            status = app.get("status") or {}
            assert isinstance(status, dict)
            synced = status.get("sync") or {}
            return bool(
                synced.get("status") == sync
                and (status.get("health") or {}).get("status") == health
                and (revision is None or synced.get("revision") == revision)
            )

        try:
            at = f" at {revision}" if revision else ""
            self.kubectl.wait_for(f"Application {name} {sync}/{health}{at}", reached, timeout=timeout)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last status: {json.dumps(seen.get('status'), indent=1)}") from e
        return seen

    def wait_gone(self, kind: str, name: str, *, namespace: str | None = None, timeout: float = 120.0) -> None:
        self.kubectl.wait_for(
            f"{kind} {namespace or ''}/{name} to be deleted",
            lambda: self.kubectl.get(kind, name, namespace=namespace) is None,
            timeout=timeout,
        )


def start(
    state: pathlib.Path,
    *,
    full: bool,
    watch_cache: bool | None = None,
    binaries: versions.Binaries | None = None,
    tie_to_parent: bool = False,
    argocd_defaults: bool = False,
    argocd_flags: Mapping[str, Sequence[str]] | None = None,
    argocd_settings: Mapping[str, str] | None = None,
    node: bool = False,
) -> Stack:
    """Start a stack in `state` (created; must not hold a running stack). Stops what it started on failure.

    node: also start the real node (harness/node.py); NodeUnavailableError says why a machine cannot.
    """
    began = time.monotonic()
    found = binaries or versions.locate()
    node_binaries = versions.locate_node() if node else None
    if node:
        problems = real_node.host_problems()
        if problems:
            raise real_node.NodeUnavailableError("this machine cannot run the harness node: " + "; ".join(problems))
    state.mkdir(parents=True, exist_ok=True)
    if (state / STATE_FILE).exists():
        raise errors.StartupError(f"{state} already holds a stack ({state / STATE_FILE}); stop it first")
    # Leftovers of an earlier stack (etcd data above all) would leak into this one.
    for leftover in STATE_PARTS:
        shutil.rmtree(state / leftover, ignore_errors=True)
    names = ["etcd", "etcd-peer", "apiserver"]
    if full:
        names += ["controller-manager", "scheduler", "kwok", "redis", "repo-server", "repo-server-metrics"]
        names += ["controller-metrics"]
    elif node:
        names += ["controller-manager", "scheduler"]
    if node:
        names += ["kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics", "cri-stream"]
        names += ["ingress-http"]  # Traefik, the node's ingress controller, on 127.0.0.1 (harness/addons.py)
    ports = _free_ports(names)
    api_host = "127.0.0.1"
    if node:
        # The bridge first: the API server listens on its gateway address.
        real_node.network_up(state)
        api_host = real_node.GATEWAY
    certs = pki.create(state / "pki", extra_server_ips=[api_host] if node else None)
    admin = kube.write_kubeconfig(
        state / "kubeconfig", server=f"https://{api_host}:{ports['apiserver']}", ca_cert=certs.ca_cert,
        client=certs.clients["admin"],
    )  # fmt: skip
    stack = Stack(
        state=state,
        binaries=found,
        certs=certs,
        ports=ports,
        kubeconfig=admin,
        full=full,
        watch_cache=full if watch_cache is None else watch_cache,
        tie_to_parent=tie_to_parent,
        argocd_defaults=argocd_defaults,
        argocd_flags={name: list(flags) for name, flags in (argocd_flags or {}).items()},
        argocd_settings=dict(argocd_settings or {}),
        api_host=api_host,
    )
    try:
        _start_components(stack, node_binaries)
    except TimeoutError as e:
        logger.error("stack failed to start; stopping what started. Logs:\n%s", stack.logs(lines=30))
        stack.stop()
        raise errors.StartupError(str(e)) from e
    except BaseException:
        logger.error("stack failed to start; stopping what started. Logs:\n%s", stack.logs(lines=30))
        stack.stop()
        raise
    stack.started_seconds = time.monotonic() - began
    stack.save()
    logger.info("stack ready in %.1fs: %s, kubeconfig %s", stack.started_seconds, stack.url, stack.kubeconfig)
    return stack


def _start_components(stack: Stack, node_binaries: versions.NodeBinaries | None = None) -> None:
    b, state, ports, certs = stack.binaries, stack.state, stack.ports, stack.certs
    run = stack.processes
    run["etcd"] = components.start_etcd(
        b, state=state, client_port=ports["etcd"], peer_port=ports["etcd-peer"], tie_to_parent=stack.tie_to_parent
    )
    run["kube-apiserver"] = components.start_apiserver(
        b,
        state=state,
        certs=certs,
        etcd_port=ports["etcd"],
        port=ports["apiserver"],
        watch_cache=stack.watch_cache,
        tie_to_parent=stack.tie_to_parent,
        address=stack.api_host,
    )
    stack.save()
    if not stack.full and node_binaries is None:
        return

    def kubeconfig(client: str, namespace: str | None = None) -> pathlib.Path:
        return kube.write_kubeconfig(
            state / "kubeconfigs" / f"{client}.kubeconfig", server=stack.url, ca_cert=certs.ca_cert,
            client=certs.clients[client], namespace=namespace,
        )  # fmt: skip

    run["kube-controller-manager"] = components.start_controller_manager(
        b,
        state=state,
        certs=certs,
        kubeconfig=kubeconfig("controller-manager"),
        port=ports["controller-manager"],
        tie_to_parent=stack.tie_to_parent,
    )
    run["kube-scheduler"] = components.start_scheduler(
        b, state=state, kubeconfig=kubeconfig("scheduler"), port=ports["scheduler"], tie_to_parent=stack.tie_to_parent
    )
    if node_binaries is not None:
        began = time.monotonic()
        stack.node = real_node.start(
            state=state, certs=certs, binaries=b, node_binaries=node_binaries, api_url=stack.url, ports=ports,
            run=run, tie_to_parent=stack.tie_to_parent,
        )  # fmt: skip
        stack.node_started_seconds = time.monotonic() - began
        logger.info("node %s ready in %.1fs", real_node.NAME, stack.node_started_seconds)
        stack.kubectl.apply(NODE_STORAGE_CLASS, server_side=False)
        run["volumes"] = components.start_volumes(
            state=state, kubeconfig=stack.kubeconfig, node=real_node.NAME, tie_to_parent=stack.tie_to_parent
        )
        # Volumes that grow in place, for claims of the class storeops-csi (the default class stays).
        run.update(csidriver.start(
            versions.locate_csi(), state=state, kubelet_dir=stack.node.directory / "kubelet",
            kubeconfig=stack.kubeconfig, kubectl=stack.kubectl, node=real_node.NAME, tie_to_parent=stack.tie_to_parent,
        ))  # fmt: skip
        stack.save()
    if not stack.full:
        return
    run["kwok"] = components.start_kwok(
        b, state=state, kubeconfig=kubeconfig("kwok"), port=ports["kwok"], tie_to_parent=stack.tie_to_parent
    )
    # With a real node, the simulated one is tainted so that store Pods run where they really run.
    stack.kubectl.apply(_kwok_node(KWOK_NODE, tainted=stack.node is not None), server_side=False)
    stack.kubectl.wait_for(f"node {KWOK_NODE} Ready", lambda: _node_ready(stack, KWOK_NODE), timeout=60)
    if stack.node is None:
        stack.kubectl.apply(STORAGE_CLASS, server_side=False)
    if stack.node is None:
        # With a real node, its ingress controller (Traefik) publishes the addresses itself.
        run["ingress-addresses"] = components.start_ingress_addresses(
            state=state, kubeconfig=stack.kubeconfig, tie_to_parent=stack.tie_to_parent
        )
    run["redis"] = components.start_redis(state=state, port=ports["redis"], tie_to_parent=stack.tie_to_parent)
    stack.save()

    crd_names = stack.kubectl.run(
        "apply", "--server-side", "--field-manager=storeops-harness", "-o", "name",
        *(f"-f={c}" for c in argocd.crd_files(b.argocd_crds)),
    ).split()  # fmt: skip
    stack.kubectl.wait_for(
        "the Argo CD CRDs to be Established", lambda: _established(stack, crd_names), timeout=60, interval=0.5
    )
    stack.kubectl.apply(
        *argocd.bootstrap_manifests(namespace=stack.namespace, argocd_user=certs.clients["argocd"].user,
                                     settings=stack.argocd_settings)
    )
    argocd_kubeconfig = kubeconfig("argocd", namespace=stack.namespace)
    run["argocd-repo-server"] = components.start_repo_server(
        b, state=state, kubeconfig=argocd_kubeconfig, port=ports["repo-server"],
        metrics_port=ports["repo-server-metrics"], redis_port=ports["redis"], tie_to_parent=stack.tie_to_parent,
        argocd_defaults=stack.argocd_defaults, extra_args=stack.argocd_flags.get("argocd-repo-server", ()),
    )  # fmt: skip
    run["argocd-application-controller"] = components.start_application_controller(
        b, state=state, kubeconfig=argocd_kubeconfig, metrics_port=ports["controller-metrics"],
        redis_port=ports["redis"], repo_server_port=ports["repo-server"], tie_to_parent=stack.tie_to_parent,
        argocd_defaults=stack.argocd_defaults,
        extra_args=stack.argocd_flags.get("argocd-application-controller", ()),
    )  # fmt: skip


#: The default StorageClass: the controller-manager's hostPath provisioner makes a volume per claim
#: (a directory under /tmp) and deletes it with the claim, as a cloud's provisioner would.
STORAGE_CLASS: dict[str, object] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


#: The default StorageClass with a real node: harness/volumes.py makes a directory per claim that
#: the Pod's own (non-root) user can write, and deletes it with the claim.
NODE_STORAGE_CLASS: dict[str, object] = STORAGE_CLASS | {"provisioner": "storeops.local/host-path"}
#: The taint that keeps Pods off the simulated node when a real one runs (harness-only: no chart or
#: rendered Application tolerates it or knows of it).
KWOK_TAINT = {"key": "storeops.local/simulated", "value": "true", "effect": "NoSchedule"}


def _free_ports(names: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = processes.free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _kwok_node(name: str, *, tainted: bool = False) -> dict[str, object]:
    """A simulated node kwok manages (label type=kwok). Untainted unless a real node runs beside it:
    then ordinary Pods go to the real node."""
    # Simulated room for a fleet: bench/fleet.py puts thousands of stores (three Pods each) on it.
    resources = {"cpu": "1000", "memory": "4Ti", "pods": "5000"}
    spec: dict[str, object] = {"taints": [KWOK_TAINT]} if tainted else {}
    return {
        "spec": spec,
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def _established(stack: Stack, crd_names: list[str]) -> bool:
    listed = json.loads(stack.kubectl.run("get", *crd_names, "-o", "json"))
    return all(
        any(c.get("type") == "Established" and c.get("status") == "True" for c in crd["status"]["conditions"] or [])
        for crd in listed["items"]
    )


def _node_ready(stack: Stack, name: str) -> bool:
    node = stack.kubectl.get("node", name)
    status = (node or {}).get("status") or {}
    assert isinstance(status, dict)
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def load(state: pathlib.Path) -> Stack:
    """The stack a previous `start` left in `state` (processes adopted by pid)."""
    path = state / STATE_FILE
    if not path.exists():
        raise errors.HarnessError(f"no stack in {state} (no {path})")
    record = json.loads(path.read_text())
    return Stack(
        state=state,
        binaries=versions.binaries(),
        certs=pki.load(state / "pki"),
        ports={k: int(v) for k, v in record["ports"].items()},
        kubeconfig=pathlib.Path(record["kubeconfig"]),
        full=bool(record["full"]),
        watch_cache=bool(record["watch_cache"]),
        processes={d["name"]: processes.adopt(d) for d in record["processes"]},
        namespace=str(record["namespace"]),
        argocd_defaults=bool(record.get("argocd_defaults", False)),
        argocd_flags={str(k): [str(f) for f in v] for k, v in (record.get("argocd_flags") or {}).items()},
        argocd_settings={str(k): str(v) for k, v in (record.get("argocd_settings") or {}).items()},
        node=real_node.load(state) if record.get("node") else None,
        api_host=str(record.get("api_host", "127.0.0.1")),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness/stack.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "logs"])
    parser.add_argument(
        "--state", type=pathlib.Path, default=DEFAULT_STATE, help=f"state folder (default {DEFAULT_STATE})"
    )
    parser.add_argument("--minimal", action="store_true", help="etcd + kube-apiserver only")
    parser.add_argument("--node", action="store_true", help="also a real node where Pods run (needs root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "start":
            stack = start(args.state, full=not args.minimal, node=args.node)
            print(f"stack ready in {stack.started_seconds:.1f}s")
            print(f"export KUBECONFIG={stack.kubeconfig}")
            print(f"export PATH={stack.binaries.kubectl.parent}:{stack.binaries.helm.parent}:$PATH")
            print(f"API server {stack.url}; logs in {stack.state / 'logs'}; stop with: harness/stack.sh stop")
        elif args.command == "stop":
            load(args.state).stop()
            print(f"stopped the stack in {args.state}")
        elif args.command == "status":
            stack = load(args.state)
            for name, alive in stack.status().items():
                print(f"{name:32} {'running' if alive else 'STOPPED'}  pid {stack.processes[name].pid}")
            print(f"KUBECONFIG={stack.kubeconfig}  {stack.url}")
            return 0 if all(stack.status().values()) else 1
        else:
            print(load(args.state).logs())
    except errors.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
