"""The real node's add-ons: cluster DNS, NetworkPolicy enforcement and an ingress controller.

Each runs as a Pod on the node from a local image holding its static Go binary (built by build.sh):

* **CoreDNS** (kube-system, Service ``kube-dns`` at DNS_SERVICE_IP): answers for ``cluster.local``
  and the reverse zones from the API; it has no ``forward`` plugin, so names outside the cluster
  never resolve (nothing is asked upstream).
* **kube-network-policies** (kube-system, a host-network DaemonSet): enforces NetworkPolicies by
  judging the first packet of each new connection, which netfilter queues to it (nfqueue). It
  writes its own nftables rules for that, but they use the nftables ``queue`` expression, which
  kernels built without CONFIG_NFT_QUEUE lack (this machine's among them: its rule batch fails with
  ENOENT). Where its table does not appear, the harness queues the same traffic with iptables'
  NFQUEUE target instead (QUEUE_CHAIN, see _queue_rules()). Both its tables (NFT_TABLES) and that
  chain are deleted by the node's teardown (remove_rules()).
* **Traefik** (namespace ``traefik``, on the pod network, so store NetworkPolicies admit it by
  namespace): the ``traefik`` IngressClass, published on the host's loopback only through a
  ``hostPort`` with ``hostIP: 127.0.0.1`` (CNI portmap). It writes 127.0.0.1 into each Ingress's
  status, which Argo CD needs to call an Ingress Healthy.

Their Kubernetes objects are in harness/addon_manifests.py; this module imports the images,
applies them, waits, and owns the netfilter rules.
"""

from __future__ import annotations

import collections.abc
import concurrent.futures
import contextlib
import logging
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

from harness import addon_manifests as manifests
from harness import errors, images, kube, nftables, processes, versions

__all__ = [
    "CLUSTER_DOMAIN",
    "DNS_SERVICE_IP",
    "INGRESS_CLASS",
    "INGRESS_CONTROLLER",
    "INGRESS_NAMESPACE",
    "NFT_TABLES",
    "QUEUE_CHAIN",
    "SYSTEM_NAMESPACE",
    "queue_rules_installed",
    "remove_rules",
    "start",
]

logger = logging.getLogger(__name__)

SYSTEM_NAMESPACE = manifests.SYSTEM_NAMESPACE
CLUSTER_DOMAIN = manifests.CLUSTER_DOMAIN
DNS_SERVICE_IP = manifests.DNS_SERVICE_IP
INGRESS_NAMESPACE = manifests.INGRESS_NAMESPACE
INGRESS_CLASS = manifests.INGRESS_CLASS
INGRESS_CONTROLLER = manifests.INGRESS_CONTROLLER
#: The nftables tables kube-network-policies creates (family inet); gone after remove_rules().
NFT_TABLES = ("kube-network-policies", "kube-network-policies-dnscache")
NFQUEUE_ID = manifests.NFQUEUE_ID
#: The harness's iptables chain (mangle table, from POSTROUTING) queueing Pod connections to it.
QUEUE_CHAIN = "STOREOPS-NETPOL"
NFQUEUE_STATUS = pathlib.Path("/proc/net/netfilter/nfnetlink_queue")
STARTUP_TIMEOUT = 120.0


def start(
    *,
    kubectl: kube.Kubectl,
    ctr: collections.abc.Callable[..., str],
    binaries: versions.AddonBinaries,
    node_name: str,
    node_selector: dict[str, str],
    pod_cidr: str,
    ingress_port: int,
    timeout: float = STARTUP_TIMEOUT,
) -> dict[str, float]:
    """Import the add-ons' images, apply their manifests and wait for each; seconds each took to be ready."""
    began = time.monotonic()
    v = binaries.versions
    built = {
        "coredns": images.static_binary("coredns", binaries.coredns, version=v.coredns),
        "kube-network-policies": images.static_binary(
            "kube-network-policies", binaries.kube_network_policies, version=v.kube_network_policies
        ),
        "traefik": images.static_binary("traefik", binaries.traefik, version=v.traefik),
    }
    # Side by side: each import is mostly hashing and unpacking one large layer.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(built)) as pool:
        imports = [pool.submit(ctr, "images", "import", str(image.archive), timeout=180) for image in built.values()]
        for done in imports:
            done.result()
    logger.info("add-on images imported in %.1fs", time.monotonic() - began)
    metrics_port = processes.free_port()
    kubectl.apply(
        *manifests.coredns(built["coredns"].ref, node_selector=node_selector),
        *manifests.network_policies(
            built["kube-network-policies"].ref, node_name=node_name, node_selector=node_selector,
            metrics_port=metrics_port,
        ),
        *manifests.traefik(built["traefik"].ref, node_selector=node_selector, ingress_port=ingress_port),
    )  # fmt: skip
    applied = time.monotonic()
    checks: dict[str, collections.abc.Callable[[], bool]] = {
        # Ready once it listens on its queue (it writes its nftables rules just before).
        "kube-network-policies": lambda: (
            _daemonset_ready(kubectl, SYSTEM_NAMESPACE, "kube-network-policies") and _queue_bound(NFQUEUE_ID)
        ),
        "coredns": lambda: _deployment_ready(kubectl, SYSTEM_NAMESPACE, "coredns"),
        # Ready, and answering on the host's loopback through the hostPort (404: no route yet).
        "traefik": lambda: (
            _deployment_ready(kubectl, INGRESS_NAMESPACE, "traefik") and _answers(f"http://127.0.0.1:{ingress_port}/")
        ),
    }
    seconds: dict[str, float] = {}
    for name, check in checks.items():
        try:
            processes.wait_until(f"add-on {name} to be ready", check, timeout=timeout, interval=0.5)
        except errors.StartupError as e:
            raise errors.StartupError(f"{e}\n{_describe(kubectl)}") from e
        if name == "kube-network-policies" and not nftables.table_exists(NFT_TABLES[0]):
            logger.info("kube-network-policies wrote no nftables rules (no nft queue expression in this kernel?): "
                        "queueing Pod connections to it with iptables NFQUEUE (chain %s)", QUEUE_CHAIN)  # fmt: skip
            _queue_rules(pod_cidr)
        seconds[name] = round(time.monotonic() - began, 1)
        logger.info("add-on %s (%s) ready %.1fs after its manifests were applied (%.1fs in all)", name,
                    built[name].ref, time.monotonic() - applied, seconds[name])  # fmt: skip
    return seconds


def remove_rules() -> None:
    """Delete kube-network-policies' nftables tables (it leaves them when killed) and the harness's queue chain."""
    _remove_queue_chain()
    for table in NFT_TABLES:
        with contextlib.suppress(OSError, nftables.NftablesError):
            if nftables.delete_table(table):
                logger.info("deleted nftables table inet %s", table)


def _queue_rules(pod_cidr: str) -> None:
    """What kube-network-policies' own postrouting chain does, with iptables' NFQUEUE target: the first
    packet of each new connection from or to a Pod goes to its queue, which accepts or drops it.

    Its chain queues only Pods that policies select (an nftables set it keeps); this one queues every
    Pod's, and kube-network-policies accepts those no policy selects. As upstream, traffic the node's
    root processes send (kubelet probes, the harness's clients) is not judged, and no queue bypass:
    with kube-network-policies gone, new Pod connections are dropped rather than let through.
    """
    _remove_queue_chain()  # a chain left by a stack that was never stopped
    _iptables("-t", "mangle", "-N", QUEUE_CHAIN)
    rules = [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        ["-s", pod_cidr, "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ID)],
        ["-d", pod_cidr, "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ID)],
    ]
    for rule in rules:
        _iptables("-t", "mangle", "-A", QUEUE_CHAIN, *rule)
    _iptables("-t", "mangle", "-A", "POSTROUTING", "-j", QUEUE_CHAIN)


def _remove_queue_chain() -> None:
    while _iptables("-t", "mangle", "-D", "POSTROUTING", "-j", QUEUE_CHAIN, check=False) is not None:
        pass
    _iptables("-t", "mangle", "-F", QUEUE_CHAIN, check=False)
    _iptables("-t", "mangle", "-X", QUEUE_CHAIN, check=False)


def queue_rules_installed() -> bool:
    """Whether the harness's NFQUEUE chain is in place (kube-network-policies' own nftables rules are not)."""
    return bool(_iptables("-t", "mangle", "-S", QUEUE_CHAIN, check=False))


def _queue_bound(queue: int) -> bool:
    """Whether a process listens on nfqueue `queue` (first column of /proc/net/netfilter/nfnetlink_queue)."""
    with contextlib.suppress(OSError):
        return any(line.split()[:1] == [str(queue)] for line in NFQUEUE_STATUS.read_text().splitlines())
    return False


def _iptables(*args: str, check: bool = True) -> str | None:
    """Its stdout; on failure CommandError when check, else None."""
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        if check:
            raise errors.CommandError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")
        return None
    return result.stdout


# --- readiness ------------------------------------------------------------------------------------


def _deployment_ready(kubectl: kube.Kubectl, namespace: str, name: str) -> bool:
    got = kubectl.get("deployment", name, namespace=namespace) or {}
    status = got.get("status") or {}
    assert isinstance(status, dict)
    return int(status.get("readyReplicas") or 0) >= 1


def _daemonset_ready(kubectl: kube.Kubectl, namespace: str, name: str) -> bool:
    got = kubectl.get("daemonset", name, namespace=namespace) or {}
    status = got.get("status") or {}
    assert isinstance(status, dict)
    return int(status.get("numberReady") or 0) >= 1


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True


def _describe(kubectl: kube.Kubectl) -> str:
    """The add-ons' Pods and recent events, for a startup error."""
    pods = kubectl.run("get", "pods", "-A", "-o", "wide", check=False)
    events = kubectl.run("get", "events", "-A", "--sort-by=.lastTimestamp", check=False)
    return f"pods:\n{pods}\nevents:\n{events[-4000:]}"
