"""The generator's commands on a checkout: validate, render, check, plan, rotate-password and rollback."""

from __future__ import annotations

import difflib
import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import yaml

from generator import constants, entries, fleet, models, planning, releases, releasing, rendering, trees
from generator.errors import InvalidInput, Problem, StoreopsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """What one render (real or in memory) produced and how it differs from what was there."""

    fleet: fleet.Fleet
    files: dict[str, str]
    changes: planning.ChangeSet


def load(root: Path) -> fleet.Fleet:
    return fleet.build(trees.read_inputs(root))


def validate(root: Path, base: str | None = None) -> tuple[fleet.Fleet, list[Problem]]:
    """Every problem of ``root``'s inputs and of its released snapshots (edited since released); with ``base``
    (a git revision), also what they may not change against it (a store's engine or cluster, a release that
    was there)."""
    loaded = load(root)
    problems = [*loaded.problems, *releasing.release_problems(root)]
    if base is None:
        return loaded, sorted(problems)
    before = fleet.build(trees.read_inputs_at(root, base))
    edited = releases.changed_at_base(trees.read_git_tree(root, base, [constants.RELEASES_DIR]),
                                      trees.read_charts(root, constants.RELEASES_DIR))
    return loaded, sorted({*problems, *fleet.immutable_changes(before, loaded), *edited})


def render_files(loaded: fleet.Fleet, repo_url: str = "") -> dict[str, str]:
    """Render every store of a valid fleet; raises InvalidInput listing every problem."""
    targets = loaded.targets()
    return rendering.render_fleet(targets, [c for c, _ in loaded.clusters.values()], repo_url)


def _as_bytes(files: dict[str, str]) -> dict[str, bytes]:
    return {p: c.encode() for p, c in files.items()}


def render(root: Path, *, repo_url: str = "", allow_mass_delete: bool = False, share: float = 0.25,
           write: bool = True) -> Report:
    """Render ``root``'s inputs into ``root/rendered`` (or only compare, with ``write=False``)."""
    loaded = load(root)
    files = render_files(loaded, repo_url)
    current = trees.read_rendered(root)
    existing = {i for i in map(rendering.store_id_of, current) if i}
    fleet.check_removals(existing, loaded.store_ids(), share=share, allow=allow_mass_delete)
    changes = planning.compare(current, _as_bytes(files))
    if write and changes:
        trees.write_rendered(root, files, current)
    log.info("rendered %d stores from %s: %s", len(loaded.store_ids()), root, changes.summary())
    return Report(loaded, files, changes)


def check(root: Path, *, repo_url: str = "") -> Report:
    """Compare the committed ``rendered/`` with what the inputs render to; writes nothing."""
    return render(root, repo_url=repo_url, allow_mass_delete=True, write=False)


@dataclass(frozen=True)
class PlanResult:
    changes: planning.ChangeSet
    diff: str
    #: The images of the stores added or changed, and of every store on a cluster whose ``images``
    #: changed, when their cluster profile sets ``images``.
    images: tuple[planning.StoreImages, ...] = ()
    #: Clusters whose profile's ``images`` changed, each with every store on it.
    image_changes: dict[str, list[str]] = field(default_factory=dict)
    #: Charts that changed (by engine), with every store they reach.
    charts: tuple[planning.ChartChange, ...] = ()


def plan(root: Path, base: str, *, repo_url: str = "", helm: str | None = None) -> PlanResult:
    """What the working tree's inputs change against the inputs committed at ``base``.

    Raises InvalidInput when the inputs are invalid or change what a store keeps for life.
    """
    loaded = load(root)
    base_fleet = fleet.build(trees.read_inputs_at(root, base))
    added = fleet.change_problems(base_fleet, loaded)
    if added:
        raise InvalidInput(added)
    after = _as_bytes(render_files(loaded, repo_url))
    try:
        before = _as_bytes(render_files(base_fleet, repo_url))
    except InvalidInput:
        # A broken base cannot be rendered; compare against what it had committed instead.
        before = trees.read_rendered_at(root, base)
    changes = planning.compare(before, after)
    image_changes = planning.image_changes(base_fleet, loaded)
    shown = [*changes.added, *changes.changed, *(i for ids in image_changes.values() for i in ids)]
    charts = _chart_changes(root, base, loaded, after, helm=helm)
    return PlanResult(changes, planning.unified_diff(before, after, changes),
                      tuple(planning.store_images(loaded, shown)), image_changes, charts)


def _chart_changes(root: Path, base: str, loaded: fleet.Fleet, rendered: dict[str, bytes],
                   *, helm: str | None) -> tuple[planning.ChartChange, ...]:
    """Every engine whose chart (or the library) differs from ``base``, with the stores it reaches and,
    given ``helm``, the manifests of one of them before and after."""
    before = trees.read_git_tree(root, base, [constants.TEMPLATES_DIR])
    out = []
    for engine, files in sorted(planning.chart_files_changed(before, trees.read_charts(root)).items()):
        # Stores pinned to a release are not reached: their chart is the release's snapshot.
        stores = sorted((t.store for t in loaded.targets() if t.store.engine == engine and not t.store.chart_version),
                        key=lambda s: s.id)
        by_cluster: dict[str, int] = {}
        for store in stores:
            by_cluster[store.cluster] = by_cluster.get(store.cluster, 0) + 1
        sample, diff = "", ""
        if stores and helm:
            sample = stores[0].id
            diff = _helm_diff(root, before, engine, stores[0], rendered, helm)
        out.append(planning.ChartChange(engine, tuple(files), tuple(s.id for s in stores), by_cluster, sample, diff))
    return tuple(out)


def _helm_diff(root: Path, base_files: dict[str, bytes], engine: str, store: models.Store,
               rendered: dict[str, bytes], helm: str) -> str:
    """``helm template`` of ``store`` with the base's chart and with the working tree's, as a unified diff."""
    values = rendered.get(rendering.values_path(store.cluster, store.id))
    if values is None:
        return ""
    with tempfile.TemporaryDirectory(prefix="storeops-plan-") as tmp:
        old = Path(tmp)
        for path, content in base_files.items():
            if path.startswith((f"{constants.TEMPLATES_DIR}/{engine}/", constants.LIBRARY_CHART + "/")):
                (old / path).parent.mkdir(parents=True, exist_ok=True)
                (old / path).write_bytes(content)
        link = old / constants.TEMPLATES_DIR / engine / "charts" / Path(constants.LIBRARY_CHART).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / ".." / Path(constants.LIBRARY_CHART).name)
        (old / "values.yaml").write_bytes(values)

        def template(chart: Path) -> list[str]:
            done = subprocess.run([helm, "template", store.app_name, str(chart), "--namespace", store.namespace,
                                   "--values", str(old / "values.yaml")], capture_output=True, text=True,
                                  timeout=120, check=False)  # fmt: skip
            if done.returncode != 0:
                return [f"(helm template failed: {done.stderr.strip()[-500:]})\n"]
            return done.stdout.splitlines(keepends=True)

        return "".join(difflib.unified_diff(template(old / constants.TEMPLATES_DIR / engine),
                                            template(root / constants.TEMPLATES_DIR / engine),
                                            f"{store.id} (at base)", f"{store.id} (working tree)"))


def update_store(root: Path, loaded: fleet.Fleet, path: str, content: bytes | str | None,
                 *, repo_url: str = "") -> tuple[fleet.Fleet, trees.Changes]:
    """Re-check and re-render after one store file changed, writing only that store's files.

    All rules still run (the cross-entry ones are one pass over the fleet); only the changed
    store is parsed and rendered again. Raises InvalidInput, leaving the files untouched.
    """
    old = loaded.stores.get(path)
    updated = loaded.with_store(path, content)
    problems = updated.problems
    if problems:
        raise InvalidInput(problems)
    stale: list[str] = []
    if old is not None and old.entry is not None:
        previous = old.entry.store
        stale = [rendering.app_path(previous.cluster, previous.id),
                 rendering.values_path(previous.cluster, previous.id)]
    files: dict[str, str] = {}
    new = updated.stores.get(path)
    if new is not None and new.entry is not None:
        store = new.entry.store
        files = rendering.render_store(updated.target_of(store), repo_url)
    return updated, trees.replace_files(root, files, [p for p in stale if p not in files])


def rollback(root: Path, store_id: str, *, revision: str = "", repo_url: str = "") -> str:
    """Put the store's entry under ``root`` back as it was at ``revision`` of the checkout's history (by
    default the version before its last change), keeping its password count, and re-render it, in one
    atomic write; returns the revision. Raises StoreopsError when there is nothing to go back to."""
    path = entries.path_for(store_id)
    loaded = load(root)
    held = loaded.stores.get(path)
    if held is None or held.entry is None:
        raise StoreopsError(f"no store {store_id!r}: {root / path} is missing or does not load")
    repo = git.Repo(root)
    try:
        if not revision:
            commits = [c.hexsha for c in repo.iter_commits(paths=path, max_count=2)]
            if len(commits) < 2:
                raise StoreopsError(f"{path} has no earlier version in this checkout's history")
            revision = commits[1]
        text = str(repo.git.show(f"{revision}:{path}"))
    except (git.GitCommandError, ValueError) as e:
        raise StoreopsError(f"{path} is not in revision {revision!r} of this checkout") from e
    wanted = yaml.safe_load(text)
    if not isinstance(wanted, dict):
        raise StoreopsError(f"{path} at {revision[:12]} is not a store entry")
    change = entries.rollback_patch(held.entry.doc.data, wanted)
    if not change:
        raise StoreopsError(f"{path} is already as at {revision[:12]}: nothing to roll back")
    _write_entry(root, loaded, path, change, repo_url)
    return revision


def _write_entry(root: Path, loaded: fleet.Fleet, path: str, change: dict[str, Any], repo_url: str) -> None:
    """Apply ``change`` (a merge patch) to the store entry at ``path`` and write it with its store's rendered
    files in one atomic write; InvalidInput (nothing written) when the result breaks a rule or changes what
    a store keeps (engine, cluster, volume sizes, password count)."""
    content = entries.merge_patch((root / path).read_text(), change)
    updated = loaded.with_store(path, content)
    problems = sorted({*updated.problems, *fleet.immutable_changes(loaded, updated)})
    if problems:
        raise InvalidInput(problems)
    new = updated.stores[path].entry
    assert new is not None
    trees.replace_files(root, {path: content, **rendering.render_store(updated.target_of(new.store), repo_url)}, [])


def rotate_password(root: Path, store_id: str, *, repo_url: str = "") -> int:
    """Raise the store's ``adminPasswordRotation`` by one in its entry under ``root`` and re-render its
    files, in one atomic write; returns the new count. Committing it (push or pull request) changes the
    shop admin's password when Argo CD syncs the store. Raises StoreopsError for an unknown store."""
    path = entries.path_for(store_id)
    loaded = load(root)
    held = loaded.stores.get(path)
    if held is None or held.entry is None:
        raise StoreopsError(f"no store {store_id!r}: {root / path} is missing or does not load "
                            f"(`storeops validate` says why)")
    count = held.entry.store.password_rotation + 1
    _write_entry(root, loaded, path, {"adminPasswordRotation": count}, repo_url)
    return count
