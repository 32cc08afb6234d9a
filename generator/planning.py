"""What a render changes: stores added, changed and removed, the diff, and the commit message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from generator import constants, fleet, images, rendering, validation
from generator.trees import Changes, diff_tree


@dataclass(frozen=True)
class ChangeSet:
    added: list[str]
    changed: list[str]
    removed: list[str]
    files: Changes

    def __bool__(self) -> bool:
        return bool(self.files)

    def summary(self) -> str:
        parts = [f"{len(ids)} {word}" for ids, word in
                 ((self.added, "added"), (self.changed, "changed"), (self.removed, "removed")) if ids]
        return ", ".join(parts) or "no store changes"

    def as_dict(self) -> dict[str, object]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed,
                "files": self.files.paths}


def compare(before: dict[str, bytes], after: dict[str, bytes]) -> ChangeSet:
    """Compare two rendered trees (repo-relative path -> bytes)."""
    files = diff_tree(before, after)
    ids_before = {i for i in map(rendering.store_id_of, before) if i}
    ids_after = {i for i in map(rendering.store_id_of, after) if i}
    touched = {i for i in map(rendering.store_id_of, files.paths) if i}
    return ChangeSet(
        added=sorted(ids_after - ids_before),
        changed=sorted((touched & ids_before) & ids_after),
        removed=sorted(ids_before - ids_after),
        files=files,
    )


def unified_diff(before: dict[str, bytes], after: dict[str, bytes], changes: ChangeSet) -> str:
    out: list[str] = []
    for path in changes.files.paths:
        old = before.get(path, b"").decode().splitlines(keepends=True)
        new = after.get(path, b"").decode().splitlines(keepends=True)
        out.extend(difflib.unified_diff(old, new, f"a/{path}" if path in before else "/dev/null",
                                        f"b/{path}" if path in after else "/dev/null"))
    return "".join(out)


def commit_message(changes: ChangeSet, source: str, *, extra: str = "") -> str:
    """A commit message built from the change set; ``source`` is the input commit rendered."""
    verbs = [(changes.added, "add"), (changes.changed, "update"), (changes.removed, "remove")]
    named = "; ".join(f"{verb} {', '.join(ids)}" for ids, verb in verbs if ids)
    subject = f"Render stores: {named}" if named and len(named) <= 60 else f"Render stores: {changes.summary()}"
    body: list[str] = []
    for ids, title in ((changes.added, "Added"), (changes.changed, "Changed"), (changes.removed, "Removed")):
        if ids:
            body.append(f"{title}: {', '.join(ids)}")
    if extra:
        body.append(extra)
    body.append("")
    body.append(f"{constants.COMMIT_TRAILER}: {source}")
    return subject + "\n\n" + "\n".join(body) + "\n"


@dataclass(frozen=True)
class StoreImages:
    """The images one store would run, for stores whose cluster profile has ``images``."""

    store_id: str
    #: The profile the images come from (``clusters/<name>.yaml``).
    source: str
    #: ``(component, image, set by the profile)``, sorted by component.
    images: tuple[tuple[str, images.Image, bool], ...]

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "images": {c: str(i) for c, i, _ in self.images},
                "fromProfile": [c for c, _, mine in self.images if mine]}


def store_images(loaded: fleet.Fleet, store_ids: Iterable[str]) -> list[StoreImages]:
    """The effective images of the stores ``store_ids`` (those in ``loaded`` whose profile has ``images``)."""
    wanted = set(store_ids)
    out = []
    for held in sorted(loaded.stores.values(), key=lambda h: h.entry.store.id if h.entry else ""):
        if held.entry is None or held.entry.store.id not in wanted:
            continue
        store = held.entry.store
        cluster = loaded.clusters[store.cluster][0]
        if cluster.images is None:
            continue
        chart = loaded.chart_images(store)
        mine = set(images.profile_images(store.engine, cluster.images, chart))
        out.append(StoreImages(store.id, cluster.source, tuple(
            (c, image, c in mine) for c, image in sorted(loaded.effective_images(store).items()))))
    return out


def image_changes(before: fleet.Fleet, after: fleet.Fleet) -> dict[str, list[str]]:
    """Profiles whose ``images`` differ between the fleets: ``{cluster: every store on it (after)}``."""
    out: dict[str, list[str]] = {}
    for name, (cluster, _) in sorted(after.clusters.items()):
        was = before.clusters.get(name)
        if was is not None and was[0].images != cluster.images:
            out[name] = sorted(h.entry.store.id for h in after.stores.values()
                               if h.entry is not None and h.entry.store.cluster == name)
    return out


@dataclass(frozen=True)
class ChartChange:
    """A change to an engine's chart (or the library every chart uses): every store of the engine
    renders differently in its cluster though its generated files stay the same."""

    engine: str
    files: tuple[str, ...]
    stores: tuple[str, ...]
    by_cluster: dict[str, int]
    #: ``helm template`` of one of the stores before and after, as a unified diff ('' without helm).
    sample: str = ""
    sample_diff: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"files": list(self.files), "stores": list(self.stores), "byCluster": self.by_cluster,
                "sample": self.sample, "sampleDiff": self.sample_diff}


def chart_files_changed(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, list[str]]:
    """Changed chart files (``templates/<chart>/...``, plans excluded) by engine; a library change counts
    for every engine."""
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p)
                     and p != constants.PLANS_FILE)
    out: dict[str, list[str]] = {}
    for path in changed:
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != constants.TEMPLATES_DIR:
            continue
        if path.startswith(constants.LIBRARY_CHART + "/"):
            for engine in validation.engines():
                out.setdefault(engine, []).append(path)
        elif parts[1] in validation.engines():
            out.setdefault(parts[1], []).append(path)
    return out
