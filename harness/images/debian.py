"""The stores' images, built here from Debian 13 (trixie) packages: MariaDB, PostgreSQL, Redis, WordPress
(Apache + mod_php) and Python, under fixed local names (``storeops.local/mariadb:11.8-trixie``, ...);
and older releases to upgrade stores from, each from the Debian suite that has it (``PREVIOUS``:
``storeops.local/wordpress:6.1-apache-bookworm``, Debian 12's WordPress and PHP 8.2).

Each image is two layers: a root filesystem made by ``mmdebstrap`` (root mode, ``minbase`` variant,
no apt lists, documentation, man pages or translations; the users the charts run as created with
the uids they use before any package adds them) and a small layer of our own files from
``harness/images/<image>/`` (entrypoints, configuration). The charts were written for the official
images; what of those images they rely on (environment variables that initialise a data directory,
``healthcheck.sh``, user ids, paths, ports) the entrypoints here do too, in POSIX shell.

The root filesystem is cached in ``<cache>/images/rootfs/`` under a hash of what goes into it (suite,
sources, packages, hooks; an image names its suite, trixie unless it says otherwise), the image
archive in ``<cache>/images/`` under a hash of that and our files: a change to an entrypoint re-packs
in seconds, a new package list runs mmdebstrap again. The exact Debian version of every package
asked for is in the image's labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import pathlib
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator

from harness import errors, images, versions

__all__ = [
    "IMAGES",
    "MIRROR",
    "PREVIOUS",
    "SUITE",
    "Built",
    "DebianImage",
    "build",
    "build_all",
]

logger = logging.getLogger(__name__)

#: The suite of an image that names none.
SUITE = "trixie"
MIRROR = "http://deb.debian.org"


def sources(suite: str) -> tuple[str, ...]:
    """The apt sources of a suite: its main archive, updates and security updates."""
    return (
        f"deb {MIRROR}/debian {suite} main",
        f"deb {MIRROR}/debian {suite}-updates main",
        f"deb {MIRROR}/debian-security {suite}-security main",
    )


SOURCES = sources(SUITE)
FILES = pathlib.Path(__file__).parent
BUILD_TIMEOUT = 1800.0
#: Left out of every package as it is unpacked (dpkg path filters, kept in the image for later installs).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
#: Run in the root filesystem after the packages (before the tar is written): caches and logs out.
TRIM = (
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/* /tmp/* "
    "/usr/share/doc-base /usr/share/bug /usr/share/menu"
)
MMDEBSTRAP = "mmdebstrap"


@dataclasses.dataclass(frozen=True)
class File:
    """One of our files in the image's top layer: `source` under harness/images/<image>/."""

    path: str  # inside the image, without the leading slash
    source: str | None = None
    link: str | None = None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclasses.dataclass(frozen=True)
class DebianImage:
    """What an image is made of."""

    name: str
    tag: str
    packages: tuple[str, ...]
    #: The package whose version is the image's org.opencontainers.image.version.
    main: str
    title: str
    #: (name, uid, home) of system users (and their groups) created before the packages are installed.
    users: tuple[tuple[str, int, str], ...] = ()
    #: Shell run inside the root filesystem after the packages are installed.
    customize: tuple[str, ...] = ()
    files: tuple[File, ...] = ()
    config: tuple[tuple[str, object], ...] = ()
    #: The Debian release the packages come from (its folder of our files is harness/images/<name>/ all the same).
    suite: str = SUITE
    #: Where the name points: storeops.local for local builds; the project's own registry for its service image.
    registry: str = images.REGISTRY

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.name}:{self.tag}"

    @property
    def sources(self) -> tuple[str, ...]:
        return sources(self.suite)

    def rootfs_key(self) -> str:
        # The same inputs, named the same, as before images had a suite of their own: the cached root
        # filesystems of trixie images keep their keys.
        inputs = {"suite": self.suite, "sources": self.sources, "dpkg": DPKG_OPTIONS, "trim": TRIM,
                  "packages": self.packages, "users": self.users, "customize": self.customize}  # fmt: skip
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]

    def key(self) -> str:
        digest = hashlib.sha256(self.rootfs_key().encode())
        digest.update(json.dumps([dataclasses.asdict(f) for f in self.files], sort_keys=True).encode())
        digest.update(json.dumps(dict(self.config), sort_keys=True).encode())
        for file in self.files:
            if file.source is not None:
                digest.update((FILES / self.name / file.source).read_bytes())
        return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Built:
    """An image built (or found in the cache) and how long that took."""

    image: images.Image
    seconds: float
    rootfs_seconds: float  # 0 when the root filesystem came from the cache
    cached: bool
    packages: dict[str, str]  # Debian package -> version, every package of the root filesystem


_LIBRARY = "/usr/local/bin"
_ENTRYPOINT = File(f"{_LIBRARY[1:]}/entrypoint.sh", source="entrypoint.sh")
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run_dir(name: str, uid: int) -> File:
    """A folder under /run (mmdebstrap leaves /run empty), writable by `uid` and, sticky, by any user."""
    return File(f"run/{name}", mode=0o1777, uid=uid, gid=uid)


#: PHP packages of the WordPress images (php<version>-<extension>): the command line first, for setup.php.
PHP_EXTENSIONS = ("cli", "mysql", "gd", "intl", "zip", "curl", "xml", "mbstring", "bcmath")


def _wordpress(*, tag: str, suite: str, php: str, themes: tuple[str, ...]) -> DebianImage:
    """storeops.local/wordpress:<tag>: Debian's wordpress of `suite` on Apache with mod_php `php`, the
    same files of ours (entrypoint, Apache and WordPress configuration) whatever the release."""
    return DebianImage(
        name="wordpress",
        tag=tag,
        suite=suite,
        packages=(
            "wordpress",
            *(f"wordpress-theme-{theme}" for theme in themes),
            "apache2",
            f"libapache2-mod-php{php}",
            # The chart's setup Job runs setup.php with this image's PHP.
            *(f"php{php}-{extension}" for extension in PHP_EXTENSIONS),
        ),
        main="wordpress",
        title=f"WordPress on Apache with mod_php (Debian's wordpress, apache2, libapache2-mod-php{php})",
        customize=(
            "a2enmod -q rewrite expires remoteip",
            "rm -f /var/www/html/index.html",
            # WordPress as the first start copies it: Debian's links to shared PHP and JS libraries
            # resolved, Debian's multi-site wp-config.php replaced by ours.
            "cp -aL /usr/share/wordpress /usr/src/wordpress && rm -f /usr/src/wordpress/wp-config.php",
            "rm -rf /usr/share/wordpress && ln -s /usr/src/wordpress /usr/share/wordpress",
            "chown -R www-data:www-data /usr/src/wordpress",
            # Apache's run, lock and log folders writable by whichever user runs it; logs to the
            # container's output.
            "mkdir -p /var/run/apache2 /var/lock/apache2 /var/log/apache2",
            "chown www-data:www-data /var/run/apache2 /var/lock/apache2 /var/log/apache2",
            "chmod 1777 /var/run/apache2 /var/lock/apache2 /var/log/apache2",
            "ln -sfT /dev/stderr /var/log/apache2/error.log",
            "ln -sfT /dev/stdout /var/log/apache2/access.log",
            "ln -sfT /dev/stdout /var/log/apache2/other_vhosts_access.log",
            "chown www-data:www-data /var/www/html",
        ),
        files=(
            _ENTRYPOINT,
            File(f"{_LIBRARY[1:]}/apache2-foreground", source="apache2-foreground"),
            File(
                "etc/apache2/conf-available/storeops-wordpress.conf", source="storeops-wordpress.conf", mode=0o644
            ),
            File(
                "etc/apache2/conf-enabled/storeops-wordpress.conf", link="../conf-available/storeops-wordpress.conf"
            ),
            File(
                "usr/src/wordpress/wp-config-docker.php", source="wp-config-docker.php", mode=0o644, uid=33, gid=33
            ),
            File("usr/src/wordpress/.htaccess", source="htaccess", mode=0o644, uid=33, gid=33),
            _run_dir("apache2", 33),
            _run_dir("lock", 0),
            _run_dir("lock/apache2", 33),
            # Apache's logs go to the container's output (the trim empties /var/log).
            File("var/log/apache2", mode=0o1777, uid=33, gid=33),
            File("var/log/apache2/error.log", link="/dev/stderr"),
            File("var/log/apache2/access.log", link="/dev/stdout"),
            File("var/log/apache2/other_vhosts_access.log", link="/dev/stdout"),
        ),
        config=(
            ("Entrypoint", ["entrypoint.sh"]),
            ("Cmd", ["apache2-foreground"]),
            ("User", "33:33"),
            ("Env", [_PATH]),
            ("WorkingDir", "/var/www/html"),
            ("ExposedPorts", {"80/tcp": {}}),
            ("Volumes", {"/var/www/html": {}}),
            # Apache's graceful stop.
            ("StopSignal", "SIGWINCH"),
        ),
    )


IMAGES: dict[str, DebianImage] = {
    image.name: image
    for image in (
        DebianImage(
            name="mariadb",
            tag="11.8-trixie",
            packages=("mariadb-server", "mariadb-client"),
            main="mariadb-server",
            title="MariaDB server (Debian's mariadb-server)",
            users=(("mysql", 999, "/nonexistent"),),
            customize=(
                # The package's postinst made a data directory: the first start makes the real one.
                "rm -rf /var/lib/mysql && mkdir -p /var/lib/mysql /run/mysqld /docker-entrypoint-initdb.d",
                "chown mysql:mysql /var/lib/mysql /run/mysqld && chmod 1777 /run/mysqld",
                # Listen on every address (a Service reaches the pod), not 127.0.0.1 only.
                "sed -i 's/^bind-address/#&/' /etc/mysql/mariadb.conf.d/50-server.cnf",
            ),
            files=(
                _ENTRYPOINT,
                File(f"{_LIBRARY[1:]}/healthcheck.sh", source="healthcheck.sh"),
                File("etc/mysql/mariadb.conf.d/90-storeops.cnf", source="storeops.cnf", mode=0o644),
                _run_dir("mysqld", 999),
            ),
            config=(
                ("Entrypoint", ["entrypoint.sh"]),
                ("Cmd", ["mariadbd"]),
                ("User", "999:999"),
                ("Env", [_PATH]),
                ("ExposedPorts", {"3306/tcp": {}}),
                ("Volumes", {"/var/lib/mysql": {}}),
            ),
        ),
        DebianImage(
            name="postgres",
            tag="17-trixie",
            packages=("postgresql-17",),
            main="postgresql-17",
            title="PostgreSQL 17 server (Debian's postgresql-17)",
            users=(("postgres", 999, "/var/lib/postgresql"),),
            customize=(
                # No cluster of Debian's own (pg_createcluster): the first start runs initdb in PGDATA.
                "rm -rf /etc/postgresql/17 /var/lib/postgresql/17",
                "mkdir -p /var/run/postgresql /var/lib/postgresql/data /docker-entrypoint-initdb.d",
                "chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql",
                "chmod 3777 /var/run/postgresql && chmod 1777 /var/lib/postgresql/data",
            ),
            files=(_ENTRYPOINT, dataclasses.replace(_run_dir("postgresql", 999), mode=0o3777)),
            config=(
                ("Entrypoint", ["entrypoint.sh"]),
                ("Cmd", ["postgres"]),
                ("User", "999:999"),
                (
                    "Env",
                    [
                        "PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "PGDATA=/var/lib/postgresql/data",
                        "LANG=C.UTF-8",
                    ],
                ),
                ("ExposedPorts", {"5432/tcp": {}}),
                ("Volumes", {"/var/lib/postgresql/data": {}}),
                ("StopSignal", "SIGINT"),
            ),
        ),
        DebianImage(
            name="redis",
            tag="8.0-trixie",
            packages=("redis-server", "redis-tools"),
            main="redis-server",
            title="Redis server (Debian's redis-server)",
            users=(("redis", 999, "/var/lib/redis"),),
            customize=("mkdir -p /data && chown redis:redis /data",),
            files=(_ENTRYPOINT,),
            config=(
                ("Entrypoint", ["entrypoint.sh"]),
                ("Cmd", ["redis-server"]),
                ("User", "999:999"),
                ("Env", [_PATH]),
                ("WorkingDir", "/data"),
                ("ExposedPorts", {"6379/tcp": {}}),
                ("Volumes", {"/data": {}}),
            ),
        ),
        _wordpress(tag="6.8-apache-trixie", suite="trixie", php="8.4", themes=("twentytwentyfive",)),
        DebianImage(
            name="python",
            tag="3.13-trixie",
            packages=("python3",),
            main="python3",
            title="Python 3 (Debian's python3)",
            config=(
                ("Cmd", ["python3"]),
                ("User", "65534:65534"),
                ("Env", ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]),
            ),
        ),
    )
}


#: Older releases of the stores' images, to upgrade stores from; built only when asked for by name.
PREVIOUS: dict[str, DebianImage] = {
    "wordpress-6.1": _wordpress(tag="6.1-apache-bookworm", suite="bookworm", php="8.2", themes=("twentytwentythree",)),
}


def build(name: str, *, cache: pathlib.Path | None = None) -> Built:
    """Build one image of IMAGES or PREVIOUS (or find it in the cache): its archive, reference and timings."""
    image = {**IMAGES, **PREVIOUS}[name]
    started = time.monotonic()
    folder = (cache or versions.cache_dir()) / "images"
    archive_name = f"{image.name}-{image.tag}-{image.key()}"
    archive = folder / f"{archive_name}.tar"
    rootfs_seconds = 0.0
    cached = archive.exists()
    with _lock(folder, image.name):
        rootfs, packages_file = _rootfs_paths(folder, image)
        if not archive.exists():
            if not rootfs.exists():
                rootfs_seconds = _mmdebstrap(image, rootfs, packages_file)
            packages = _packages(packages_file)
            config = dict(image.config) | {"Labels": _labels(image, packages)}
            entries = [
                images._Entry(f.path, source=FILES / image.name / f.source if f.source else None, link=f.link,
                              mode=f.mode, uid=f.uid, gid=f.gid)
                for f in image.files
            ]  # fmt: skip
            images._build(image.name, image.tag, entries, config, cache=cache, base=rootfs, archive_name=archive_name)
        packages = _packages(packages_file)
    built = images.Image(ref=image.ref, archive=archive)
    seconds = time.monotonic() - started
    logger.info("image %s: %s in %.1fs (%s)", image.ref, archive, seconds, "cached" if cached else "built")
    return Built(image=built, seconds=seconds, rootfs_seconds=rootfs_seconds, cached=cached, packages=packages)


def build_all(*, cache: pathlib.Path | None = None) -> dict[str, Built]:
    """Every image of IMAGES (the ones the local profile names), one after another (mmdebstrap is I/O
    and CPU heavy: parallel builds gain little)."""
    return {name: build(name, cache=cache) for name in IMAGES}


def _rootfs_paths(folder: pathlib.Path, image: DebianImage) -> tuple[pathlib.Path, pathlib.Path]:
    stem = folder / "rootfs" / f"{image.name}-{image.suite}-{image.rootfs_key()}"
    return stem.with_suffix(".tar"), stem.with_suffix(".packages.json")


@contextlib.contextmanager
def _lock(folder: pathlib.Path, name: str) -> Iterator[None]:
    """One build of an image at a time per cache (a second waits, then finds it built)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mmdebstrap(image: DebianImage, rootfs: pathlib.Path, packages_file: pathlib.Path) -> float:
    """Write the root filesystem tar with mmdebstrap (root mode); the installed versions beside it."""
    if shutil.which(MMDEBSTRAP) is None:
        raise errors.HarnessError(f"{MMDEBSTRAP} is not installed (Debian package mmdebstrap; build.sh installs it)")
    if os.geteuid() != 0:
        raise errors.HarnessError(f"building {image.ref} needs root (mmdebstrap --mode=root)")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    partial = rootfs.with_suffix(f".partial-{os.getpid()}")
    versions_partial = packages_file.with_suffix(f".partial-{os.getpid()}")
    users = [
        f'echo "{user}:x:{uid}:{uid}:{user}:{home}:/usr/sbin/nologin" >> "$1/etc/passwd"; '
        f'echo "{user}:x:{uid}:" >> "$1/etc/group"; '
        f'if [ -e "$1/etc/shadow" ]; then echo "{user}:!:1::::::" >> "$1/etc/shadow"; fi; '
        f'if [ -e "$1/etc/gshadow" ]; then echo "{user}:!::" >> "$1/etc/gshadow"; fi'
        for user, uid, home in image.users
    ]
    inside = " && ".join((*image.customize, TRIM))
    argv = [
        MMDEBSTRAP, "--mode=root", "--variant=minbase", "--format=tar", "--skip=output/dev", "--quiet",
        f"--include={','.join(image.packages)}",
        '--aptopt=Acquire::Languages "none"',
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        *(f"--essential-hook={hook}" for hook in users),
        f"--customize-hook=chroot \"$1\" /bin/sh -ec {shlex.quote(inside)}",
        "--customize-hook=dpkg-query --admindir=\"$1/var/lib/dpkg\" -W -f='${Package}\\t${Version}\\n' "
        f"> {shlex.quote(str(versions_partial))}",
        image.suite, str(partial), *image.sources,
    ]  # fmt: skip
    started = time.monotonic()
    logger.info("image %s: mmdebstrap %s", image.ref, " ".join(image.packages))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
        if result.returncode != 0:
            raise errors.CommandError(
                f"mmdebstrap for {image.ref} failed ({result.returncode}): {result.stderr.strip()[-4000:]}"
            )
        packages = dict(line.split("\t", 1) for line in versions_partial.read_text().splitlines() if "\t" in line)
        packages_file.write_text(json.dumps(packages, indent=1, sort_keys=True) + "\n")
        partial.replace(rootfs)
    finally:
        partial.unlink(missing_ok=True)
        versions_partial.unlink(missing_ok=True)
    return time.monotonic() - started


def _tree_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Owned by root, readable by all, no host timestamps: the layer depends on the contents only."""
    if info.name.endswith("/.complete"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    if not info.issym():
        info.mode = (info.mode | 0o444 | (0o111 if info.isdir() or info.mode & 0o100 else 0)) & 0o755
    return info


def _rootfs_with_tree(rootfs: pathlib.Path, tree: pathlib.Path, path: str, out: pathlib.Path) -> None:
    """One layer tar: the root filesystem, then the contents of `tree` (an application built on the host,
    its ``.complete`` marker left out) under `path` (without the leading slash), owned by root and
    read-only to everyone else; the folders above `path` the root filesystem lacks are made 0755."""
    with tarfile.open(rootfs, "r:") as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        present: set[str] = set()
        for member in source:
            present.add(member.name.rstrip("/"))
            tar.addfile(member, source.extractfile(member) if member.isreg() else None)
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            info = tarfile.TarInfo("./" + "/".join(parts[:depth]))
            if info.name in present:
                continue
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for child in sorted(tree.iterdir()):
            tar.add(child, arcname=f"./{path}/{child.name}", recursive=True, filter=_tree_filter)


def pack_with_tree(image: DebianImage, *, tree: pathlib.Path, path: str, archive_name: str,
                   entries: list[images._Entry], labels: dict[str, str], cache: pathlib.Path) -> pathlib.Path:
    """The archive ``<cache>/images/<archive_name>.tar`` of `image`: its root filesystem (already built) with
    `tree` under `path` (``_rootfs_with_tree``), then `entries` as the top layer; imports as ``image.ref``."""
    folder = cache / "images"
    rootfs, _ = _rootfs_paths(folder, image)
    config = dict(image.config) | {"Labels": labels}
    base = folder / f".{archive_name}.base-{os.getpid()}.tar"
    try:
        _rootfs_with_tree(rootfs, tree, path, base)
        built = images._build(image.name, image.tag, entries, config, cache=cache, base=base,
                              archive_name=archive_name, ref=image.ref)  # fmt: skip
    finally:
        base.unlink(missing_ok=True)
    return built.archive


def _packages(packages_file: pathlib.Path) -> dict[str, str]:
    loaded = json.loads(packages_file.read_text())
    assert isinstance(loaded, dict)
    return {str(k): str(v) for k, v in loaded.items()}


def _labels(image: DebianImage, packages: dict[str, str]) -> dict[str, str]:
    """OCI annotations as labels, and the exact version of every package the image was asked for."""
    labels = {
        "org.opencontainers.image.title": image.title,
        "org.opencontainers.image.version": packages.get(image.main, "unknown"),
        "org.opencontainers.image.base.name": f"debian:{image.suite}",
        "org.opencontainers.image.vendor": "storeops (built locally from Debian packages)",
        "org.opencontainers.image.source": " | ".join(image.sources),
    }
    for package in image.packages:
        labels[f"local.storeops.debian.{package}"] = packages.get(package, "unknown")
    return labels


def summary(image: images.Image, *, seconds: float, cached: bool, parts: dict[str, float]) -> str:
    """One line on a built image for the modules' ``main``: reference, what it took (by part), size, archive."""
    size = image.archive.stat().st_size / 1e6
    took = ", ".join(f"{name} {value:.1f}s" for name, value in parts.items())
    return f"{image.ref}\t{'cached' if cached else 'built'} in {seconds:.1f}s ({took})\t{size:.0f} MB\t{image.archive}"


def main() -> None:
    """Build every image (or the ones named, PREVIOUS's too) and print what it took:
    python -m harness.images.debian [name...]"""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = sys.argv[1:] or list(IMAGES)
    for name in names:
        built = build(name)
        print(summary(built.image, seconds=built.seconds, cached=built.cached,
                      parts={"mmdebstrap": built.rootfs_seconds}))


if __name__ == "__main__":
    main()
