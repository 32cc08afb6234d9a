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
"""

from __future__ import annotations

import collections.abc
import contextlib
import ipaddress
import logging
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

from harness import components, errors, images, kube, nftables, processes, versions

__all__ = [
    "CLUSTER_DOMAIN",
    "DNS_SERVICE_IP",
    "INGRESS_CLASS",
    "INGRESS_CONTROLLER",
    "INGRESS_NAMESPACE",
    "NFT_TABLES",
    "QUEUE_CHAIN",
    "SYSTEM_NAMESPACE",
    "coredns_manifests",
    "network_policy_manifests",
    "queue_rules_installed",
    "remove_rules",
    "start",
    "traefik_manifests",
]

logger = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "kube-system"
CLUSTER_DOMAIN = "cluster.local"
#: The kube-dns Service's fixed address: the 10th of the API server's Service range (10.96.0.10).
DNS_SERVICE_IP = str(ipaddress.ip_network(components.SERVICE_CLUSTER_IP_RANGE)[10])
INGRESS_NAMESPACE = "traefik"
INGRESS_CLASS = "traefik"
INGRESS_CONTROLLER = "traefik.io/ingress-controller"
#: Traefik's entry points inside its Pod: web traffic, and /ping for the probes.
TRAEFIK_WEB_PORT = 8000
TRAEFIK_PING_PORT = 8080
#: The nftables tables kube-network-policies creates (family inet); gone after remove_rules().
NFT_TABLES = ("kube-network-policies", "kube-network-policies-dnscache")
NFQUEUE_ID = 100
#: The harness's iptables chain (mangle table, from POSTROUTING) queueing Pod connections to it.
QUEUE_CHAIN = "STOREOPS-NETPOL"
NFQUEUE_STATUS = pathlib.Path("/proc/net/netfilter/nfnetlink_queue")
STARTUP_TIMEOUT = 120.0
RBAC = "rbac.authorization.k8s.io"

Manifest = dict[str, object]


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
    for image in built.values():
        ctr("images", "import", str(image.archive), timeout=180)
    logger.info("add-on images imported in %.1fs", time.monotonic() - began)
    metrics_port = processes.free_port()
    kubectl.apply(
        *coredns_manifests(built["coredns"].ref, node_selector=node_selector),
        *network_policy_manifests(
            built["kube-network-policies"].ref, node_name=node_name, node_selector=node_selector,
            metrics_port=metrics_port,
        ),
        *traefik_manifests(built["traefik"].ref, node_selector=node_selector, ingress_port=ingress_port),
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
    _iptables("-t", "mangle", "-D", "POSTROUTING", "-j", QUEUE_CHAIN, check=False)
    _iptables("-t", "mangle", "-F", QUEUE_CHAIN, check=False)
    _iptables("-t", "mangle", "-X", QUEUE_CHAIN, check=False)
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


def queue_rules_installed() -> bool:
    """Whether the harness's NFQUEUE chain is in place (kube-network-policies' own nftables rules are not)."""
    return bool(_iptables("-t", "mangle", "-S", QUEUE_CHAIN, check=False))


def _queue_bound(queue: int) -> bool:
    """Whether a process listens on nfqueue `queue` (first column of /proc/net/netfilter/nfnetlink_queue)."""
    with contextlib.suppress(OSError):
        return any(line.split()[:1] == [str(queue)] for line in NFQUEUE_STATUS.read_text().splitlines())
    return False


def _iptables(*args: str, check: bool = True) -> str:
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        if check:
            raise errors.CommandError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")
        return ""
    return result.stdout


# --- manifests ------------------------------------------------------------------------------------


def coredns_manifests(image: str, *, node_selector: dict[str, str]) -> list[Manifest]:
    """CoreDNS for cluster.local with no upstream: its ServiceAccount, RBAC, Corefile, Deployment, Service."""
    labels = {"k8s-app": "kube-dns"}
    corefile = "\n".join(
        [
            ".:53 {",
            "    errors",
            "    health",
            "    ready",
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
            "        pods insecure",
            "        ttl 30",
            "    }",
            "    cache 30",
            "    loop",
            "}",
            "",
        ]
    )
    container = {
        "name": "coredns",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        },
    }
    return [
        _service_account("coredns", SYSTEM_NAMESPACE),
        _cluster_role(
            "storeops:coredns",
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        ),
        _cluster_role_binding("storeops:coredns", "coredns", SYSTEM_NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": SYSTEM_NAMESPACE},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "nodeSelector": node_selector,
                        # Its own resolv.conf would name itself.
                        "dnsPolicy": "Default",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def network_policy_manifests(
    image: str, *, node_name: str, node_selector: dict[str, str], metrics_port: int
) -> list[Manifest]:
    """kube-network-policies on the host network (its ServiceAccount and RBAC as its install.yaml)."""
    labels = {"k8s-app": "kube-network-policies"}
    container = {
        "name": "kube-network-policies",
        "image": image,
        "imagePullPolicy": "Never",
        "args": [
            f"--hostname-override={node_name}",
            # containerd 1.6 has no NRI: Pod addresses come from the API only.
            "--disable-nri",
            f"--nfqueue-id={NFQUEUE_ID}",
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            "--v=1",
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        # nftables and nfqueue over netlink in the host's network namespace.
        "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN"]}},
        "readinessProbe": {
            "httpGet": {"host": "127.0.0.1", "path": "/metrics", "port": metrics_port},
            "periodSeconds": 1,
        },
    }
    return [
        _service_account("kube-network-policies", SYSTEM_NAMESPACE),
        _cluster_role(
            "storeops:kube-network-policies",
            [
                {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
            ],
        ),
        _cluster_role_binding("storeops:kube-network-policies", "kube-network-policies", SYSTEM_NAMESPACE),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-network-policies", "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": True,
                        "dnsPolicy": "Default",
                        "serviceAccountName": "kube-network-policies",
                        "priorityClassName": "system-node-critical",
                        "nodeSelector": node_selector,
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 1,
                        "containers": [container],
                    },
                },
            },
        },
    ]


def traefik_manifests(image: str, *, node_selector: dict[str, str], ingress_port: int) -> list[Manifest]:
    """Traefik serving Ingresses of class `traefik`, published on 127.0.0.1:<ingress_port> of the host."""
    labels = {"app.kubernetes.io/name": "traefik"}
    container = {
        "name": "traefik",
        "image": image,
        "imagePullPolicy": "Never",
        "args": [
            f"--entryPoints.web.address=:{TRAEFIK_WEB_PORT}",
            f"--entryPoints.traefik.address=:{TRAEFIK_PING_PORT}",
            "--ping=true",
            "--ping.entryPoint=traefik",
            "--providers.kubernetesingress=true",
            f"--providers.kubernetesingress.ingressclass={INGRESS_CLASS}",
            "--providers.kubernetesingress.ingressendpoint.ip=127.0.0.1",
            "--global.checknewversion=false",
            "--global.sendanonymoususage=false",
            "--log.level=INFO",
            "--log.nocolor=true",
            "--accesslog=true",
        ],
        "ports": [
            # Reachable from the host on loopback only (portmap; route_localnet on the bridge).
            {"name": "web", "containerPort": TRAEFIK_WEB_PORT, "hostPort": ingress_port, "hostIP": "127.0.0.1"},
            {"name": "ping", "containerPort": TRAEFIK_PING_PORT},
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ping", "port": TRAEFIK_PING_PORT}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": TRAEFIK_PING_PORT}, "periodSeconds": 10},
        "securityContext": {
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INGRESS_NAMESPACE}},
        _service_account("traefik", INGRESS_NAMESPACE),
        _cluster_role(
            "storeops:traefik",
            [
                # Nodes: its provider's cluster-scope informer (for NodePort status addresses) waits for them.
                {"apiGroups": [""], "resources": ["services", "secrets", "nodes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {
                    "apiGroups": ["extensions", "networking.k8s.io"],
                    "resources": ["ingresses", "ingressclasses"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["extensions", "networking.k8s.io"],
                    "resources": ["ingresses/status"],
                    "verbs": ["update"],
                },
            ],
        ),
        _cluster_role_binding("storeops:traefik", "traefik", INGRESS_NAMESPACE),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {"controller": INGRESS_CONTROLLER},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "traefik", "namespace": INGRESS_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                # One Pod holds the hostPort: the old one must go before the new one starts.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "traefik",
                        "nodeSelector": node_selector,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [container],
                    },
                },
            },
        },
    ]


def _service_account(name: str, namespace: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def _cluster_role(name: str, rules: list[dict[str, object]]) -> Manifest:
    return {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


def _cluster_role_binding(name: str, account: str, namespace: str) -> Manifest:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


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
