"""The storeops service image, ``ghcr.io/storeops/storeops:<project version>``: the name the platform's
Deployment (argocd/platform/deployment.yaml) runs, built here from Debian trixie's python3 and git and the
project's wheel with its dependencies from PyPI.

1. A root filesystem made by mmdebstrap as for the other images (``harness/images/debian.py``): python3,
   git (GitPython runs it), ca-certificates and the user ``storeops`` (10001, home /var/lib/storeops).
2. The Python packages, on the host: ``pip wheel`` of a copy of the project (pyproject.toml, README.md,
   generator/, webhook/), then ``pip install --target`` of that wheel and its dependencies as wheels for
   the image's CPython (``PYTHON_VERSION``, whatever the host's is) on glibc x86_64, binary wheels only
   (every dependency has them); pip's ``bin/`` (scripts for the host's Python) is left out.
3. Their bytecode, compiled by the image's own python3 in a chroot of the root filesystem: hash-based
   ``.pyc`` files (the layer has no timestamps), so the service starts without compiling on its read-only
   root. The compiled site is cached in ``<cache>/service/site-<key>/``, keyed by pyproject.toml, every
   file of generator/ and webhook/, the Debian version of the image's Python and the layout. PyPI's
   newest releases within pyproject.toml's ranges are taken when it is built, not pinned.
4. The image: the root filesystem and the site under /opt/storeops/site, owned by root and read-only to
   the service, which runs as 10001:10001 ``python3 -m webhook.cli serve`` in /var/lib/storeops (its
   state, writable; the Deployment mounts emptyDirs there and on /tmp, its HOME).

The archive, cached in ``<cache>/images/`` under a hash of the root filesystem, the site's key and the
configuration like the other images, imports into containerd as ``REF``, not under a local name: it
stands in for the image the project publishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
import tomllib

from harness import errors, images, versions
from harness.images import debian

__all__ = ["IMAGE", "PYTHON_VERSION", "REF", "VERSION", "Built", "build", "built_site"]

logger = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
#: What the wheel is built from (README.md is the wheel's description; a change to it alone rebuilds nothing).
PROJECT_FILES = ("pyproject.toml", "README.md")
PACKAGES = ("generator", "webhook")
USER = 10001
SITE_DIR = "opt/storeops/site"  # inside the image, without the leading slash
STATE_DIR = "var/lib/storeops"
#: Trixie's python3: the wheels are chosen for it, the bytecode compiled by it.
PYTHON_VERSION = "3.13"
#: Tags of the wheels pip may take: CPython PYTHON_VERSION on glibc x86_64 (trixie's glibc is 2.41).
WHEEL_PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: What a cached site holds and how it is laid out; a change here makes new ones.
LAYOUT = 1
BUILD_TIMEOUT = 1800.0
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _project_version() -> str:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


VERSION = _project_version()
#: The project's own registry: the image is named as the platform's manifests name it.
REGISTRY = "ghcr.io/storeops"

IMAGE = debian.DebianImage(
    name="storeops",
    tag=VERSION,
    registry=REGISTRY,
    packages=("python3", "git", "ca-certificates"),
    main="python3",
    title="storeops service (storeops serve) on Debian's python3",
    users=(("storeops", USER, f"/{STATE_DIR}"),),
    config=(
        ("Entrypoint", ["python3", "-m", "webhook.cli"]),
        ("Cmd", ["serve"]),
        ("User", f"{USER}:{USER}"),
        (
            "Env",
            [
                debian._PATH,
                "LANG=C.UTF-8",
                f"PYTHONPATH=/{SITE_DIR}",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
                # The root filesystem is read-only: git's and Python's per-user files go to /tmp (an emptyDir).
                "HOME=/tmp",
                # The service's defaults in a container, as the Dockerfile has them.
                f"STOREOPS_STATE_DIR=/{STATE_DIR}",
                "STOREOPS_HOST=0.0.0.0",
                "STOREOPS_PORT=8080",
            ],
        ),
        ("WorkingDir", f"/{STATE_DIR}"),
        ("ExposedPorts", {"8080/tcp": {}}),
    ),
)
#: ghcr.io/storeops/storeops:<version>, what argocd/platform/deployment.yaml runs.
REF = IMAGE.ref


@dataclasses.dataclass(frozen=True)
class Built:
    """The image (or the cached one) and what its parts took."""

    image: images.Image
    seconds: float
    site_seconds: float  # pip wheel + pip install + compileall; 0 when cached
    rootfs_seconds: float  # mmdebstrap; 0 when cached
    cached: bool
    packages: dict[str, str]


# --- the Python packages, installed on the host for the image's Python ---------------------------------------


def _source_files() -> list[pathlib.Path]:
    """pyproject.toml and every file of the packages (the wheel holds them all: modules, schemas, templates)."""
    files = [REPO_ROOT / "pyproject.toml"]
    for package in PACKAGES:
        files.extend(sorted(p for p in (REPO_ROOT / package).rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"))  # fmt: skip
    return files


def site_key(python: str) -> str:
    """Hash of everything the site depends on: the sources, `python` (the Debian version of the image's
    python3.13 package), the wheel tags and the layout."""
    inputs = {"python": python, "version": PYTHON_VERSION, "platforms": WHEEL_PLATFORMS, "layout": LAYOUT}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    for path in _source_files():
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _image_python(packages: dict[str, str]) -> str:
    """The Debian version of the root filesystem's python3.X, which must be PYTHON_VERSION."""
    python = packages.get(f"python{PYTHON_VERSION}")
    if python is None or not packages.get("python3", "").startswith(f"{PYTHON_VERSION}."):
        raise errors.HarnessError(f"the image's python3 is {packages.get('python3')}, not {PYTHON_VERSION}: "
                                  "change harness/images/service.py's PYTHON_VERSION")  # fmt: skip
    return python


def _pip_install(wheel: pathlib.Path, target: pathlib.Path, *, env: dict[str, str], log: pathlib.Path) -> None:
    abi = f"cp{PYTHON_VERSION.replace('.', '')}"
    argv = [sys.executable, "-m", "pip", "install", "--no-compile", "--target", str(target),
            "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi,
            *(f"--platform={platform}" for platform in WHEEL_PLATFORMS), "--only-binary=:all:", str(wheel)]  # fmt: skip
    images._run_logged(argv, cwd=target.parent, env=env, log=log, timeout=BUILD_TIMEOUT)
    # Scripts for the host's Python (the image runs `python3 -m webhook.cli`), and any host bytecode.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache in sorted(target.rglob("__pycache__")):
        shutil.rmtree(cache)


def _compile(rootfs: pathlib.Path, root: pathlib.Path, *, log: pathlib.Path) -> None:
    """Compile /SITE_DIR inside `root` with the image's python3: `rootfs` unpacked there, chroot."""
    if os.geteuid() != 0:
        raise errors.HarnessError("compiling the service image's bytecode needs root (chroot)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    images._run_logged(["tar", "-x", "-p", "--numeric-owner", "-f", str(rootfs), "-C", str(root)], cwd=root, env=env,
                       log=log, timeout=BUILD_TIMEOUT)  # fmt: skip
    inside = ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "python3", "-m", "compileall", "-q",
              "--invalidation-mode", "unchecked-hash", f"/{SITE_DIR}"]  # fmt: skip
    images._run_logged(["chroot", str(root), *inside], cwd=root, env=env, log=log, timeout=BUILD_TIMEOUT)


def built_site(rootfs: pathlib.Path, packages: dict[str, str], *, cache: pathlib.Path | None = None
               ) -> tuple[pathlib.Path, str, float]:  # fmt: skip
    """The project and its dependencies for the image's Python, compiled: (folder, key, seconds it took)."""
    cache = cache or versions.cache_dir()
    key = site_key(_image_python(packages))
    folder = cache / "service" / f"site-{key}"
    if (folder / ".complete").exists():
        return folder, key, 0.0
    started = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"site-{key}.partial-", dir=folder.parent))
    log = folder.parent / f"site-{key}.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, **PIP_ENV}
    try:
        source = work / "source"
        source.mkdir()
        for name in PROJECT_FILES:
            shutil.copy2(REPO_ROOT / name, source / name)
        for package in PACKAGES:
            shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
        logger.info("service: pip wheel and pip install for Python %s (log %s)", PYTHON_VERSION, log)
        images._run_logged([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work / "wheels"),
                            str(source)], cwd=work, env=env, log=log, timeout=BUILD_TIMEOUT)  # fmt: skip
        wheel = next((work / "wheels").glob("storeops-*.whl"))
        root = work / "root"
        site = root / SITE_DIR
        site.parent.mkdir(parents=True)
        _pip_install(wheel, site, env=env, log=log)
        logger.info("service: compileall with the image's python3 in %s", root)
        _compile(rootfs, root, log=log)
        (site / ".complete").touch()
        try:
            site.rename(folder)
        except OSError:  # another build finished first: use its copy
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder, key, time.monotonic() - started


# --- the image ----------------------------------------------------------------------------------------------


def image_key(site: str) -> str:
    digest = hashlib.sha256(f"{IMAGE.rootfs_key()} {site} {REF}".encode())
    digest.update(json.dumps(dict(IMAGE.config), sort_keys=True).encode())
    digest.update(f"{SITE_DIR} {STATE_DIR} {USER}".encode())
    return digest.hexdigest()[:16]


def build(*, cache: pathlib.Path | None = None) -> Built:
    """Build the image (or find it in the cache): its archive, reference (REF) and timings."""
    started = time.monotonic()
    cache = cache or versions.cache_dir()
    folder = cache / "images"
    with debian._lock(folder, IMAGE.name):
        rootfs, packages_file = debian._rootfs_paths(folder, IMAGE)
        rootfs_seconds = 0.0
        if not rootfs.exists():
            rootfs_seconds = debian._mmdebstrap(IMAGE, rootfs, packages_file)
        packages = debian._packages(packages_file)
        site, key, site_seconds = built_site(rootfs, packages, cache=cache)
        archive_name = f"{IMAGE.name}-{IMAGE.tag}-{image_key(key)}"
        archive = folder / f"{archive_name}.tar"
        cached = archive.exists()
        if not cached:
            # The service's state folder (the Deployment mounts an emptyDir there).
            entries = [images._Entry(STATE_DIR, mode=0o755, uid=USER, gid=USER)]
            debian.pack_with_tree(IMAGE, tree=site, path=SITE_DIR, archive_name=archive_name, entries=entries,
                                  labels=_labels(packages), cache=cache)  # fmt: skip
    seconds = time.monotonic() - started
    logger.info("image %s: %s in %.1fs (%s)", REF, archive, seconds, "cached" if cached else "built")
    return Built(image=images.Image(ref=REF, archive=archive), seconds=seconds, site_seconds=site_seconds,
                 rootfs_seconds=rootfs_seconds, cached=cached, packages=packages)  # fmt: skip


def _labels(packages: dict[str, str]) -> dict[str, str]:
    labels = debian._labels(IMAGE, packages)
    labels["org.opencontainers.image.version"] = VERSION
    labels["org.opencontainers.image.source"] = (
        "storeops: the service (generator/, webhook/) of this repository, its dependencies from PyPI; "
        + labels["org.opencontainers.image.source"]
    )
    return labels


def main() -> None:
    """Build the image and print what it took: python -m harness.images.service"""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build()
    print(debian.summary(built.image, seconds=built.seconds, cached=built.cached,
                         parts={"site": built.site_seconds, "mmdebstrap": built.rootfs_seconds}))


if __name__ == "__main__":
    main()
