"""Releases on a checkout: snapshot a working chart into an immutable release, and check the snapshots.

What a release is, and why, is in :mod:`generator.releases` (pure); this module reads and writes the files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from generator import constants, releases, rendering, validation
from generator.errors import Problem, StoreopsError

log = logging.getLogger(__name__)


def release_problems(root: Path) -> list[Problem]:
    """Every released snapshot under ``root`` that differs from what its digest file recorded when it was made."""
    out: list[Problem] = []
    top = root / constants.RELEASES_DIR
    for engine_dir in sorted(top.iterdir()) if top.is_dir() else []:
        for version_dir in sorted(p for p in engine_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            engine, version = engine_dir.name, version_dir.name
            recorded = root / releases.digest_path(engine, version)
            out.extend(releases.digest_problems(engine, version, _snapshot_files(version_dir),
                                                recorded.read_bytes() if recorded.is_file() else None))
    return out


def _snapshot_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path; a symlink (followed nowhere) counts as its target's name."""
    files: dict[str, bytes] = {}
    for current, dirs, names in os.walk(folder):
        for name in [*names, *(d for d in dirs if (Path(current) / d).is_symlink())]:
            path = Path(current) / name
            relative = path.relative_to(folder).as_posix()
            files[relative] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return files


def release(root: Path, engine: str) -> str:
    """Snapshot the working chart of ``engine`` (``templates/<engine>``) and the library, as Helm loads them,
    into ``templates/releases/<engine>/<version>/`` with its digest file; the version is the chart's
    ``Chart.yaml`` version. Returns it. Raises StoreopsError for an unknown engine or a version already
    released (a release never changes: raise the version to release again)."""
    if engine not in validation.engines():
        raise StoreopsError(f"no engine {engine!r} (engines: {', '.join(validation.engines())})")
    chart = root / rendering.chart_path(engine)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    version = str((meta or {}).get("version") or "")
    if not releases.VERSION.fullmatch(version):
        raise StoreopsError(f"{rendering.chart_path(engine)}/Chart.yaml: version {version!r} is not a chart "
                            f"version such as 0.2.0")
    target = root / releases.release_dir(engine, version)
    if target.exists() or (root / releases.digest_path(engine, version)).exists():
        raise StoreopsError(f"{engine} {version} is already released ({releases.release_dir(engine, version)}): "
                            f"a release never changes; raise the version in {rendering.chart_path(engine)}/Chart.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        _copy_chart(chart, staging / engine)
        _copy_chart(root / constants.LIBRARY_CHART, staging / releases.LIBRARY)
        digest = releases.digest(_snapshot_files(staging))
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / releases.digest_path(engine, version)).write_text(digest)
    log.info("released %s %s into %s", engine, version, target)
    return version


def _copy_chart(source: Path, target: Path) -> None:
    """Copy a chart as Helm loads it (``.helmignore`` applied), its symlinks kept as symlinks."""
    helmignore = source / ".helmignore"
    patterns = releases.ignore_patterns(helmignore.read_text()) if helmignore.is_file() else []

    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(source).as_posix()
        return {n for n in names if releases.ignored(n if relative == "." else f"{relative}/{n}",
                                                     Path(folder, n).is_dir() and not Path(folder, n).is_symlink(),
                                                     patterns)}

    shutil.copytree(source, target, symlinks=True, ignore=ignore)
