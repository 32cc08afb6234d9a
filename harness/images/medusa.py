"""The Medusa store image, ``storeops.local/medusa-store:<Medusa version>-trixie``: Debian trixie's
Node.js with the store application of ``templates/medusa/app`` built into ``/app/.medusa/server``.

What the application's Dockerfile does in three stages is done here on the host, with the host's
Node.js (>= 20.19, the version Medusa 2 needs; trixie's is 20.19 too, so the native modules npm picks
match):

1. ``npm ci`` of the committed lockfile, cached in ``<cache>/npm/medusa-<lock hash>/`` (the folder
   ``tests/integration/test_medusa_app.py`` uses too);
2. ``medusa build`` of a copy of the application's sources with that ``node_modules`` (admin
   dashboard included: the owner's first login is to it), then ``npm ci --omit=dev`` in the built
   ``.medusa/server``; the result is cached in ``<cache>/medusa/server-<hash>/``, keyed by the lockfile,
   every source file, the admin setting and the host's Node.js major version;
3. the image: a root filesystem made by mmdebstrap with Debian's ``nodejs`` and the user ``node``
   (1000), the same building blocks as the other stores' images (``harness/images/debian.py``), and
   the built server in ``/app/.medusa/server``, owned by root and read-only to the server, which runs
   as 1000 from there: ``node_modules/.bin/medusa start`` (the chart's ``medusa.command``).

The image archive is cached in ``<cache>/images/`` under a hash of the root filesystem, the built
server's key and the image configuration, like the other images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

from harness import errors, images, versions
from harness.images import debian

__all__ = ["ADMIN", "APP", "IMAGE", "Built", "build", "built_server"]

logger = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "templates" / "medusa" / "app"
#: What a build reads from the application folder (the Dockerfile copies the same).
APP_FILES = ("package.json", "package-lock.json", "tsconfig.json", "medusa-config.ts", "src")
SERVER_DIR = "app/.medusa/server"  # inside the image, without the leading slash
USER = 1000
MINIMUM_NODE = (20, 19)
#: The admin dashboard is built into the image (`medusa build` 41-74 s and 1.76 GB at its peak here,
#: against 11-27 s without): built once per change of the application, and it is where the owner
#: sees the orders. The server reads the same setting at start.
ADMIN = True
BUILD_TIMEOUT = 1800.0
NPM_ENV = {"MEDUSA_DISABLE_TELEMETRY": "1", "npm_config_audit": "false", "npm_config_fund": "false",
           "npm_config_update_notifier": "false"}  # fmt: skip


def _medusa_version() -> str:
    package = json.loads((APP / "package.json").read_text())
    version = package["dependencies"]["@medusajs/medusa"]
    assert isinstance(version, str)
    return version


IMAGE = debian.DebianImage(
    name="medusa-store",
    tag=f"{_medusa_version()}-{debian.SUITE}",
    # ca-certificates: Debian's Node.js reads its bundle at every start (and warns when it is missing).
    packages=("nodejs", "ca-certificates"),
    main="nodejs",
    title="Medusa store (templates/medusa/app) on Debian's nodejs",
    users=(("node", USER, "/home/node"),),
    customize=("mkdir -p /home/node && chown node:node /home/node",),
    config=(
        ("Cmd", ["node_modules/.bin/medusa", "start"]),
        ("User", f"{USER}:{USER}"),
        (
            "Env",
            [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                "NODE_ENV=production",
                "MEDUSA_DISABLE_TELEMETRY=1",
                f"MEDUSA_ADMIN_DISABLED={'false' if ADMIN else 'true'}",
                "PORT=9000",
            ],
        ),
        ("WorkingDir", f"/{SERVER_DIR}"),
        ("ExposedPorts", {"9000/tcp": {}}),
    ),
)


@dataclasses.dataclass(frozen=True)
class Built:
    """The image (or the cached one) and what its parts took."""

    image: images.Image
    seconds: float
    server_seconds: float  # npm ci + medusa build + production dependencies; 0 when cached
    rootfs_seconds: float  # mmdebstrap; 0 when cached
    cached: bool
    packages: dict[str, str]


# --- the application, built on the host ------------------------------------------------------------------


def _node() -> tuple[str, str, tuple[int, int]]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise errors.HarnessError("building the Medusa image needs Node.js >= 20.19 and npm on PATH")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(part) for part in out.strip().lstrip("v").split(".")[:2])
    if (major, minor) < MINIMUM_NODE:
        raise errors.HarnessError(f"Medusa 2 needs Node.js >= 20.19; {node} is {out.strip()}")
    return node, npm, (major, minor)


def lock_key() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((APP / name).read_bytes())
    return digest.hexdigest()[:16]


def _source_files() -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for name in APP_FILES:
        path = APP / name
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


def server_key(node_major: int) -> str:
    """Hash of everything the built server depends on: the lockfile, the sources, admin, Node.js major."""
    digest = hashlib.sha256(json.dumps({"admin": ADMIN, "node": node_major, "layout": 2}).encode())
    for path in _source_files():
        digest.update(str(path.relative_to(APP)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _run(argv: list[str], *, cwd: pathlib.Path, env: dict[str, str], log: pathlib.Path) -> None:
    images._run_logged(argv, cwd=cwd, env=env, log=log, timeout=BUILD_TIMEOUT)


def copy_project(project: pathlib.Path, modules: pathlib.Path) -> pathlib.Path:
    """The app's sources (APP_FILES) copied into a new folder `project`, with `modules` linked in as
    its node_modules: what `medusa build` runs in."""
    project.mkdir()
    for name in APP_FILES:
        source = APP / name
        if source.is_dir():
            shutil.copytree(source, project / name)
        else:
            shutil.copy2(source, project / name)
    (project / "node_modules").symlink_to(modules, target_is_directory=True)
    return project


def node_modules(npm: str, *, cache: pathlib.Path | None = None) -> pathlib.Path:
    """The app's node_modules from its lockfile, `npm ci` once into ``<cache>/npm/medusa-<lock key>``."""
    return _node_modules(npm, {**os.environ, **NPM_ENV}, cache or versions.cache_dir())


def _node_modules(npm: str, env: dict[str, str], cache: pathlib.Path) -> pathlib.Path:
    """Every dependency of the lockfile (dev ones too: `medusa build` needs them), installed once."""
    folder = cache / "npm" / f"medusa-{lock_key()}"
    if (folder / ".complete").exists():
        return folder / "node_modules"
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f"{folder.name}.partial-", dir=folder.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(APP / name, partial / name)
        _run([npm, "ci"], cwd=partial, env=env, log=partial / "npm-ci.log")
        (partial / ".complete").touch()
        try:
            partial.rename(folder)
        except OSError:  # another build finished first: use its copy
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder / "node_modules"


def built_server(*, cache: pathlib.Path | None = None) -> tuple[pathlib.Path, str, float]:
    """The built `.medusa/server` with its production node_modules: (folder, key, seconds it took)."""
    cache = cache or versions.cache_dir()
    _, npm, (major, _) = _node()
    key = server_key(major)
    folder = cache / "medusa" / f"server-{key}"
    if (folder / ".complete").exists():
        return folder, key, 0.0
    started = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"server-{key}.partial-", dir=folder.parent))
    home = work / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **NPM_ENV,
           "MEDUSA_ADMIN_DISABLED": "false" if ADMIN else "true"}  # fmt: skip
    log = folder.parent / f"server-{key}.log"
    log.unlink(missing_ok=True)
    try:
        modules = _node_modules(npm, env, cache)
        project = copy_project(work / "app", modules)
        logger.info("medusa: medusa build in %s (log %s)", project, log)
        _run([str(modules / ".bin" / "medusa"), "build"], cwd=project, env=env, log=log)
        server = project / ".medusa" / "server"
        for required in ("package.json", "package-lock.json", "medusa-config.js", "src/scripts/bootstrap.js",
                         "src/scripts/set-admin-password.js"):
            if not (server / required).is_file():
                raise errors.HarnessError(f"medusa build left no {required} in {server}; see {log}")
        if ADMIN and not (server / "public" / "admin" / "index.html").is_file():
            raise errors.HarnessError(f"medusa build left no admin dashboard in {server}; see {log}")
        logger.info("medusa: npm ci --omit=dev in %s", server)
        _run([npm, "ci", "--omit=dev"], cwd=server, env=env, log=log)
        _migration_folders(server)
        (server / ".complete").touch()
        try:
            server.rename(folder)
        except OSError:
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder, key, time.monotonic() - started


def _migration_folders(server: pathlib.Path) -> None:
    """An empty dist/migrations in every Medusa package lacking one: `medusa db:migrate` creates them
    when it looks for a module's migrations, which fails where the code is read-only (the image)."""
    for dist in sorted((server / "node_modules" / "@medusajs").glob("*/dist")):
        (dist / "migrations").mkdir(exist_ok=True)


# --- the image ----------------------------------------------------------------------------------------------


def image_key(server: str) -> str:
    digest = hashlib.sha256(f"{IMAGE.rootfs_key()} {server}".encode())
    digest.update(json.dumps(dict(IMAGE.config), sort_keys=True).encode())
    digest.update(f"{SERVER_DIR} {USER}".encode())
    return digest.hexdigest()[:16]


def build(*, cache: pathlib.Path | None = None) -> Built:
    """Build the image (or find it in the cache): its archive, reference and timings."""
    started = time.monotonic()
    cache = cache or versions.cache_dir()
    folder = cache / "images"
    with debian._lock(folder, IMAGE.name):
        server, key, server_seconds = built_server(cache=cache)
        archive_name = f"{IMAGE.name}-{IMAGE.tag}-{image_key(key)}"
        archive = folder / f"{archive_name}.tar"
        cached = archive.exists()
        rootfs, packages_file = debian._rootfs_paths(folder, IMAGE)
        rootfs_seconds = 0.0
        if not cached:
            if not rootfs.exists():
                rootfs_seconds = debian._mmdebstrap(IMAGE, rootfs, packages_file)
            # The uploads folder of the local file provider (the chart mounts a volume there).
            entries = [images._Entry(f"{SERVER_DIR}/static", mode=0o755, uid=USER, gid=USER)]
            debian.pack_with_tree(IMAGE, tree=server, path=SERVER_DIR, archive_name=archive_name, entries=entries,
                                  labels=_labels(debian._packages(packages_file)), cache=cache)  # fmt: skip
        packages = debian._packages(packages_file)
    seconds = time.monotonic() - started
    logger.info("image %s: %s in %.1fs (%s)", IMAGE.ref, archive, seconds, "cached" if cached else "built")
    return Built(image=images.Image(ref=IMAGE.ref, archive=archive), seconds=seconds, server_seconds=server_seconds,
                 rootfs_seconds=rootfs_seconds, cached=cached, packages=packages)  # fmt: skip


def _labels(packages: dict[str, str]) -> dict[str, str]:
    labels = debian._labels(IMAGE, packages)
    labels["org.opencontainers.image.version"] = _medusa_version()
    labels["local.storeops.medusa.admin"] = "true" if ADMIN else "false"
    return labels


def main() -> None:
    """Build the image and print what it took: python -m harness.images.medusa"""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build()
    print(debian.summary(built.image, seconds=built.seconds, cached=built.cached,
                         parts={"server": built.server_seconds, "mmdebstrap": built.rootfs_seconds}))


if __name__ == "__main__":
    main()
