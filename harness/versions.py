"""The pinned versions (harness/versions.env) and where build.sh puts each binary."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

from harness import errors

__all__ = [
    "BUILD_COMMAND",
    "HARNESS_DIR",
    "VERSIONS_FILE",
    "AddonBinaries",
    "Binaries",
    "CsiBinaries",
    "NodeBinaries",
    "Versions",
    "addon_binaries",
    "binaries",
    "cache_dir",
    "csi_binaries",
    "csi_source_hash",
    "locate",
    "locate_addons",
    "locate_csi",
    "locate_node",
    "node_binaries",
    "read_versions",
    "source_hash",
]

HARNESS_DIR = pathlib.Path(__file__).resolve().parent
VERSIONS_FILE = HARNESS_DIR / "versions.env"
BUILD_COMMAND = "bash harness/build.sh"


@dataclasses.dataclass(frozen=True)
class Versions:
    argocd: str
    gitops_engine: str
    kubernetes: str
    etcd: str
    helm: str
    kwok: str
    coredns: str
    kube_network_policies: str
    traefik: str
    seaweedfs: str
    csi_provisioner: str
    csi_resizer: str


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Absolute paths of everything build.sh produces."""

    versions: Versions
    etcd: pathlib.Path
    kube_apiserver: pathlib.Path
    kube_controller_manager: pathlib.Path
    kube_scheduler: pathlib.Path
    kubectl: pathlib.Path
    kwok: pathlib.Path
    kwok_stages: pathlib.Path
    helm: pathlib.Path
    argocd: pathlib.Path
    argocd_crds: pathlib.Path
    argocd_git_verify_wrapper: pathlib.Path

    def required(self) -> list[pathlib.Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.kwok,
            self.kwok_stages,
            self.helm,
            self.argocd,
            self.argocd_crds,
            self.argocd_git_verify_wrapper,
        ]


@dataclasses.dataclass(frozen=True)
class NodeBinaries:
    """What build.sh builds for the real node (harness/node.py); Debian's packages come from PATH."""

    kubelet: pathlib.Path
    kube_proxy: pathlib.Path
    pause: pathlib.Path
    #: The hash of the pause sources (harness/images/pause) its folder and image tag are named by.
    pause_hash: str
    #: An in-cluster API client for test Pods (harness/images/apiprobe).
    apiprobe: pathlib.Path

    def required(self) -> list[pathlib.Path]:
        return [self.kubelet, self.kube_proxy, self.pause, self.apiprobe]


IMAGE_SOURCES = HARNESS_DIR / "images"


def source_hash(program: str) -> str:
    """The first 16 hex digits of sha256(go.mod + main.go) of harness/images/<program>, as build.sh computes it."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((IMAGE_SOURCES / program / name).read_bytes())
    return digest.hexdigest()[:16]


def node_binaries(versions: Versions | None = None, *, cache: pathlib.Path | None = None) -> NodeBinaries:
    """Where the node's binaries live for these versions (whether or not they were built)."""
    v = versions or read_versions()
    bin_dir = (cache or cache_dir()) / "bin"
    node = bin_dir / f"node-{v.kubernetes}"
    digest = source_hash("pause")
    return NodeBinaries(
        kubelet=node / "kubelet",
        kube_proxy=node / "kube-proxy",
        pause=bin_dir / f"pause-{digest}" / "pause",
        pause_hash=digest,
        apiprobe=bin_dir / f"apiprobe-{source_hash('apiprobe')}" / "apiprobe",
    )


def locate_node(*, cache: pathlib.Path | None = None) -> NodeBinaries:
    """The node's built binaries, or MissingBinariesError naming what is missing and how to build it."""
    found = node_binaries(cache=cache)
    missing = [p for p in found.required() if not p.exists()]
    if missing:
        raise errors.MissingBinariesError(
            f"node binaries are not built: run `{BUILD_COMMAND}` first; missing: {', '.join(map(str, missing))}"
        )
    return found


@dataclasses.dataclass(frozen=True)
class AddonBinaries:
    """The node's add-ons (harness/addons.py): static Go binaries build.sh builds, each run from an image."""

    versions: Versions
    coredns: pathlib.Path
    kube_network_policies: pathlib.Path
    traefik: pathlib.Path

    def required(self) -> list[pathlib.Path]:
        return [self.coredns, self.kube_network_policies, self.traefik]


def addon_binaries(versions: Versions | None = None, *, cache: pathlib.Path | None = None) -> AddonBinaries:
    """Where the add-ons' binaries live for these versions (whether or not they were built)."""
    v = versions or read_versions()
    bin_dir = (cache or cache_dir()) / "bin"
    return AddonBinaries(
        versions=v,
        coredns=bin_dir / f"coredns-{v.coredns}" / "coredns",
        kube_network_policies=bin_dir / f"kube-network-policies-{v.kube_network_policies}" / "kube-network-policies",
        traefik=bin_dir / f"traefik-{v.traefik}" / "traefik",
    )


def locate_addons(*, cache: pathlib.Path | None = None) -> AddonBinaries:
    """The add-ons' built binaries, or MissingBinariesError naming what is missing and how to build it."""
    found = addon_binaries(cache=cache)
    missing = [p for p in found.required() if not p.exists()]
    if missing:
        raise errors.MissingBinariesError(
            f"the node's add-ons are not built: run `{BUILD_COMMAND}` first; missing: {', '.join(map(str, missing))}"
        )
    return found


@dataclasses.dataclass(frozen=True)
class CsiBinaries:
    """The real node's CSI driver (harness/csi) and the sidecars that drive it (harness/csi.py)."""

    driver: pathlib.Path
    provisioner: pathlib.Path
    resizer: pathlib.Path

    def required(self) -> list[pathlib.Path]:
        return [self.driver, self.provisioner, self.resizer]


CSI_SOURCES = HARNESS_DIR / "csi"


def csi_source_hash() -> str:
    """The first 16 hex digits of sha256(go.mod + go.sum + *.go) of harness/csi, as build.sh computes it."""
    digest = hashlib.sha256()
    for path in [CSI_SOURCES / "go.mod", CSI_SOURCES / "go.sum", *sorted(CSI_SOURCES.glob("*.go"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def csi_binaries(versions: Versions | None = None, *, cache: pathlib.Path | None = None) -> CsiBinaries:
    """Where the CSI binaries live for these versions and sources (whether or not they were built)."""
    v = versions or read_versions()
    bin_dir = (cache or cache_dir()) / "bin"
    return CsiBinaries(
        driver=bin_dir / f"storeops-csi-{csi_source_hash()}" / "storeops-csi",
        provisioner=bin_dir / f"csi-provisioner-{v.csi_provisioner}" / "csi-provisioner",
        resizer=bin_dir / f"csi-resizer-{v.csi_resizer}" / "csi-resizer",
    )


def locate_csi(*, cache: pathlib.Path | None = None) -> CsiBinaries:
    """The CSI binaries, or MissingBinariesError naming what is missing and how to build it."""
    found = csi_binaries(cache=cache)
    missing = [p for p in found.required() if not p.exists()]
    if missing:
        raise errors.MissingBinariesError(
            f"the node's CSI driver and sidecars are not built: run `{BUILD_COMMAND}` first; "
            f"missing: {', '.join(map(str, missing))}"
        )
    return found


def read_versions(path: pathlib.Path = VERSIONS_FILE) -> Versions:
    """Parse the KEY=value lines of versions.env (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise errors.HarnessError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        values[key] = value
    try:
        return Versions(
            argocd=values["ARGOCD_VERSION"],
            gitops_engine=values["GITOPS_ENGINE_VERSION"],
            kubernetes=values["KUBERNETES_VERSION"],
            etcd=values["ETCD_VERSION"],
            helm=values["HELM_VERSION"],
            kwok=values["KWOK_VERSION"],
            coredns=values["COREDNS_VERSION"],
            kube_network_policies=values["KUBE_NETWORK_POLICIES_VERSION"],
            traefik=values["TRAEFIK_VERSION"],
            seaweedfs=values["SEAWEEDFS_VERSION"],
            csi_provisioner=values["CSI_PROVISIONER_VERSION"],
            csi_resizer=values["CSI_RESIZER_VERSION"],
        )
    except KeyError as e:
        raise errors.HarnessError(f"{path}: missing {e.args[0]}") from e


def cache_dir() -> pathlib.Path:
    """The cache build.sh writes to: $STOREOPS_CACHE, else ~/.cache/storeops."""
    configured = os.environ.get("STOREOPS_CACHE")
    if configured:
        return pathlib.Path(configured)
    return pathlib.Path.home() / ".cache" / "storeops"


def binaries(versions: Versions | None = None, *, cache: pathlib.Path | None = None) -> Binaries:
    """Where each binary lives for these versions (whether or not it was built)."""
    v = versions or read_versions()
    bin_dir = (cache or cache_dir()) / "bin"
    kube = bin_dir / f"kubernetes-{v.kubernetes}"
    kwok = bin_dir / f"kwok-{v.kwok}"
    argocd = bin_dir / f"argocd-{v.argocd}"
    return Binaries(
        versions=v,
        etcd=bin_dir / f"etcd-{v.etcd}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kwok=kwok / "kwok",
        kwok_stages=kwok / "stages.yaml",
        helm=bin_dir / f"helm-{v.helm}" / "helm",
        argocd=argocd / "argocd",
        argocd_crds=argocd / "crds",
        argocd_git_verify_wrapper=argocd / "git-verify-wrapper.sh",
    )


def locate(*, cache: pathlib.Path | None = None) -> Binaries:
    """The built binaries, or MissingBinariesError naming what is missing and how to build it."""
    found = binaries(cache=cache)
    missing = [p for p in found.required() if not p.exists()]
    if missing:
        cache = found.etcd.parent.parent
        raise errors.MissingBinariesError(
            f"control-plane binaries are not built: run `{BUILD_COMMAND}` first (it caches them in {cache}); "
            f"missing: {', '.join(str(p.relative_to(cache)) for p in missing)}"
        )
    return found
