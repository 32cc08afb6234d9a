"""The real node's CSI storage: volumes that grow in place, for the StorageClass ``storeops-csi``.

Three host processes, started by harness/stack.py when a real node runs, beside (not instead of) the
default class of harness/volumes.py:

* ``storeops-csi`` (harness/csi, Go): the CSI driver. Each volume is a sparse ext4 image file under
  ``<state>/csi/volumes``, loop-mounted on the node; it registers itself with the kubelet through the
  kubelet's plugin registration socket, so no node-driver-registrar is needed.
* ``csi-provisioner`` (external-provisioner): creates a volume for each claim of the class.
* ``csi-resizer`` (external-resizer): grows a volume when its claim asks for more.

What grows, and when, is in harness/README.md ("Volumes that grow").
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
import shutil
from typing import Any

from harness import errors, kube, processes, versions

__all__ = ["DRIVER", "STORAGE_CLASS", "manifests", "start"]

logger = logging.getLogger(__name__)

#: The driver's name (harness/csi/main.go DriverName): its CSIDriver object and the class's provisioner.
DRIVER = "csi.storeops.local"
#: The StorageClass whose volumes the driver makes and grows.
STORAGE_CLASS = "storeops-csi"
STARTUP_TIMEOUT = 60.0
#: What the driver runs (Debian's e2fsprogs, mount and util-linux; build.sh installs them).
TOOLS = ("mkfs.ext4", "dumpe2fs", "e2fsck", "resize2fs", "losetup", "mount", "umount")


def manifests() -> list[dict[str, object]]:
    """The CSIDriver object (no attach step; the kubelet gives volumes the pod's fsGroup) and the class.

    WaitForFirstConsumer, as most clouds' classes: a claim is provisioned once its pod is scheduled.
    """
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": DRIVER},
            "spec": {
                "attachRequired": False,
                "podInfoOnMount": False,
                "fsGroupPolicy": "File",
                "volumeLifecycleModes": ["Persistent"],
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": DRIVER,
            "parameters": {"csi.storage.k8s.io/fstype": "ext4"},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": True,
        },
    ]


def _registered(kubectl: kube.Kubectl, node: str) -> bool:
    """The kubelet has registered the driver: the node's CSINode object lists it."""
    found: dict[str, Any] = kubectl.get("csinode", node) or {}
    return any(d.get("name") == DRIVER for d in (found.get("spec") or {}).get("drivers") or [])


def _names_driver(log: pathlib.Path) -> bool:
    """A sidecar has asked the driver its name (each logs it once connected)."""
    return log.exists() and DRIVER in log.read_text(errors="replace")


def start(
    binaries: versions.CsiBinaries,
    *,
    state: pathlib.Path,
    kubelet_dir: pathlib.Path,
    kubeconfig: pathlib.Path,
    kubectl: kube.Kubectl,
    node: str,
    tie_to_parent: bool,
) -> dict[str, processes.Process]:
    """Start the driver (registered with the node's kubelet) and its two sidecars; apply the class."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or not pathlib.Path("/dev/loop-control").exists():
        raise errors.StartupError(
            f"the CSI driver needs {', '.join(TOOLS)} on PATH and loop devices (/dev/loop-control); "
            f"missing: {', '.join(missing) or '/dev/loop-control'}"
        )
    logs = state / "logs"
    socket = kubelet_dir / "plugins" / DRIVER / "csi.sock"
    started: dict[str, processes.Process] = {}
    started["csi-driver"] = processes.spawn(
        "csi-driver",
        [str(binaries.driver), f"--endpoint={socket}", f"--data-dir={state / 'csi'}", f"--node-id={node}",
         f"--registration-dir={kubelet_dir / 'plugins_registry'}"],
        log_dir=logs, tie_to_parent=tie_to_parent,
    )  # fmt: skip
    kubectl.apply(*manifests(), server_side=False)
    processes.wait_until(
        f"the kubelet to register {DRIVER}", lambda: _registered(kubectl, node), timeout=STARTUP_TIMEOUT,
        process=started["csi-driver"],
    )  # fmt: skip
    common = [f"--csi-address={socket}", f"--kubeconfig={kubeconfig}", "--timeout=120s", "--v=2"]
    started["csi-provisioner"] = processes.spawn(
        "csi-provisioner", [str(binaries.provisioner), *common, "--default-fstype=ext4"], log_dir=logs,
        tie_to_parent=tie_to_parent,
    )  # fmt: skip
    started["csi-resizer"] = processes.spawn(
        "csi-resizer", [str(binaries.resizer), *common], log_dir=logs, tie_to_parent=tie_to_parent
    )
    for name in ("csi-provisioner", "csi-resizer"):
        processes.wait_until(
            f"{name} to reach the driver", functools.partial(_names_driver, logs / f"{name}.log"),
            timeout=STARTUP_TIMEOUT, process=started[name],
        )  # fmt: skip
    logger.info("CSI driver %s with class %s: %s", DRIVER, STORAGE_CLASS, json.dumps(sorted(started)))
    return started
