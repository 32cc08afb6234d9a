"""OCI images built on this machine for the harness node (no registry is reachable from here).

Each image is one uncompressed layer written from files on disk, packed as an OCI image layout tar
that ``ctr images import`` reads, and cached in ``<cache>/images/`` under a name that includes a
hash of its inputs. Local builds get local names (``storeops.local/<name>:<tag>``), never an
official image's name; the one exception is the project's own service image (harness/images/service.py),
imported under the name the platform's Deployment runs, ``ghcr.io/storeops/storeops:<version>``.

* ``pause``: the sandbox process (harness/images/pause, built by build.sh);
* ``debian`` (harness/images/debian.py): the stores' images (MariaDB, PostgreSQL, Redis, WordPress,
  Python), a Debian root filesystem made by mmdebstrap as one layer plus a small layer of ours;
* ``busybox``: Debian's static busybox (package busybox-static) with its applets linked in /bin,
  for test Pods (``httpd``, ``wget``, ``nc``, ``sh``), and ``/bin/apiprobe`` (harness/images/apiprobe,
  an in-cluster API client that verifies the server against the ServiceAccount's CA);
* ``medusa`` and ``service`` (harness/images/medusa.py, service.py): an application built on the host
  (the Medusa store; the storeops service with its dependencies from PyPI) on a Debian root filesystem;
* ``static_binary``: one static Go program alone (the node's add-ons: CoreDNS, kube-network-policies,
  Traefik), tagged ``<version>-<hash of the binary>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile

from harness import errors, versions

__all__ = ["REGISTRY", "Image", "busybox", "pause", "static_binary"]

REGISTRY = "storeops.local"
BUSYBOX = pathlib.Path("/bin/busybox")
#: Applets linked into /bin of the busybox image.
BUSYBOX_APPLETS = [
    "sh", "ash", "cat", "echo", "env", "hostname", "httpd", "id", "ip", "ls", "mkdir", "nc", "nslookup",
    "ping", "ps", "sleep", "test", "timeout", "true", "false", "wget", "date", "grep", "head",
]  # fmt: skip

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclasses.dataclass(frozen=True)
class Image:
    """An image archive in the cache and the reference it is imported under."""

    ref: str
    archive: pathlib.Path


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str  # inside the image, without the leading slash
    source: pathlib.Path | None = None  # a regular file to copy
    link: str | None = None  # a symlink target
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


def pause(node: versions.NodeBinaries, *, cache: pathlib.Path | None = None) -> Image:
    """The sandbox image: storeops.local/pause:<hash of the pause sources>."""
    entries = [_Entry("pause", source=node.pause)]
    config: dict[str, object] = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    return _build("pause", node.pause_hash, entries, config, cache=cache)


def busybox(node: versions.NodeBinaries, *, cache: pathlib.Path | None = None) -> Image:
    """storeops.local/busybox:<Debian version>-<hash>, from the busybox-static package, plus /bin/apiprobe."""
    if not BUSYBOX.is_file():
        raise errors.HarnessError(f"{BUSYBOX} is missing: install Debian's busybox-static (build.sh does)")
    version = _debian_version("busybox-static")
    inputs = BUSYBOX.read_bytes() + node.apiprobe.read_bytes() + "\n".join(BUSYBOX_APPLETS).encode()
    digest = hashlib.sha256(inputs).hexdigest()[:12]
    entries = [_Entry("bin", mode=0o755), _Entry("bin/busybox", source=BUSYBOX)]
    entries += [_Entry("bin/apiprobe", source=node.apiprobe)]
    entries += [_Entry(f"bin/{applet}", link="busybox") for applet in BUSYBOX_APPLETS]
    entries += [_Entry("tmp", mode=0o1777), _Entry("etc", mode=0o755), _Entry("www", mode=0o755)]
    config: dict[str, object] = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"}
    return _build("busybox", f"{version}-{digest}", entries, config, cache=cache)


def static_binary(
    name: str, binary: pathlib.Path, *, version: str, cache: pathlib.Path | None = None
) -> Image:
    """storeops.local/<name>:<version>-<hash>: the static binary as /<name> (the entrypoint) and a /tmp."""
    if not binary.is_file():
        raise errors.HarnessError(f"{binary} is missing: run `{versions.BUILD_COMMAND}`")
    digest = hashlib.sha256()
    with binary.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    entries = [_Entry(name, source=binary), _Entry("tmp", mode=0o1777), _Entry("etc", mode=0o755)]
    config: dict[str, object] = {"Entrypoint": [f"/{name}"], "WorkingDir": "/"}
    return _build(name, f"{version}-{digest.hexdigest()[:12]}", entries, config, cache=cache)


def _debian_version(package: str) -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout:
        return "unknown"
    # 1:1.35.0-4+deb12u1+b1 -> 1.35.0-4-deb12u1-b1 (a valid tag)
    return re.sub(r"[^A-Za-z0-9_.-]", "-", result.stdout.split(":", 1)[-1])


def _build(
    name: str,
    tag: str,
    entries: list[_Entry],
    config: dict[str, object],
    *,
    cache: pathlib.Path | None,
    base: pathlib.Path | None = None,
    archive_name: str | None = None,
    ref: str | None = None,
) -> Image:
    """Pack `entries` as a layer (on top of `base`, an uncompressed root filesystem tar, when given)
    into ``<cache>/images/<archive_name or name-tag>.tar``; an archive already there is reused. The
    archive imports as `ref` (``ctr images import`` takes the name from io.containerd.image.name), by
    default ``storeops.local/<name>:<tag>``."""
    ref = ref or f"{REGISTRY}/{name}:{tag}"
    folder = (cache or versions.cache_dir()) / "images"
    archive = folder / f"{archive_name or f'{name}-{tag}'}.tar"
    if archive.exists():
        return Image(ref=ref, archive=archive)
    folder.mkdir(parents=True, exist_ok=True)
    layer = _layer(entries)
    layer_digest = hashlib.sha256(layer).hexdigest()
    base_digest = _file_digest(base) if base is not None else None
    diff_ids = [f"sha256:{layer_digest}"]
    history = [{"created_by": f"harness/images: {name}"}]
    layers = [_descriptor(LAYER_TYPE, layer)]
    if base is not None:
        diff_ids.insert(0, f"sha256:{base_digest}")
        history.insert(0, {"created_by": f"harness/images: {base.name}"})
        layers.insert(0, {"mediaType": LAYER_TYPE, "digest": f"sha256:{base_digest}", "size": base.stat().st_size})
    image_config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": _descriptor(CONFIG_TYPE, image_config),
            "layers": layers,
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [
                _descriptor(MANIFEST_TYPE, manifest)
                | {
                    "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    )
    partial = archive.with_suffix(f".partial-{os.getpid()}")
    with tarfile.open(partial, "w") as tar:
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", index)
        if base is not None:
            info = tarfile.TarInfo(f"blobs/sha256/{base_digest}")
            info.size = base.stat().st_size
            info.mode = 0o644
            with base.open("rb") as handle:
                tar.addfile(info, handle)
        for blob in (layer, image_config, manifest):
            _add(tar, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    partial.replace(archive)
    return Image(ref=ref, archive=archive)


def _run_logged(
    argv: list[str], *, cwd: pathlib.Path, env: dict[str, str], log: pathlib.Path, timeout: float
) -> None:
    """Run a build step with its output appended to `log`; a failure raises with the log's tail."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise errors.CommandError(f"{' '.join(argv)} timed out in {cwd}; see {log}") from e
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise errors.CommandError(f"{' '.join(argv)} exited {done.returncode} in {cwd}:\n{tail}")


def _layer(entries: list[_Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            elif entry.source is not None:
                data = entry.source.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


def _file_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}", "size": len(blob)}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def clear(cache: pathlib.Path | None = None) -> None:
    """Remove every cached image archive."""
    shutil.rmtree((cache or versions.cache_dir()) / "images", ignore_errors=True)
