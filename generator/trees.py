"""The file-tree edge: reading inputs and rendered output, and writing the rendered tree.

Writes to ``rendered/`` are staged in a temporary tree beside it and then moved into place, so a
failed run leaves the previous output untouched, stale files vanish, and files whose bytes did not
change keep their inode and timestamps (git then sees only what really changed).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from generator import constants, fleet
from generator.errors import GitError

log = logging.getLogger(__name__)


def read_inputs(root: Path) -> dict[str, bytes]:
    """Every input file under ``root`` (stores, clusters, plans, the charts' values), by repo-relative path."""
    files: dict[str, bytes] = {}
    for folder in (constants.STORES_DIR, constants.CLUSTERS_DIR):
        directory = root / folder
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                path = f"{folder}/{entry.name}"
                if entry.is_file() and fleet.is_input(path):
                    with open(entry.path, "rb") as f:
                        files[path] = f.read()
    for path in (constants.PLANS_FILE, *fleet.chart_inputs(), *_release_values(root)):
        if (root / path).is_file():
            files[path] = (root / path).read_bytes()
    return files


def _release_values(root: Path) -> list[str]:
    """The values files of the released charts under ``root`` (``templates/releases/<engine>/<version>/<engine>``)."""
    found = []
    for path in sorted((root / constants.RELEASES_DIR).glob(f"*/*/*/{constants.CHART_VALUES_FILE}")):
        relative = path.relative_to(root).as_posix()
        if fleet.is_input(relative):
            found.append(relative)
    return found


def read_inputs_at(repo: Path, revision: str) -> dict[str, bytes]:
    """The input files as committed at ``revision`` in the git repository ``repo``."""
    return {p: c for p, c in read_git_tree(repo, revision, [constants.STORES_DIR, constants.CLUSTERS_DIR,
                                                            constants.PLANS_FILE, *fleet.chart_inputs(),
                                                            constants.RELEASES_DIR]).items()
            if fleet.is_input(p)}


def read_charts(root: Path, folder: str = constants.TEMPLATES_DIR) -> dict[str, bytes]:
    """Every file of the charts under ``folder`` (``templates/``) on disk, symlinks left out (as read_git_tree does)."""
    files: dict[str, bytes] = {}
    top = root / folder
    for folder, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def read_rendered_at(repo: Path, revision: str) -> dict[str, bytes]:
    return read_git_tree(repo, revision, [constants.RENDERED_DIR])


def read_git_tree(repo: Path, revision: str, paths: list[str]) -> dict[str, bytes]:
    """Files under ``paths`` at ``revision``, read in one ``git cat-file --batch`` run."""
    listing = _git(repo, "ls-tree", "-r", "-z", "--full-tree", revision, "--", *paths)
    blobs: list[tuple[str, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha = meta.split()
        if kind == b"blob" and mode != b"120000":
            blobs.append((raw_path.decode(), sha.decode()))
    if not blobs:
        return {}
    out = _git(repo, "cat-file", "--batch", stdin="\n".join(sha for _, sha in blobs).encode() + b"\n")
    files: dict[str, bytes] = {}
    offset = 0
    for path, _ in blobs:
        header_end = out.index(b"\n", offset)
        size = int(out[offset:header_end].split()[2])
        files[path] = out[header_end + 1:header_end + 1 + size]
        offset = header_end + 1 + size + 1
    return files


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise GitError(f"git {args[0]} failed in {repo}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def read_rendered(root: Path) -> dict[str, bytes]:
    """Every file under ``root/rendered``, by repo-relative path."""
    base = root / constants.RENDERED_DIR
    files: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(base):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                files[f"{rel}/{name}"] = f.read()
    return files


def rendered_store_ids(root: Path) -> set[str]:
    """Stores that have an Application in the rendered tree on disk (for the mass-delete guard)."""
    ids: set[str] = set()
    base = root / constants.RENDERED_DIR
    if not base.is_dir():
        return ids
    for cluster in os.scandir(base):
        apps = Path(cluster.path) / constants.APPS_SUBDIR
        if cluster.is_dir() and apps.is_dir():
            ids.update(n.removesuffix(constants.ENTRY_SUFFIX) for n in os.listdir(apps)
                       if n.endswith(constants.ENTRY_SUFFIX))
    return ids


@dataclass(frozen=True)
class Changes:
    written: list[str]
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.written or self.removed)

    @property
    def paths(self) -> list[str]:
        return sorted(self.written + self.removed)


def diff_tree(current: dict[str, bytes], files: dict[str, bytes]) -> Changes:
    written = sorted(p for p, content in files.items() if current.get(p) != content)
    removed = sorted(set(current) - set(files))
    return Changes(written, removed)


def write_rendered(root: Path, files: dict[str, str], current: dict[str, bytes] | None = None) -> Changes:
    """Make ``root/rendered`` hold exactly ``files`` (repo-relative paths under ``rendered/``).

    ``current`` is the tree on disk when the caller already read it.
    """
    encoded = {p: c.encode() for p, c in files.items()}
    for path in encoded:
        if not path.startswith(constants.RENDERED_DIR + "/") or ".." in path.split("/"):
            raise ValueError(f"refusing to write {path!r} outside {constants.RENDERED_DIR}/")
    base = root / constants.RENDERED_DIR
    if current is None:
        current = read_rendered(root)
    changes = diff_tree(current, encoded)
    if not changes:
        return changes
    staging = Path(tempfile.mkdtemp(prefix=".rendered-", dir=root))
    try:
        for path in changes.written:
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encoded[path])
        if not base.exists():
            # First render: the whole tree appears at once.
            (staging / constants.RENDERED_DIR).mkdir(exist_ok=True)
            os.rename(staging / constants.RENDERED_DIR, base)
        else:
            for path in changes.written:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / path, root / path)
            for path in changes.removed:
                (root / path).unlink()
            _prune_empty_dirs(base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("rendered tree updated: %d written, %d removed", len(changes.written), len(changes.removed))
    return changes


def replace_files(root: Path, files: dict[str, str], remove: Sequence[str] = ()) -> Changes:
    """Write a few rendered files in place (each atomically) and remove others; for one-store updates."""
    written = []
    for path, content in sorted(files.items()):
        target = root / path
        data = content.encode()
        try:
            if target.read_bytes() == data:
                continue
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        staged.write_bytes(data)
        os.replace(staged, target)
        written.append(path)
    removed = []
    for path in remove:
        try:
            (root / path).unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return Changes(written, sorted(removed))


def _prune_empty_dirs(base: Path) -> None:
    for dirpath, _, _ in os.walk(base, topdown=False):
        if Path(dirpath) != base and not os.listdir(dirpath):
            os.rmdir(dirpath)
