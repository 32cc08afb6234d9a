"""A real node for the harness: containerd + runc, a bridge pod network, the kubelet and kube-proxy.

Pods scheduled to it really run (kwok's node only pretends). Everything it writes lives under
``<state>/node`` except what the kernel keeps elsewhere, which stop() removes again:

* the bridge ``storeops0`` (``10.250.0.1/24``, the pod network ``10.250.0.0/24``) and its veths;
* the network namespaces containerd pins in ``/var/run/netns``;
* the ``STOREOPS-BOUNDARY`` iptables chain: pod traffic may reach other pods, the node (through the
  bridge gateway) and its own loopback; everything else is dropped, and nothing is masqueraded;
* kube-proxy's rules (``kube-proxy --cleanup``), the kubelet's ``kubepods`` cgroups;
* the sysctls it sets (``net.ipv4.ip_forward``, ``net.bridge.bridge-nf-call-iptables``), restored;
* the nftables tables of kube-network-policies (harness/addons.py).

One node stack runs per machine at a time (the bridge and the subnet are fixed names).
Components: containerd and runc, the CNI plugins (``/usr/lib/cni``) and iptables from Debian; the
kubelet and kube-proxy from the Kubernetes wrapper module (build.sh); the sandbox image from
``harness/images``. Once the node is Ready, its add-ons start as Pods on it (harness/addons.py):
CoreDNS, kube-network-policies and Traefik.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import pathlib
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator

from harness import addons, errors, images, kube, pki, processes, versions

__all__ = [
    "BOUNDARY_CHAIN",
    "BRIDGE",
    "GATEWAY",
    "NAME",
    "POD_CIDR",
    "Node",
    "NodeUnavailableError",
    "cleanup",
    "host_problems",
    "network_down",
    "network_up",
    "start",
]

logger = logging.getLogger(__name__)

NAME = pki.NODE_NAME
POD_CIDR = "10.250.0.0/24"
GATEWAY = "10.250.0.1"
BRIDGE = "storeops0"
CNI_NETWORK = "storeops"
BOUNDARY_CHAIN = "STOREOPS-BOUNDARY"
CNI_BIN = pathlib.Path("/usr/lib/cni")
NETNS_DIRS = (pathlib.Path("/var/run/netns"), pathlib.Path("/run/netns"))
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
#: Labels of the real node; test Pods select it with NODE_SELECTOR.
NODE_LABELS = {"storeops.local/node": "real"}
NODE_SELECTOR = {"kubernetes.io/hostname": NAME}
STARTUP_TIMEOUT = 120.0
#: Which state folder the bridge belongs to, so a later start can clean up after a killed stack.
OWNER_FILE = pathlib.Path("/run/storeops-harness-node.json")
LOCK_FILE = pathlib.Path("/run/storeops-harness-node.lock")
#: The stack's port (harness/stack.py) where Traefik, the ingress controller, listens on 127.0.0.1.
INGRESS_PORT = "ingress-http"
#: Seconds a starting node stack waits for another one on this machine to stop (default: fail at once).
WAIT_VARIABLE = "STOREOPS_NODE_WAIT"
RBAC = "rbac.authorization.k8s.io"
#: iptables chains the kubelet creates (its canaries, the localnet firewall, the iptables-mode hint).
KUBELET_CHAINS = [
    ("filter", "KUBE-FIREWALL"), ("filter", "KUBE-KUBELET-CANARY"), ("nat", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-KUBELET-CANARY"), ("mangle", "KUBE-IPTABLES-HINT"),
]  # fmt: skip
#: containerd's registry client honours the proxy variables: every pull of an image that was not
#: built here goes to a closed port on loopback and fails at once (ErrImagePull), so neither a pull
#: nor its name lookup ever leaves this machine.
PULL_NOWHERE = {
    name: value
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY")
    for name, value in ((proxy, "http://127.0.0.1:9"), (proxy.lower(), "http://127.0.0.1:9"))
} | {"NO_PROXY": "", "no_proxy": ""}
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
COMMANDS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
}


class NodeUnavailableError(errors.HarnessError):
    """This machine cannot run the real node; the message says exactly why."""


@dataclasses.dataclass(frozen=True)
class Node:
    """Where a node's files are and how to reach its runtime."""

    directory: pathlib.Path
    images: dict[str, str]  # short name -> reference (storeops.local/...)
    #: Where the ingress controller (Traefik, class `traefik`) answers on the host: 127.0.0.1:<port>.
    ingress_port: int | None = None
    #: Seconds after their images were imported at which each add-on was ready.
    addons: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def socket(self) -> pathlib.Path:
        return self.directory / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        return _run("ctr", f"--address={self.socket}", f"--namespace={K8S_NAMESPACE}", *args, check=check,
                    timeout=timeout)  # fmt: skip


def host_problems() -> list[str]:
    """Why this machine cannot run the node ([] when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the node needs root (containerd, network namespaces, iptables)")
    for command, package in COMMANDS.items():
        if shutil.which(command) is None:
            problems.append(f"`{command}` is not installed (Debian package {package}; build.sh installs it)")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN / plugin).is_file():
            problems.append(f"CNI plugin {CNI_BIN / plugin} is missing (Debian package containernetworking-plugins)")
    if not images.BUSYBOX.is_file():
        problems.append(f"{images.BUSYBOX} is missing (Debian package busybox-static)")
    cgroup = pathlib.Path("/sys/fs/cgroup")
    if not (cgroup / "memory").is_dir() and not (cgroup / "cgroup.controllers").is_file():
        problems.append("no memory cgroup controller is mounted under /sys/fs/cgroup")
    try:
        filesystems = pathlib.Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        problems.append("the kernel offers no overlay filesystem (containerd's overlayfs snapshotter needs it)")
    if not pathlib.Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append("bridge netfilter (br_netfilter) is not loaded: Services would not work between Pods")
    if not os.access("/proc/sys/net/ipv4/ip_forward", os.W_OK):
        problems.append("/proc/sys/net/ipv4/ip_forward is not writable")
    return problems


def start(
    *,
    state: pathlib.Path,
    certs: pki.Pki,
    binaries: versions.Binaries,
    node_binaries: versions.NodeBinaries,
    api_url: str,
    ports: dict[str, int],
    run: dict[str, processes.Process],
    tie_to_parent: bool,
) -> Node:
    """Start containerd, the kubelet and kube-proxy; add each to `run` as it starts. Waits for Ready."""
    problems = host_problems()
    if problems:
        raise NodeUnavailableError("this machine cannot run the harness node: " + "; ".join(problems))
    addon_binaries = versions.locate_addons()
    directory = state / "node"
    if not (directory / "sysctl.json").exists():
        network_up(state)
    logs = state / "logs"
    pause = images.pause(node_binaries)
    busybox = images.busybox(node_binaries)
    node = Node(
        directory=directory, images={"pause": pause.ref, "busybox": busybox.ref}, ingress_port=ports[INGRESS_PORT]
    )
    _save(node)

    # containerd, with the CRI plugin, its own root/state/socket and the CNI config below.
    cni_conf = directory / "cni" / "net.d"
    cni_conf.mkdir(parents=True)
    (cni_conf / "10-storeops.conflist").write_text(json.dumps(_cni_config(directory), indent=2) + "\n")
    config = directory / "containerd" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_containerd_config(directory, sandbox_image=pause.ref, stream_port=ports["cri-stream"]))
    run["containerd"] = processes.spawn(
        "containerd", ["containerd", f"--config={config}"], log_dir=logs, tie_to_parent=tie_to_parent,
        env=PULL_NOWHERE,
    )  # fmt: skip
    processes.wait_until(
        "containerd to answer on its socket",
        lambda: node.socket.exists() and bool(node.ctr("version", check=False, timeout=10)),
        timeout=STARTUP_TIMEOUT,
        process=run["containerd"],
    )
    for image in (pause, busybox):
        node.ctr("images", "import", str(image.archive), timeout=120)

    # The kubelet: client cert as system:node:<name>, serving cert for the API server's calls.
    kubelet_dir = directory / "kubelet"
    kubelet_dir.mkdir()
    serving_cert, serving_key = pki.serving_cert(
        certs, "kubelet-serving", subject=f"/CN={NAME}", sans=[f"IP:{GATEWAY}", f"DNS:{NAME}"]
    )
    kubelet_kubeconfig = kube.write_kubeconfig(
        directory / "kubelet.kubeconfig", server=api_url, ca_cert=certs.ca_cert, client=certs.clients["kubelet"]
    )
    kubelet_config = directory / "kubelet-config.json"
    kubelet_config.write_text(
        json.dumps(
            _kubelet_config(
                node, ca_cert=certs.ca_cert, serving=(serving_cert, serving_key), port=ports["kubelet"],
                healthz_port=ports["kubelet-healthz"],
            ),
            indent=2,
        )
        + "\n"
    )  # fmt: skip
    run["kubelet"] = processes.spawn(
        "kubelet",
        [
            str(node_binaries.kubelet),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={kubelet_dir}",
            f"--cert-dir={directory / 'kubelet-pki'}",
            # The kubelet refuses a loopback node IP: the node is the bridge gateway, an address
            # the harness made (never the machine's external interface).
            f"--node-ip={GATEWAY}",
            f"--hostname-override={NAME}",
            f"--node-labels={','.join(f'{k}={v}' for k, v in NODE_LABELS.items())}",
            "--v=1",
        ],
        log_dir=logs,
        tie_to_parent=tie_to_parent,
    )

    # kube-proxy in iptables mode, Services for the pod network only.
    proxy_kubeconfig = kube.write_kubeconfig(
        directory / "kube-proxy.kubeconfig", server=api_url, ca_cert=certs.ca_cert, client=certs.clients["kube-proxy"]
    )
    proxy_config = directory / "kube-proxy-config.json"
    proxy_config.write_text(
        json.dumps(_kube_proxy_config(proxy_kubeconfig, ports["kube-proxy-healthz"], ports["kube-proxy-metrics"]))
    )
    run["kube-proxy"] = processes.spawn(
        "kube-proxy",
        [str(node_binaries.kube_proxy), f"--config={proxy_config}", "--v=1"],
        log_dir=logs,
        tie_to_parent=tie_to_parent,
    )
    kubectl = kube.Kubectl(binary=binaries.kubectl, kubeconfig=state / "kubeconfig")
    # The API server calls the kubelet (logs, exec, port-forward) as this user.
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "storeops-apiserver-kubelet"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": certs.clients["apiserver-kubelet"].user}],
        }
    )  # fmt: skip
    processes.wait_until(
        f"node {NAME} Ready", lambda: _node_ready(kubectl), timeout=STARTUP_TIMEOUT, process=run["kubelet"]
    )
    processes.wait_until(
        "kube-proxy /healthz",
        lambda: _http_ok(f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz"),
        timeout=STARTUP_TIMEOUT,
        process=run["kube-proxy"],
    )
    node = dataclasses.replace(
        node,
        addons=addons.start(
            kubectl=kubectl, ctr=node.ctr, binaries=addon_binaries, node_name=NAME, node_selector=NODE_SELECTOR,
            pod_cidr=POD_CIDR, ingress_port=ports[INGRESS_PORT],
        ),
    )  # fmt: skip
    _save(node)
    return node


def _save(node: Node) -> None:
    record = {"images": node.images, "ingress_port": node.ingress_port, "addons": node.addons}
    (node.directory / "node.json").write_text(json.dumps(record) + "\n")


def load(state: pathlib.Path) -> Node | None:
    """The node a stack in `state` started (None when it started none)."""
    record = state / "node" / "node.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return Node(
        directory=state / "node", images=dict(saved["images"]), ingress_port=saved.get("ingress_port"),
        addons=dict(saved.get("addons") or {}),
    )  # fmt: skip


def cleanup(
    state: pathlib.Path, run: dict[str, processes.Process], *, kube_proxy: pathlib.Path | None = None
) -> None:
    """Stop the node's processes and remove its pods, mounts and cgroups; network_down() does the rest."""
    directory = state / "node"
    if not directory.exists():
        return
    node = Node(directory=directory, images={})
    for name in ("kube-proxy", "kubelet"):
        if name in run:
            run[name].stop()
    if kube_proxy is not None and kube_proxy.exists():
        _run(str(kube_proxy), "--cleanup", check=False, timeout=60)
    netns: set[str] = set()
    if "containerd" in run and run["containerd"].alive():
        netns = _remove_containers(node)
        run["containerd"].stop(timeout=20)
    _kill_shims(node)
    _kill_pod_processes()
    for path in sorted(netns, reverse=True):
        _unmount(pathlib.Path(path))
        pathlib.Path(path).unlink(missing_ok=True)
    for mount in _mounts_under(directory):
        _unmount(mount)
    _remove_cgroups()
    for leftover in ("containerd", "kubelet", "cni"):
        shutil.rmtree(directory / leftover, ignore_errors=True)


# --- configuration --------------------------------------------------------------------------------


def _cni_config(directory: pathlib.Path) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerading: pod traffic never leaves this machine (see _network_up).
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(directory / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _containerd_config(directory: pathlib.Path, *, sandbox_image: str, stream_port: int) -> str:
    base = directory / "containerd"
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{base / "root"}"
state = "{base / "state"}"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{base / "containerd.sock"}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

{cri}]
  # Built locally by harness/images (no registry is reachable).
  sandbox_image = "{sandbox_image}"
  # Root here lacks CAP_SYS_RESOURCE: the negative oom_score_adj the kubelet asks for would fail.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  # Pod network namespaces under <state>/node/containerd/state, not /var/run/netns.
  netns_mounts_under_state_dir = true

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{directory / "cni" / "net.d"}"
  max_conf_num = 1

{cri}.registry]
  config_path = ""
"""


def _kubelet_config(
    node: Node, *, ca_cert: pathlib.Path, serving: tuple[pathlib.Path, pathlib.Path], port: int, healthz_port: int
) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        # This kernel mounts cgroup v1, which kubelet 1.35+ refuses unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        # Pods resolve through the cluster DNS (CoreDNS, harness/addons.py), never an upstream.
        "resolvConf": "",
        "clusterDNS": [addons.DNS_SERVICE_IP],
        "clusterDomain": addons.CLUSTER_DOMAIN,
        # Room for the control plane, Argo CD and the tests on a 2-core machine.
        # CPU: requests are bookkeeping (the control plane is not in a cgroup the kubelet limits);
        # 1.8 of the 2 cores stay allocatable so that the local profile's example stores and a
        # demo store fit together (about 1.5 cores of requests).
        "systemReserved": {"cpu": "100m", "memory": "2Gi"},
        "kubeReserved": {"cpu": "100m", "memory": "1Gi"},
        # Loose enough for a shared CI disk; the harness cleans up after each stack instead.
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        # Images are built here and cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "maxPods": 60,
    }


def _kube_proxy_config(kubeconfig: pathlib.Path, healthz_port: int, metrics_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        # NodePorts only on the bridge gateway, never on the machine's external interface.
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        # Leave the machine's conntrack sysctls alone (not writable in every container).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


# --- network --------------------------------------------------------------------------------------


def _check_subnet_free() -> None:
    pods = ipaddress.ip_network(POD_CIDR)
    for line in _run("ip", "-4", "route", "show").splitlines():
        words = line.split()
        if not words or words[0] == "default":
            continue
        try:
            route = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            continue
        if route.overlaps(pods):
            raise NodeUnavailableError(f"the pod network {POD_CIDR} overlaps a route of this machine: {line}")


def network_up(state: pathlib.Path) -> None:
    """The bridge with its gateway address, forwarding on, and the boundary rules (before start())."""
    problems = host_problems()
    if problems:
        raise NodeUnavailableError("this machine cannot run the harness node: " + "; ".join(problems))
    wait = float(os.environ.get(WAIT_VARIABLE) or 0)
    deadline = time.monotonic() + wait
    while True:
        # Check and take the bridge under a lock, so stacks waiting for one another never race.
        with _machine_lock():
            if _link_exists(BRIDGE) or OWNER_FILE.exists():
                _clean_stale_node()
            if not _link_exists(BRIDGE) and not OWNER_FILE.exists():
                _take_network(state)
                return
        if time.monotonic() >= deadline:
            raise NodeUnavailableError(
                f"the bridge {BRIDGE} is taken ({OWNER_FILE}): another node stack runs on this machine (or one was not "
                f"stopped: `harness/stack.sh stop` it, or `ip link del storeops0`); set {WAIT_VARIABLE}=<seconds> "
                "to wait for it to stop"
            )
        time.sleep(2)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with open(LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _take_network(state: pathlib.Path) -> None:
    _check_subnet_free()
    directory = state / "node"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    try:
        _network_up(directory)
    except BaseException:
        network_down(state)
        raise
    # The process that took the network, with its start time (pids are reused): until its node's own
    # processes run, it is the only sign that the stack is alive and starting.
    owner = {"state": str(state), "pid": os.getpid(), "started": _start_time(os.getpid())}
    OWNER_FILE.write_text(json.dumps(owner) + "\n")


def _start_time(pid: int) -> str | None:
    """When process `pid` started (field 22 of /proc/<pid>/stat, in clock ticks); None when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _clean_stale_node() -> None:
    """Remove what a node stack left behind when it was killed without stopping (bridge, rules, pods).

    Only when the stack named in OWNER_FILE runs no process any more: neither the process that took
    the network (still starting the control plane, before any node process names the folder) nor a
    containerd, kubelet or kube-proxy whose arguments name its folder. A running one is left alone.
    """
    try:
        record = json.loads(OWNER_FILE.read_text())
        owner = pathlib.Path(record["state"])
    except (OSError, ValueError, KeyError):
        return
    pid = record.get("pid")
    if isinstance(pid, int) and record.get("started") is not None and _start_time(pid) == record["started"]:
        return
    if _processes_naming(owner / "node"):
        return
    logger.warning("removing what the node stack in %s left behind (it runs no process any more)", owner)
    cleanup(owner, {}, kube_proxy=versions.node_binaries().kube_proxy)
    network_down(owner)


def _network_up(directory: pathlib.Path) -> None:
    saved = {}
    for key, value in SYSCTLS.items():
        path = pathlib.Path("/proc/sys") / key
        saved[key] = path.read_text().strip()
        path.write_text(value)
    (directory / "sysctl.json").write_text(json.dumps(saved) + "\n")
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Pod traffic forwarded by this machine may only go to other Pods (Service addresses are
    # rewritten to Pod addresses before the filter runs); to the node it is input, not forwarded.
    _run("iptables", "-w", "-N", BOUNDARY_CHAIN)
    _run("iptables", "-w", "-A", BOUNDARY_CHAIN, "-d", POD_CIDR, "-j", "ACCEPT")
    _run("iptables", "-w", "-A", BOUNDARY_CHAIN, "-j", "DROP")
    _run("iptables", "-w", "-I", "FORWARD", "1", "-s", POD_CIDR, "-j", BOUNDARY_CHAIN)


def boundary_drops() -> int:
    """Packets the boundary's DROP rule has dropped so far."""
    out = _run("iptables", "-w", "-L", BOUNDARY_CHAIN, "-v", "-x", "-n")
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and words[2] == "DROP":
            return int(words[0])
    raise errors.HarnessError(f"no DROP rule in {BOUNDARY_CHAIN}:\n{out}")


def network_down(state: pathlib.Path) -> None:
    """Remove the bridge, the boundary and the kubelet's rules, restore the sysctls (after cleanup())."""
    directory = state / "node"
    # Host ends of veths whose namespace is gone vanish with it; any left are on the bridge.
    if _link_exists(BRIDGE):
        for line in _run("ip", "-o", "link", "show", "master", BRIDGE, check=False).splitlines():
            veth = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if veth:
                _run("ip", "link", "del", veth, check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
    _run("iptables", "-w", "-D", "FORWARD", "-s", POD_CIDR, "-j", BOUNDARY_CHAIN, check=False)
    _run("iptables", "-w", "-F", BOUNDARY_CHAIN, check=False)
    _run("iptables", "-w", "-X", BOUNDARY_CHAIN, check=False)
    _remove_hostport_rules()
    # kube-network-policies' queue rules (its nftables tables, or the harness's iptables chain): with
    # no process left to answer the queue, they would drop new connections of Pods.
    addons.remove_rules()
    # What the kubelet adds at start and never removes (kube-proxy --cleanup took kube-proxy's).
    for tool in ("iptables", "ip6tables"):
        for chain in ("INPUT", "OUTPUT"):
            _run(tool, "-w", "-D", chain, "-j", "KUBE-FIREWALL", check=False)
        for table, chain in KUBELET_CHAINS:
            _run(tool, "-w", "-t", table, "-F", chain, check=False)
            _run(tool, "-w", "-t", table, "-X", chain, check=False)
    saved_file = directory / "sysctl.json"
    if saved_file.exists():
        for key, value in json.loads(saved_file.read_text()).items():
            with contextlib.suppress(OSError):
                (pathlib.Path("/proc/sys") / key).write_text(str(value))
        saved_file.unlink()
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(OWNER_FILE.read_text())["state"] == str(state):
            OWNER_FILE.unlink()


def _remove_hostport_rules() -> None:
    """The portmap plugin's rules for this network's Pods: containers deleted through containerd
    rather than the CRI never had their CNI DEL, so their hostPort chains stay behind otherwise."""
    rules = _run("iptables", "-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT", check=False).splitlines()
    for rule in rules:
        words = shlex.split(rule)
        if words[:2] != ["-A", "CNI-HOSTPORT-DNAT"] or not any(f'name: "{CNI_NETWORK}"' in w for w in words):
            continue
        target = words[words.index("-j") + 1]
        _run("iptables", "-w", "-t", "nat", "-D", *words[1:], check=False)
        _run("iptables", "-w", "-t", "nat", "-F", target, check=False)
        _run("iptables", "-w", "-t", "nat", "-X", target, check=False)
    left = _run("iptables", "-w", "-t", "nat", "-S", check=False)
    if "-N CNI-HOSTPORT-DNAT" not in left or "-N CNI-DN-" in left:
        return  # nothing of portmap's, or another network's Pods still use its shared chains
    for chain in ("PREROUTING", "OUTPUT", "POSTROUTING"):
        for rule in left.splitlines():
            words = shlex.split(rule)
            jumps_to = words[words.index("-j") + 1] if "-j" in words else ""
            if words[:2] == ["-A", chain] and jumps_to.startswith("CNI-HOSTPORT-"):
                _run("iptables", "-w", "-t", "nat", "-D", *words[1:], check=False)
    for shared in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
        _run("iptables", "-w", "-t", "nat", "-F", shared, check=False)
        _run("iptables", "-w", "-t", "nat", "-X", shared, check=False)


def _link_exists(name: str) -> bool:
    return pathlib.Path("/sys/class/net", name).exists()


# --- teardown -------------------------------------------------------------------------------------


def _remove_containers(node: Node) -> set[str]:
    """Kill and delete every task and container in containerd's k8s.io namespace; their netns paths."""
    netns: set[str] = set()
    containers = node.ctr("containers", "list", "--quiet", check=False).split()
    for container in containers:
        with contextlib.suppress(errors.HarnessError, json.JSONDecodeError):
            info = json.loads(node.ctr("containers", "info", container))
            for namespace in (((info.get("Spec") or {}).get("linux") or {}).get("namespaces")) or []:
                path = namespace.get("path") or ""
                if namespace.get("type") == "network" and any(path.startswith(f"{d}/") for d in NETNS_DIRS):
                    netns.add(path)
    for container in containers:
        node.ctr("tasks", "kill", "--all", "--signal=SIGKILL", container, check=False)
    deadline = time.monotonic() + 20
    for container in containers:
        while time.monotonic() < deadline:
            node.ctr("tasks", "delete", "--force", container, check=False)
            if container not in node.ctr("tasks", "list", "--quiet", check=False).split():
                break
            time.sleep(0.2)
        node.ctr("containers", "delete", container, check=False)
    return netns


def _kill_shims(node: Node) -> None:
    """containerd-shim-runc-v2 processes started for this node's containerd (their -address says so)."""
    marker = str(node.socket).encode()
    for pid, cmdline in _command_lines():
        if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def _command_lines() -> Iterator[tuple[int, bytes]]:
    """Every process's pid and NUL-separated command line (those gone while read are passed over)."""
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes()
            except OSError:
                continue


def _mounts_under(directory: pathlib.Path) -> list[pathlib.Path]:
    """Mount points at or below `directory`, deepest first."""
    prefix = str(directory.resolve())
    found = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(pathlib.Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unmount(path: pathlib.Path) -> None:
    for argv in (["umount", str(path)], ["umount", "-l", str(path)]):
        if subprocess.run(argv, capture_output=True, check=False).returncode == 0:
            return


def _processes_naming(directory: pathlib.Path) -> list[int]:
    """Pids of containerd, kubelet or kube-proxy processes whose arguments name `directory`."""
    marker = str(directory).encode()
    return [pid for pid, cmdline in _command_lines()
            if os.path.basename(cmdline.split(b"\0", 1)[0]) in (b"containerd", b"kubelet", b"kube-proxy")
            and marker in cmdline]


def _kill_pod_processes() -> None:
    """SIGKILL whatever still runs in the kubelet's kubepods cgroups (one node per machine: ours)."""
    root = pathlib.Path("/sys/fs/cgroup")
    top = next((root / h / "kubepods" for h in ("pids", "memory", "") if (root / h / "kubepods").is_dir()), None)
    if top is None:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.2)


def _remove_cgroups() -> None:
    """The kubelet's kubepods cgroups (empty once the containers are gone), deepest first."""
    root = pathlib.Path("/sys/fs/cgroup")
    for hierarchy in [root, *root.iterdir()] if root.is_dir() else []:
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


# --- helpers --------------------------------------------------------------------------------------


def _node_ready(kubectl: kube.Kubectl) -> bool:
    node = kubectl.get("node", NAME)
    status = (node or {}).get("status") or {}
    assert isinstance(status, dict)
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def _run(*argv: str, check: bool = True, timeout: float = 60.0) -> str:
    """Run a command: its stdout; on failure CommandError when check, else ''."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise errors.CommandError(f"{argv[0]} is not installed") from e
    if result.returncode != 0:
        if check:
            raise errors.CommandError(
                f"{' '.join(argv)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}"
            )
        logger.debug("%s failed: %s", " ".join(argv), result.stderr.strip())
        return ""
    return result.stdout
