"""The Kubernetes objects of the real node's add-ons (harness/addons.py applies them).

Pure data: each function returns the manifests of one add-on for a given image (a local
``storeops.local/...`` reference, imported into the node's containerd, never pulled).
"""

from __future__ import annotations

import ipaddress

from harness import components

__all__ = [
    "CLUSTER_DOMAIN",
    "DNS_SERVICE_IP",
    "INGRESS_CLASS",
    "INGRESS_CONTROLLER",
    "INGRESS_NAMESPACE",
    "NFQUEUE_ID",
    "SYSTEM_NAMESPACE",
    "coredns",
    "network_policies",
    "object_store",
    "object_store_host_port",
    "traefik",
]

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
#: The netfilter queue kube-network-policies reads the first packet of each new connection from.
NFQUEUE_ID = 100
RBAC = "rbac.authorization.k8s.io"
#: The S3-compatible object store for store backups (harness/objectstore.py).
OBJECT_STORE_NAMESPACE = "storeops-backups"
OBJECT_STORE_S3_PORT = 8333
OBJECT_STORE_SECRET = "seaweedfs-credentials"

Manifest = dict[str, object]


def coredns(image: str, *, node_selector: dict[str, str]) -> list[Manifest]:
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


def network_policies(image: str, *, node_name: str, node_selector: dict[str, str], metrics_port: int) -> list[Manifest]:
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


def traefik(image: str, *, node_selector: dict[str, str], ingress_port: int) -> list[Manifest]:
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


def object_store(
    image: str, *, node_selector: dict[str, str], host_port: int, bucket: str, access_key: str, secret_key: str,
    s3_config: str,
) -> list[Manifest]:
    """SeaweedFS (`weed mini`, one process: master, volume server, filer, S3 gateway) in its own namespace,
    its S3 port behind Service `seaweedfs` and on 127.0.0.1:<host_port> of the host; data in an emptyDir
    (gone with the Pod: it serves tests). Its Secret holds the identities file and the same keys under
    the names a store's backup Secret uses."""
    labels = {"app.kubernetes.io/name": "seaweedfs"}
    ns = OBJECT_STORE_NAMESPACE
    port = OBJECT_STORE_S3_PORT
    args = [
        "mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-s3.config=/config/s3.json",
        f"-bucket={bucket}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", f"-s3.port={port}",
    ]  # fmt: skip
    container = {
        "name": "seaweedfs",
        "image": image,
        "imagePullPolicy": "Never",
        "args": args,
        "ports": [{"name": "s3", "containerPort": port, "hostPort": host_port, "hostIP": "127.0.0.1"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 2},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": "/config", "readOnly": True},
        ],
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
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": OBJECT_STORE_SECRET, "namespace": ns},
            "stringData": {"s3.json": s3_config, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "seaweedfs", "namespace": ns, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "s3", "port": port, "targetPort": "s3"}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "seaweedfs", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                # One Pod holds the hostPort.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "nodeSelector": node_selector,
                        "terminationGracePeriodSeconds": 5,
                        "securityContext": {"fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                        "volumes": [
                            {"name": "data", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                            {"name": "config", "secret": {"secretName": OBJECT_STORE_SECRET,
                                                          "items": [{"key": "s3.json", "path": "s3.json"}]}},
                        ],
                    },
                },
            },
        },
    ]


def object_store_host_port(deployment: Manifest) -> int:
    """The host port an applied object_store() Deployment publishes its S3 port on."""
    spec = deployment["spec"]
    assert isinstance(spec, dict)
    container = spec["template"]["spec"]["containers"][0]
    return int(container["ports"][0]["hostPort"])


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
