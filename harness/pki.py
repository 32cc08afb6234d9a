"""Certificates and keys for one control plane, made with the openssl CLI into its state folder.

Everything is generated at start time and lives only in the state folder (never in the repo).
EC P-256 keys keep generation fast.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

from harness import errors

__all__ = ["NODE_NAME", "ClientCert", "Pki", "create", "load", "serving_cert"]

# Identities of the clients of the API server. system:masters skips RBAC (the admin and kwok, which
# manages nodes and pods); the controller-manager and scheduler get the roles Kubernetes bootstraps
# for their user names; Argo CD gets cluster-admin through a ClusterRoleBinding the stack creates.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("storeops-admin", "system:masters"),
    "kwok": ("storeops-kwok", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "argocd": ("storeops-argocd", None),
    # The real node (harness/node.py): the kubelet as its Node identity (the Node authorizer), kube-proxy
    # as the user the bootstrap system:node-proxier binding names, and the API server's client for
    # kubelet calls (logs, exec), bound to system:kubelet-api-admin when the node starts.
    "kubelet": ("system:node:storeops-node-0", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "apiserver-kubelet": ("storeops-apiserver-kubelet-client", None),
}
#: The real node's name; its kubelet's client certificate names it.
NODE_NAME = "storeops-node-0"

SERVER_SANS = [
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.96.0.1",
]


@dataclasses.dataclass(frozen=True)
class ClientCert:
    user: str
    cert: pathlib.Path
    key: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Pki:
    directory: pathlib.Path
    ca_cert: pathlib.Path
    ca_key: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    service_account_key: pathlib.Path
    service_account_pub: pathlib.Path
    clients: dict[str, ClientCert]


def create(directory: pathlib.Path, *, extra_server_ips: list[str] | None = None) -> Pki:
    """A CA, the API server's serving cert, the service-account key pair and one cert per client.

    extra_server_ips: more addresses the API server's certificate names (the node's bridge gateway).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca_cert, "-days", "3650", "-subj", "/CN=storeops-harness-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    server_cert, server_key = _signed(
        directory, "apiserver", ca_cert, ca_key, subject="/CN=kube-apiserver",
        extensions=[
            f"subjectAltName={','.join(SERVER_SANS + [f'IP:{ip}' for ip in extra_server_ips or []])}",
            "extendedKeyUsage=serverAuth",
        ],
    )  # fmt: skip
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", sa_key)
    _openssl("pkey", "-in", sa_key, "-pubout", "-out", sa_pub)
    clients: dict[str, ClientCert] = {}
    for name, (user, group) in CLIENTS.items():
        subject = (f"/O={group}" if group else "") + f"/CN={user}"
        cert, key = _signed(
            directory, name, ca_cert, ca_key, subject=subject, extensions=["extendedKeyUsage=clientAuth"]
        )
        clients[name] = ClientCert(user=user, cert=cert, key=key)
    return Pki(
        directory=directory,
        ca_cert=ca_cert,
        ca_key=ca_key,
        server_cert=server_cert,
        server_key=server_key,
        service_account_key=sa_key,
        service_account_pub=sa_pub,
        clients=clients,
    )


def serving_cert(certs: Pki, name: str, *, subject: str, sans: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
    """A serving certificate (and key) signed by the stack's CA, e.g. for the kubelet."""
    return _signed(
        certs.directory, name, certs.ca_cert, certs.ca_key, subject=subject,
        extensions=[f"subjectAltName={','.join(sans)}", "extendedKeyUsage=serverAuth"],
    )  # fmt: skip


def _signed(
    directory: pathlib.Path,
    name: str,
    ca_cert: pathlib.Path,
    ca_key: pathlib.Path,
    *,
    subject: str,
    extensions: list[str],
) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key, csr, ext = (directory / f"{name}{suffix}" for suffix in (".crt", ".key", ".csr", ".ext"))
    ext.write_text("".join(f"{line}\n" for line in ["basicConstraints=CA:FALSE", *extensions]))
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "3650", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key


def _openssl(*args: object) -> None:
    argv = ["openssl", *(str(a) for a in args)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise errors.CommandError("openssl is not installed; `bash harness/build.sh` installs it") from e
    if result.returncode != 0:
        raise errors.CommandError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def load(directory: pathlib.Path) -> Pki:
    """The Pki that create() wrote into `directory` earlier."""
    return Pki(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "apiserver.crt",
        server_key=directory / "apiserver.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
        clients={
            name: ClientCert(user=user, cert=directory / f"{name}.crt", key=directory / f"{name}.key")
            for name, (user, _group) in CLIENTS.items()
        },
    )
