"""The fleet: every input file parsed and checked, ready to render. Pure: file contents in.

A :class:`Fleet` keeps each store's own checks, so replacing one store file re-parses that file
only and re-runs the cross-entry rules, which are a single pass over the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from generator import (
    backups,
    constants,
    destinations,
    documents,
    errors,
    images,
    models,
    releases,
    rendering,
    validation,
)
from generator.errors import InvalidInput, MassDeleteRefused, Problem


@dataclass(frozen=True)
class _StoreFile:
    entry: validation.Entry | None
    problems: tuple[Problem, ...]
    #: The parsed document of an entry that failed its own checks (cross rules still look at it).
    doc: documents.Document | None = None


@dataclass(frozen=True)
class Fleet:
    stores: dict[str, _StoreFile] = field(default_factory=dict)
    clusters: dict[str, tuple[models.Cluster, documents.Document]] = field(default_factory=dict)
    plans: dict[str, models.Plan] = field(default_factory=dict)
    #: Each engine's default images, from its chart's values.yaml (engines whose chart was read).
    charts: dict[str, dict[str, images.Image]] = field(default_factory=dict)
    #: Each released chart's default images, by ``(engine, version)``: the releases stores may name.
    releases: dict[tuple[str, str], dict[str, images.Image]] = field(default_factory=dict)
    base_problems: tuple[Problem, ...] = ()
    cross_problems: tuple[Problem, ...] = ()

    @property
    def problems(self) -> list[Problem]:
        out = list(self.base_problems) + list(self.cross_problems)
        for store_file in self.stores.values():
            out.extend(store_file.problems)
        return sorted(out)

    def store_ids(self) -> set[str]:
        return {s.entry.store.id for s in self.stores.values() if s.entry}

    def targets(self) -> list[rendering.Target]:
        """The stores to render, sorted by id; raises InvalidInput unless every input is valid."""
        problems = self.problems
        if problems:
            raise InvalidInput(problems)
        out = []
        for path in sorted(self.stores):
            entry = self.stores[path].entry
            assert entry is not None
            store = entry.store
            out.append(self.target_of(store))
        return out

    def target_of(self, store: models.Store) -> rendering.Target:
        """What ``store`` renders from in this fleet (its cluster and plan must be known)."""
        return rendering.Target(store, self.clusters[store.cluster][0], self.plans[store.plan],
                                self.chart_images(store))

    def chart_images(self, store: models.Store) -> dict[str, images.Image]:
        """The default images of the chart ``store`` renders from (its release's, or the working chart's)."""
        if store.chart_version:
            return self.releases.get((store.engine, store.chart_version), {})
        return self.charts.get(store.engine, {})

    def effective_images(self, store: models.Store) -> dict[str, images.Image]:
        """The image each component of ``store`` runs: its chart's default with its profile's settings."""
        cluster = self.clusters[store.cluster][0]
        return images.effective(store.engine, cluster.images, self.chart_images(store))

    def released(self, engine: str) -> list[str]:
        """The released versions of ``engine``'s chart, sorted."""
        return sorted((v for e, v in self.releases if e == engine), key=_version_key)

    def target(self, store_id: str) -> rendering.Target:
        for target in self.targets():
            if target.store.id == store_id:
                return target
        raise KeyError(store_id)

    def with_store(self, path: str, content: bytes | str | None) -> Fleet:
        """This fleet with one store file replaced (or removed when ``content`` is None)."""
        stores = dict(self.stores)
        if content is None:
            stores.pop(path, None)
        else:
            stores[path] = _store_file(path, content)
        return _with_cross_rules(replace(self, stores=stores))


def _store_file(path: str, content: bytes | str) -> _StoreFile:
    if not path.endswith(constants.ENTRY_SUFFIX):
        return _StoreFile(None, (Problem(path, 0, "", f"store entries end in {constants.ENTRY_SUFFIX}; "
                                                       f"rename to {path.rsplit('.', 1)[0]}{constants.ENTRY_SUFFIX}",
                                                       errors.FILE_NAME),))
    try:
        doc = documents.parse(content, path)
    except documents.ParseFailed as e:
        return _StoreFile(None, (e.problem,))
    problems = validation.store_problems(doc)
    if problems:
        return _StoreFile(None, tuple(problems), doc)
    return _StoreFile(validation.Entry(models.Store.from_data(doc.data), doc), ())


def _with_cross_rules(fleet: Fleet) -> Fleet:
    entries = [fleet.stores[p].entry for p in sorted(fleet.stores)]
    cross = validation.fleet_problems([e for e in entries if e], fleet.clusters, fleet.plans)
    for store_file in fleet.stores.values():
        if store_file.doc is not None and fleet.clusters:
            problem = validation.unknown_cluster(store_file.doc, fleet.clusters)
            if problem:
                cross.append(problem)
    cross.extend(_unreleased(fleet, [e for e in entries if e]))
    cross.extend(_unrestorable(fleet, [e for e in entries if e]))
    return replace(fleet, cross_problems=tuple(cross))


def _unreleased(fleet: Fleet, entries: list[validation.Entry]) -> list[Problem]:
    """A problem for each store that names a chart version its engine has no release of."""
    out = []
    for entry in entries:
        store = entry.store
        if store.chart_version and (store.engine, store.chart_version) not in fleet.releases:
            known = ", ".join(fleet.released(store.engine)) or "none yet"
            out.append(Problem(entry.doc.path, entry.doc.line_of(("chartVersion",)), "chartVersion",
                               f"{store.engine} has no release {store.chart_version!r} in "
                               f"{constants.RELEASES_DIR}/{store.engine}/ (released: {known}; `storeops release "
                               f"{store.engine}` makes one)", errors.RELEASE))
    return out


def _unrestorable(fleet: Fleet, entries: list[validation.Entry]) -> list[Problem]:
    """A problem for each store restored from a backup (``restoreFrom``) on a cluster without backups."""
    out = []
    for entry in entries:
        store = entry.store
        held = fleet.clusters.get(store.cluster)
        cluster = held[0] if held else None
        if store.restore_from and cluster is not None and cluster.backups is None:
            out.append(Problem(entry.doc.path, entry.doc.line_of(("restoreFrom",)), "restoreFrom",
                               f"cluster {store.cluster!r} keeps no backups (no backups in "
                               f"{cluster.source}): there is nothing to restore from", errors.BACKUP))
    return out


def _version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    """Sorts versions as SemVer does (numbers numerically; a pre-release before its release)."""
    core, _, pre = version.partition("-")
    return tuple(int(n) for n in core.split(".") if n.isdigit()), 0 if pre else 1, pre


def chart_inputs() -> tuple[str, ...]:
    """The charts' values files the generator reads (for their default images)."""
    return tuple(rendering.chart_values_path(engine) for engine in validation.engines())


def is_input(path: str) -> bool:
    """Whether a repo-relative path is a store entry, a cluster profile, the plans file or a chart's values
    (a working chart's or a release's)."""
    if path == constants.PLANS_FILE or path in chart_inputs() or releases.of_values_path(path, validation.engines()):
        return True
    folder, _, name = path.partition("/")
    return (folder in (constants.STORES_DIR, constants.CLUSTERS_DIR) and "/" not in name
            and not name.startswith(constants.IGNORED_PREFIXES)
            and name.endswith((constants.ENTRY_SUFFIX, ".yml")))


def build(files: Mapping[str, bytes | str]) -> Fleet:
    """Parse and check every input; ``files`` maps repo-relative paths to contents."""
    base: list[Problem] = []
    plans: dict[str, models.Plan] = {}
    clusters: dict[str, tuple[models.Cluster, documents.Document]] = {}
    stores: dict[str, _StoreFile] = {}

    if constants.PLANS_FILE not in files:
        base.append(Problem(constants.PLANS_FILE, 0, "", "is missing; it defines the plans stores use", errors.MISSING))
    else:
        try:
            doc = documents.parse(files[constants.PLANS_FILE], constants.PLANS_FILE)
        except documents.ParseFailed as e:
            base.append(e.problem)
        else:
            found = validation.plans_problems(doc)
            base.extend(found)
            if not found:
                plans = {name: models.Plan.from_data(name, data) for name, data in doc.data["plans"].items()}

    for path in sorted(files):
        folder = path.split("/", 1)[0]
        if folder == constants.CLUSTERS_DIR and is_input(path):
            if not path.endswith(constants.ENTRY_SUFFIX):
                base.append(Problem(path, 0, "", f"cluster profiles end in {constants.ENTRY_SUFFIX}", errors.FILE_NAME))
                continue
            try:
                doc = documents.parse(files[path], path)
            except documents.ParseFailed as e:
                base.append(e.problem)
                continue
            found = validation.cluster_problems(doc)
            base.extend(found)
            if not found:
                cluster = models.Cluster.from_data(doc.data)
                clusters[cluster.name] = (cluster, doc)
        elif folder == constants.STORES_DIR and is_input(path):
            stores[path] = _store_file(path, files[path])

    charts, chart_problems = _charts(files)
    base.extend(_chart_problems(clusters, charts, chart_problems))
    released, release_problems = _releases(files)
    base.extend(release_problems)
    return _with_cross_rules(Fleet(stores=stores, clusters=clusters, plans=plans, charts=charts, releases=released,
                                   base_problems=tuple(base)))


def _releases(files: Mapping[str, bytes | str]) -> tuple[dict[tuple[str, str], dict[str, images.Image]],
                                                         list[Problem]]:
    """The default images of every released chart whose values are in ``files``."""
    out: dict[tuple[str, str], dict[str, images.Image]] = {}
    problems: list[Problem] = []
    for path in sorted(files):
        found = releases.of_values_path(path, validation.engines())
        if found is None:
            continue
        try:
            doc = documents.parse(files[path], path)
        except documents.ParseFailed as e:
            problems.append(e.problem)
            continue
        out[found] = images.chart_images(doc.data)
    return out, problems


def _charts(files: Mapping[str, bytes | str]) -> tuple[dict[str, dict[str, images.Image]], dict[str, Problem]]:
    """The default images of each engine whose chart values are in ``files``, and why any could not be read."""
    charts: dict[str, dict[str, images.Image]] = {}
    problems: dict[str, Problem] = {}
    for engine in validation.engines():
        path = rendering.chart_values_path(engine)
        if path not in files:
            continue
        try:
            doc = documents.parse(files[path], path)
        except documents.ParseFailed as e:
            problems[engine] = e.problem
            continue
        charts[engine] = images.chart_images(doc.data)
    return charts, problems


def _chart_problems(clusters: Mapping[str, tuple[models.Cluster, documents.Document]],
                    charts: Mapping[str, dict[str, images.Image]], unreadable: Mapping[str, Problem]) -> list[Problem]:
    """A problem for each profile whose registry mirror needs a chart default image that is not known.

    Charts are read only for their images; a chart nobody needs them from may be anything (Helm judges it).
    """
    out: list[Problem] = []
    needed: set[str] = set()
    for name in sorted(clusters):
        cluster, doc = clusters[name]
        for engine in validation.engines():
            missing = [c for c in images.needs_chart(cluster.images, engine) if c not in charts.get(engine, {})]
            if not missing:
                continue
            needed.add(engine)
            path = rendering.chart_values_path(engine)
            why = ("cannot be read" if engine in unreadable else "is not there" if engine not in charts
                   else f"sets no {', '.join(missing)} image")
            out.append(Problem(doc.path, doc.line_of(("images", "registry")), "images.registry",
                               f"the mirror needs the {engine} chart's default images ({', '.join(missing)}), "
                               f"but {path} {why}", errors.MISSING))
    out.extend(unreadable[engine] for engine in sorted(needed & set(unreadable)))
    return out


#: Fields an existing store keeps for life: another engine or cluster is another store, and Argo CD
#: would delete the old one's namespace, volumes and data to get there.
IMMUTABLE_FIELDS = ("engine", "cluster")


def immutable_changes(before: Fleet, after: Fleet) -> list[Problem]:
    """A problem for each store in both fleets whose engine or cluster differs between them, whose volumes
    would shrink (its plan, or that plan's sizes), or grow on a cluster whose StorageClass cannot expand
    them, or whose ``adminPasswordRotation`` went down."""
    out: list[Problem] = []
    for path, new in after.stores.items():
        old = before.stores.get(path)
        if old is None or old.entry is None or new.entry is None:
            continue
        for name in IMMUTABLE_FIELDS:
            was, now = getattr(old.entry.store, name), getattr(new.entry.store, name)
            if was != now:
                out.append(Problem(path, new.entry.doc.line_of((name,)), name,
                                   f"cannot change from {was!r} to {now!r}: Argo CD would delete the store's "
                                   f"namespace and its data; request a new store and delete this one",
                                   errors.IMMUTABLE))
        line, was_plan, plan = new.entry.doc.line_of(("plan",)), before.plans.get(old.entry.store.plan), \
            after.plans.get(new.entry.store.plan)
        out.extend(_shrinking(path, line, was_plan, plan))
        profile = after.clusters.get(new.entry.store.cluster)
        if profile is not None and old.entry.store.cluster == new.entry.store.cluster:
            out.extend(_growing(path, line, new.entry.store.id, was_plan, plan, profile[0]))
        reference = new.entry.store.restore_from
        if reference and reference != old.entry.store.restore_from \
                and not _own_pre_upgrade(reference, new.entry.store.id):
            out.append(Problem(path, new.entry.doc.line_of(("restoreFrom",)), "restoreFrom",
                               "is set only when a store is requested (or, by a rollback, to one of the store's "
                               "own pre-upgrade backups): a store that exists keeps its data; restore the backup "
                               "into a new store (storeops restore ID --from BACKUP --to NEW)", errors.IMMUTABLE))
        was_rotation, rotation = old.entry.store.password_rotation, new.entry.store.password_rotation
        if rotation < was_rotation:
            out.append(Problem(path, new.entry.doc.line_of(("adminPasswordRotation",)), "adminPasswordRotation",
                               f"cannot go down from {was_rotation} to {rotation}: it counts the password changes "
                               f"made; raise it by one to change the password again", errors.IMMUTABLE))
    return sorted(out)


def _own_pre_upgrade(reference: str, store_id: str) -> bool:
    """Whether ``reference`` is one of ``store_id``'s own pre-upgrade backups (what a rollback restores)."""
    try:
        store, backup = backups.parse_reference(reference)
    except ValueError:
        return False
    return store == store_id and backup.endswith("-pre-upgrade")


def _shrinking(path: str, line: int, was: models.Plan | None, now: models.Plan | None) -> list[Problem]:
    """A problem when the store's volumes would get smaller (another plan, or its plan changed)."""
    if was is None or now is None:
        return []
    smaller = [f"{name} {before} -> {after}" for name, before, after in _volume_changes(was, now)
               if models.memory_bytes(after) < models.memory_bytes(before)]
    if not smaller:
        return []
    change = f"plan {was.name!r} -> {now.name!r}" if was.name != now.name else f"plan {now.name!r} changed"
    return [Problem(path, line, "plan", f"{change} would shrink the store's volumes ({', '.join(smaller)}): "
                                        f"Kubernetes cannot make a volume smaller; keep the plan or a larger one, "
                                        f"or move the data to a new store", errors.IMMUTABLE)]


def _volume_changes(was: models.Plan, now: models.Plan) -> list[tuple[str, str, str]]:
    """``(volume, size before, size after)`` of each store volume whose size differs between the plans."""
    return [(name, before, after) for name, before, after in (
        ("database", was.database_volume, now.database_volume), ("content", was.content_volume, now.content_volume))
        if models.memory_bytes(after) != models.memory_bytes(before)]


def _growing(path: str, line: int, store_id: str, was: models.Plan | None, now: models.Plan | None,
             cluster: models.Cluster) -> list[Problem]:
    """A problem when the store's volumes would grow on a cluster whose StorageClass cannot expand a volume:
    Kubernetes would refuse the claims' new size and every sync of the store would fail."""
    if was is None or now is None or cluster.volume_expansion:
        return []
    bigger = [f"{name} {before} -> {after}" for name, before, after in _volume_changes(was, now)
              if models.memory_bytes(after) > models.memory_bytes(before)]
    if not bigger:
        return []
    change = f"plan {was.name!r} -> {now.name!r}" if was.name != now.name else f"plan {now.name!r} changed"
    storage_class = repr(cluster.storage_class) if cluster.storage_class else "the cluster's default"
    return [Problem(path, line, "plan", f"{change} would grow store {store_id!r}'s volumes ({', '.join(bigger)}), "
                                        f"but cluster {cluster.name!r} cannot grow a volume in place: its StorageClass "
                                        f"({storage_class}) does not allow volume expansion ({cluster.source} has no "
                                        f"allowVolumeExpansion: true), so Kubernetes would refuse the claims' new "
                                        f"size; keep the plan, or enable expansion on the StorageClass and say so in "
                                        f"the cluster profile", errors.VOLUME_GROWTH)]


def callback_problems(fleet: Fleet, paths: Iterable[str] | None = None) -> list[Problem]:
    """Callback URLs (of the entries at ``paths``, or all) that point inside the platform.

    Checked on what a change brings (:func:`change_problems`) rather than on the whole fleet: an entry
    already in Git from before the rule keeps publishing, without its callback (see ``rendering``), and
    ``storeops validate`` lists it as a warning until it is changed.
    """
    out = []
    for path in sorted(fleet.stores) if paths is None else paths:
        held = fleet.stores.get(path)
        url = held.entry.store.callback_url if held is not None and held.entry is not None else None
        if url and (problem := destinations.url_problem(url)):
            assert held is not None and held.entry is not None
            out.append(Problem(path, held.entry.doc.line_of(("callbackUrl",)), "callbackUrl", problem,
                               errors.CALLBACK_URL))
    return out


def change_problems(before: Fleet, after: Fleet) -> list[Problem]:
    """What a proposed change (``before`` -> ``after``) adds that is wrong: new problems, immutable fields,
    and callback URLs it sets or changes that point inside the platform."""
    known = set(before.problems)
    changed = [path for path, held in after.stores.items() if held.entry is not None and held.entry.store.callback_url
               and _callback_of(before, path) != held.entry.store.callback_url]
    return sorted({*(p for p in after.problems if p not in known), *immutable_changes(before, after),
                   *callback_problems(after, changed)})


def _callback_of(fleet: Fleet, path: str) -> str | None:
    held = fleet.stores.get(path)
    return held.entry.store.callback_url if held is not None and held.entry is not None else None


def reviewed_clusters(before: Fleet, after: Fleet, path: str) -> list[str]:
    """Clusters with ``review: true`` that a change of the store file ``path`` touches, as source or target.

    The source is the entry in ``before`` (a delete or a move leaves it), the target the one in ``after``.
    """
    names: set[str] = set()
    for side in (before, after):
        held = side.stores.get(path)
        cluster = held.entry.store.cluster if held is not None and held.entry is not None else None
        profile = side.clusters.get(cluster) if cluster else None
        if profile is not None and profile[0].review:
            names.add(profile[0].name)
    return sorted(names)


def check_removals(existing: set[str], remaining: set[str], *, share: float, allow: bool) -> None:
    """Refuse a run that would remove an outsized part of the fleet (or all of it)."""
    removed = sorted(existing - remaining)
    if allow or not removed:
        return
    limit = max(1, int(share * len(existing)))
    if not remaining or len(removed) > limit:
        raise MassDeleteRefused(removed, len(existing), limit)
