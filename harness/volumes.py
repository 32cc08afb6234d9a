"""A volume provisioner for the real node: a directory per claim that non-root Pods can write.

The controller-manager's own hostPath provisioner makes each volume's directory ``0750 root``, which
suits simulated Pods (kwok) but no database that runs as its own user (MariaDB as 999, WordPress as
33). This process provisions claims of the StorageClass whose provisioner is ``PROVISIONER`` the way
local-path provisioners do: a hostPath PersistentVolume on a fresh ``0777`` directory under ``--root``,
sized as the claim asks, pinned to the real node. When a claim is deleted and its volume's reclaim
policy is Delete, the directory and the volume go too. Run by harness/stack.py with a real node:

    python -m harness.volumes --kubeconfig KUBECONFIG --root DIR --node NODE
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import shutil
import threading
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

__all__ = ["PROVISIONER", "reconcile", "run"]

# The client's helpers carry no annotations.
_config: Any = config

logger = logging.getLogger("harness.volumes")

PROVISIONER = "storeops.local/host-path"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
INTERVAL = 1.0


def reconcile(core: Any, storage: Any, *, root: pathlib.Path, node: str) -> None:
    """One pass: a volume for each pending claim of our classes, and released volumes removed."""
    classes = {c.metadata.name: c for c in storage.list_storage_class().items if c.provisioner == PROVISIONER}
    default = next(
        (name for name, c in classes.items()
         if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"),
        None,
    )  # fmt: skip
    for claim in core.list_persistent_volume_claim_for_all_namespaces().items:
        wanted = claim.spec.storage_class_name if claim.spec.storage_class_name is not None else default
        if claim.status.phase != "Pending" or claim.spec.volume_name or wanted not in classes:
            continue
        _provision(core, claim, classes[wanted], root=root, node=node)
    for volume in core.list_persistent_volume().items:
        annotations = volume.metadata.annotations or {}
        if (
            annotations.get(PROVISIONED_BY) == PROVISIONER
            and volume.status.phase in ("Released", "Failed")
            and volume.spec.persistent_volume_reclaim_policy == "Delete"
        ):
            _delete(core, volume, root=root)


def _provision(core: Any, claim: Any, storage_class: Any, *, root: pathlib.Path, node: str) -> None:
    name = f"pvc-{claim.metadata.uid}"
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    # Any user may write, as with local-path provisioners: the Pod's own user owns what it creates.
    os.chmod(path, 0o777)
    size = (claim.spec.resources.requests or {}).get("storage", "1Gi")
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": storage_class.reclaim_policy or "Delete",
            "storageClassName": storage_class.metadata.name,
            "volumeMode": claim.spec.volume_mode or "Filesystem",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
            # The directory is on this machine, where the real node runs.
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
                    ]
                }
            },
        },
    }
    try:
        core.create_persistent_volume(body)
    except ApiException as e:
        if e.status != 409:  # made in an earlier pass, not yet bound
            raise
        return
    logger.info("provisioned %s (%s) for %s/%s", name, size, claim.metadata.namespace, claim.metadata.name)


def _delete(core: Any, volume: Any, *, root: pathlib.Path) -> None:
    path = pathlib.Path(volume.spec.host_path.path) if volume.spec.host_path else None
    if path is not None and path.parent == root:
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(ApiException):
        core.delete_persistent_volume(volume.metadata.name)
    logger.info("deleted %s and its directory", volume.metadata.name)


def run(*, kubeconfig: str, root: pathlib.Path, node: str, stop: threading.Event) -> None:
    api = _config.new_client_from_config(config_file=kubeconfig)
    core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
    while not stop.is_set():
        try:
            reconcile(core, storage, root=root, node=node)
        except Exception as e:  # the API server restarts in some tests: try again shortly
            logger.warning("reconcile failed (%s); trying again", e)
        stop.wait(INTERVAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", type=pathlib.Path, required=True)
    parser.add_argument("--node", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    logger.info("provisioning %s volumes under %s", PROVISIONER, args.root)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        run(kubeconfig=args.kubeconfig, root=args.root, node=args.node, stop=stop)
    logger.info("stopped after %.0fs", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
