"""Released chart versions: where a release lives, what it holds, and whether it is as it was released. Pure.

A release of an engine's chart is an immutable snapshot, made by ``storeops release``:

    templates/releases/<engine>/<version>/<engine>/        the engine's chart as it was (the Application's path)
    templates/releases/<engine>/<version>/storeops-lib/    the library chart as it was
    templates/releases/<engine>/<version>.sha256           sha256sum of every file of the snapshot

The chart keeps its ``charts/storeops-lib -> ../../storeops-lib`` symlink, which inside the snapshot
points at the snapshot's own library: a release depends on nothing outside its folder, so a commit
that changes the working chart, the library or another release leaves it (and every store pinned
to it) alone. The digest file is what ``storeops validate`` checks the snapshot against.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping, Sequence

from generator import constants, errors
from generator.errors import Problem

#: A chart version (SemVer without build metadata): what ``chartVersion`` and a release folder are named.
VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?")
#: The library's folder name, in ``templates/`` and in each release.
LIBRARY = constants.LIBRARY_CHART.rsplit("/", 1)[1]


def release_dir(engine: str, version: str) -> str:
    """The release's folder (the chart and the library): what its stores' Applications render from."""
    return f"{constants.RELEASES_DIR}/{engine}/{version}"


def chart_dir(engine: str, version: str) -> str:
    """The engine's chart inside the release: the Application's ``spec.source.path``."""
    return f"{release_dir(engine, version)}/{engine}"


def values_path(engine: str, version: str) -> str:
    """The released chart's default values (its default images are read from here)."""
    return f"{chart_dir(engine, version)}/{constants.CHART_VALUES_FILE}"


def digest_path(engine: str, version: str) -> str:
    return release_dir(engine, version) + constants.RELEASE_DIGEST_SUFFIX


def of_values_path(path: str, engines: tuple[str, ...]) -> tuple[str, str] | None:
    """``(engine, version)`` when ``path`` is a released chart's values file, None otherwise."""
    parts = path.split("/")
    prefix = constants.RELEASES_DIR.split("/")
    if len(parts) != len(prefix) + 4 or parts[:len(prefix)] != prefix:
        return None
    engine, version, chart, name = parts[len(prefix):]
    if engine in engines and chart == engine and name == constants.CHART_VALUES_FILE and VERSION.fullmatch(version):
        return engine, version
    return None


def of_path(path: str) -> tuple[str, str] | None:
    """``(engine, version)`` of the release a repo-relative path belongs to (its folder or its digest file)."""
    prefix = constants.RELEASES_DIR + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix):].split("/")
    if len(parts) == 2 and parts[1].endswith(constants.RELEASE_DIGEST_SUFFIX):
        return parts[0], parts[1].removesuffix(constants.RELEASE_DIGEST_SUFFIX)
    if len(parts) >= 3:
        return parts[0], parts[1]
    return None


def ignore_patterns(helmignore: str) -> list[str]:
    """The patterns of a chart's ``.helmignore`` (negations, which storeops's charts do not use, are left out)."""
    return [line.strip() for line in helmignore.splitlines()
            if line.strip() and not line.strip().startswith(("#", "!"))]


def ignored(path: str, is_dir: bool, patterns: Sequence[str]) -> bool:
    """Whether Helm leaves ``path`` (relative to the chart) out of the chart, by ``.helmignore`` ``patterns``:
    a pattern with a ``/`` inside matches the relative path, one without matches the name at any depth, and
    a trailing ``/`` matches directories only. A snapshot holds what Helm loads, not, say, an app's source."""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pattern = pattern.strip("/")
        if dir_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(path if "/" in pattern else name, pattern):
            return True
    return False


def digest(files: Mapping[str, bytes]) -> str:
    """The ``sha256sum``-style listing of a snapshot: ``files`` by path relative to the release folder (a
    symlink's content is its target), checked by :func:`digest_problems`."""
    return "".join(f"{hashlib.sha256(files[path]).hexdigest()}  {path}\n" for path in sorted(files))


def digest_problems(engine: str, version: str, files: Mapping[str, bytes], recorded: bytes | None) -> list[Problem]:
    """What differs between a release's files (relative to its folder) and its digest file's record."""
    where = digest_path(engine, version)
    if recorded is None:
        return [Problem(release_dir(engine, version), 0, "", f"has no {where}: releases are made by "
                        f"`storeops release {engine}`, which records what they hold", errors.RELEASE)]
    expected: dict[str, str] = {}
    for line in recorded.decode("utf-8", "replace").splitlines():
        checksum, _, path = line.partition("  ")
        if path:
            expected[path] = checksum
    actual = {path: hashlib.sha256(content).hexdigest() for path, content in files.items()}
    out = []
    for path in sorted(set(expected) | set(actual)):
        if expected.get(path) == actual.get(path):
            continue
        what = "was added" if path not in expected else "was removed" if path not in actual else "was edited"
        out.append(Problem(f"{release_dir(engine, version)}/{path}", 0, "",
                           f"{what} after {engine} {version} was released: a release never changes; make the change "
                           f"in the working chart (templates/{engine}, templates/{LIBRARY}), raise the version in "
                           f"templates/{engine}/Chart.yaml and run `storeops release {engine}`",
                           errors.RELEASE))
    return out


def changed_at_base(base: Mapping[str, bytes], now: Mapping[str, bytes]) -> list[Problem]:
    """Files of releases that existed at a base revision and differ now (edited, or removed while the
    rest of their release stays). Removing a whole release is allowed: a store still pinned to it is a
    problem of its own (see ``fleet``).

    Both mappings are repo-relative paths of files under the releases folder, symlinks left out.
    """
    kept = {of_path(path) for path in now}
    out = []
    for path in sorted(base):
        found = of_path(path)
        if now.get(path) == base[path] or (path not in now and found not in kept):
            continue
        label = f"{found[0]} {found[1]}" if found else "a release"
        out.append(Problem(path, 0, "", f"{'was removed' if path not in now else 'was edited'}: {label} was "
                                        f"released before this change, and a release never changes",
                           errors.RELEASE))
    return out
