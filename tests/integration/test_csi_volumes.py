"""Volumes that grow in place on the real node: the harness's CSI driver (harness/csi) driven by the real
external-provisioner and external-resizer, for claims of the StorageClass ``storeops-csi``.

A claim is provisioned for its pod (WaitForFirstConsumer), the pod writes data, the claim is grown:
the resizer grows the volume (the PersistentVolume's capacity) while the pod runs, and the claim says
its filesystem resize is pending until the filesystem really is bigger; a new pod stages the volume,
the filesystem grows before it is mounted, the claim's capacity becomes the new size, ``df`` in the
new pod shows it, and the data is still there. A claim grown while no pod uses it grows at once.
Deleting the claim deletes the volume's image file.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import pytest

from harness import csidriver, errors, stack
from tests.integration import test_node

pytestmark = pytest.mark.node

NAMESPACE = "csi-test"
GI = 1 << 30
TIMEOUT = 180.0


def _get(kubectl: Any, kind: str, name: str, *, namespace: str | None = NAMESPACE) -> dict[str, Any]:
    found = kubectl.get(kind, name, namespace=namespace)
    assert found is not None, f"{kind} {name} not found"
    return dict(found)


def _claim(name: str, size: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": csidriver.STORAGE_CLASS,
                 "resources": {"requests": {"storage": size}}},
    }  # fmt: skip


def _pod_with(image: str, name: str, claim: str, command: str) -> dict[str, Any]:
    pod = test_node._in(NAMESPACE, test_node._pod(
        name, image, command, volumeMounts=[{"name": "data", "mountPath": "/data"}]))  # fmt: skip
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return pod


def _running(kubectl: Any, name: str) -> bool:
    found = kubectl.get("pod", name, namespace=NAMESPACE) or {}
    return (found.get("status") or {}).get("phase") == "Running"


def _df_bytes(kubectl: Any, pod: str) -> int:
    """The size of the filesystem mounted at /data in the pod, as ``df`` there reports it."""
    # The image links only some of busybox's applets; df is one of those it has but does not link.
    lines = kubectl.run("exec", "-n", NAMESPACE, pod, "--", "busybox", "df", "-k", "/data").splitlines()
    return int(lines[-1].split()[1]) * 1024


def _pvc_capacity(kubectl: Any, name: str) -> str:
    return str(((_get(kubectl, "pvc", name).get("status") or {}).get("capacity") or {}).get("storage", ""))


def _conditions(kubectl: Any, name: str) -> set[str]:
    return {c["type"] for c in (_get(kubectl, "pvc", name).get("status") or {}).get("conditions") or []}


def _pv(kubectl: Any, claim: str) -> dict[str, Any]:
    volume = _get(kubectl, "pvc", claim)["spec"]["volumeName"]
    return _get(kubectl, "pv", volume, namespace=None)


def _wait(kubectl: Any, what: str, check: Any, timeout: float = TIMEOUT) -> None:
    def describe() -> str:
        return kubectl.run("get", "pvc,pod,pv", "-A", "-o", "wide") + kubectl.run(
            "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp")

    try:
        kubectl.wait_for(what, check, timeout=timeout, interval=1)
    except Exception as e:
        raise AssertionError(f"{e}\n{describe()}") from e


def _replace_pod(kubectl: Any, image: str, old: str, new: str, command: str) -> None:
    kubectl.run("delete", "pod", "-n", NAMESPACE, old, "--wait=true", "--timeout=120s", timeout=150)
    kubectl.apply(_pod_with(image, new, "data", command))
    _wait(kubectl, f"pod {new} running", lambda: _running(kubectl, new))


def test_a_claim_grows_in_place_and_keeps_its_data(node_stack: stack.Stack) -> None:
    assert node_stack.node is not None
    kubectl, image = node_stack.kubectl, node_stack.node.images["busybox"]
    volumes = node_stack.state / "csi" / "volumes"
    test_node._namespace(node_stack, NAMESPACE)
    kubectl.apply(_claim("data", "1Gi"))
    # WaitForFirstConsumer: nothing is provisioned before a pod needs the claim.
    time.sleep(2)
    assert _get(kubectl, "pvc", "data")["status"]["phase"] == "Pending"
    kubectl.apply(_pod_with(image, "writer", "data", "echo kept > /data/order.txt; sync; exec sleep 3600"))
    _wait(kubectl, "pod writer running", lambda: _running(kubectl, "writer"))
    pv = _pv(kubectl, "data")
    assert pv["spec"]["csi"]["driver"] == csidriver.DRIVER and pv["spec"]["capacity"]["storage"] == "1Gi"
    image_file = volumes / f"{pv['spec']['csi']['volumeHandle']}.img"
    assert image_file.stat().st_size == GI
    before = _df_bytes(kubectl, "writer")
    assert 0.9 * GI < before <= GI, before

    # Grown while the pod runs: the volume (PV) grows at once; the filesystem cannot grow while mounted
    # here, and the claim says so (FileSystemResizePending) rather than claiming the new size.
    asked = time.monotonic()
    kubectl.run("patch", "pvc", "data", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}))  # fmt: skip
    _wait(kubectl, "the volume grown to 2Gi", lambda: _pv(kubectl, "data")["spec"]["capacity"]["storage"] == "2Gi")
    volume_grown = time.monotonic() - asked
    assert image_file.stat().st_size == 2 * GI
    _wait(kubectl, "FileSystemResizePending", lambda: "FileSystemResizePending" in _conditions(kubectl, "data"))
    assert _pvc_capacity(kubectl, "data") == "1Gi"
    assert _df_bytes(kubectl, "writer") == before

    # A new pod: the volume is staged again, its filesystem grown before it is mounted; the kubelet's
    # expansion check then passes and the claim has its new capacity.
    restarted = time.monotonic()
    _replace_pod(kubectl, image, "writer", "reader", "exec sleep 3600")
    _wait(kubectl, "the claim's capacity 2Gi", lambda: _pvc_capacity(kubectl, "data") == "2Gi")
    claim_grown = time.monotonic() - restarted
    assert not _conditions(kubectl, "data") & {"FileSystemResizePending", "Resizing"}
    after = _df_bytes(kubectl, "reader")
    assert 1.8 * GI < after <= 2 * GI, after
    assert kubectl.run("exec", "-n", NAMESPACE, "reader", "--", "cat", "/data/order.txt").strip() == "kept"
    print(f"csi: 1Gi -> 2Gi in use: volume grown {volume_grown:.1f}s after the patch; claim at 2Gi "
          f"{claim_grown:.1f}s after the pod was replaced; df {before / GI:.2f} -> {after / GI:.2f} GiB", flush=True)

    # Grown while no pod uses it: the driver grows the filesystem at once, no node step.
    kubectl.run("delete", "pod", "-n", NAMESPACE, "reader", "--wait=true", "--timeout=120s", timeout=150)
    _wait(kubectl, "the volume unstaged", lambda: not _staged(image_file.name))
    asked = time.monotonic()
    kubectl.run("patch", "pvc", "data", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"resources": {"requests": {"storage": "3Gi"}}}}))  # fmt: skip
    _wait(kubectl, "the claim's capacity 3Gi", lambda: _pvc_capacity(kubectl, "data") == "3Gi")
    print(f"csi: 2Gi -> 3Gi unused: claim at 3Gi {time.monotonic() - asked:.1f}s after the patch", flush=True)
    kubectl.apply(_pod_with(image, "third", "data", "exec sleep 3600"))
    _wait(kubectl, "pod third running", lambda: _running(kubectl, "third"))
    assert 2.7 * GI < _df_bytes(kubectl, "third") <= 3 * GI
    assert kubectl.run("exec", "-n", NAMESPACE, "third", "--", "cat", "/data/order.txt").strip() == "kept"

    # Deleting the claim deletes the volume and its image file (reclaim policy Delete).
    kubectl.run("delete", "pod", "-n", NAMESPACE, "third", "--wait=true", "--timeout=120s", timeout=150)
    kubectl.run("delete", "pvc", "-n", NAMESPACE, "data", "--wait=true", "--timeout=120s", timeout=150)
    _wait(kubectl, "the volume deleted", lambda: kubectl.get("pv", pv["metadata"]["name"]) is None)
    assert not image_file.exists()


def test_a_shrink_is_refused_by_kubernetes(node_stack: stack.Stack) -> None:
    """What validation refuses before it reaches Git, Kubernetes refuses too."""
    kubectl = node_stack.kubectl
    test_node._namespace(node_stack, NAMESPACE)
    kubectl.apply(_claim("small", "2Gi"))
    with pytest.raises(errors.CommandError) as refused:
        kubectl.run("patch", "pvc", "small", "-n", NAMESPACE, "--type=merge",
                    "-p", json.dumps({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}))  # fmt: skip
    assert "Forbidden" in str(refused.value), refused.value
    kubectl.run("delete", "pvc", "-n", NAMESPACE, "small", "--wait=false")


def _staged(image_name: str) -> bool:
    """Whether the image file is attached to a loop device on this machine (the volume is staged)."""
    return any(p.read_text().strip().endswith(f"/{image_name}") for p in pathlib.Path("/sys/block").glob(
        "loop*/loop/backing_file"))  # fmt: skip
