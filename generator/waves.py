"""Waves of a rollout: which stores move to a chart version, and in what order. Pure.

A rollout moves the stores of one engine (optionally of one cluster) to a released chart version: a
canary wave first (named stores, or the first ``count`` by id), then the rest in batches, by id.
Stores already pinned to the version are left out; so are stores of clusters that need review
(a rollout commits directly; one reviewed pull request listing the waves is for later).
"""

from __future__ import annotations

from dataclasses import dataclass

from generator import errors, fleet
from generator.errors import Problem


@dataclass(frozen=True)
class Plan:
    waves: tuple[tuple[str, ...], ...]
    #: Stores of the selection already at the version (nothing to do for them).
    already: tuple[str, ...]

    @property
    def stores(self) -> tuple[str, ...]:
        return tuple(s for wave in self.waves for s in wave)


def _problem(field: str, message: str) -> Problem:
    return Problem("request", 0, field, message, errors.REQUEST)


def plan(loaded: fleet.Fleet, *, engine: str, version: str, cluster: str | None = None,
         canary: tuple[str, ...] | int = 1, batch: int = 1) -> tuple[Plan | None, list[Problem]]:
    """The waves that move ``engine``'s stores (of ``cluster``) to ``version``, or the problems that stop it."""
    problems: list[Problem] = []
    if (engine, version) not in loaded.releases:
        known = ", ".join(loaded.released(engine)) or "none yet"
        problems.append(_problem("version", f"{engine} has no release {version!r} (released: {known})"))
    if cluster is not None and cluster not in loaded.clusters:
        problems.append(_problem("cluster", f"no cluster {cluster!r} (known: {', '.join(sorted(loaded.clusters))})"))
    if batch < 1:
        problems.append(_problem("batch", "must be at least 1"))
    if isinstance(canary, int) and canary < 1:
        problems.append(_problem("canary", "must name stores, or be a count of at least 1"))
    if problems:
        return None, problems
    selected = sorted((held.entry.store for held in loaded.stores.values() if held.entry is not None
                       and held.entry.store.engine == engine and cluster in (None, held.entry.store.cluster)),
                      key=lambda s: s.id)
    reviewed = sorted({s.cluster for s in selected if loaded.clusters[s.cluster][0].review})
    if reviewed:
        problems.append(_problem("cluster", f"{', '.join(reviewed)} need{'s' if len(reviewed) == 1 else ''} review "
                                            f"for store changes: rollouts there are not supported yet; name "
                                            f"another cluster"))
    already = tuple(s.id for s in selected if s.chart_version == version)
    moving = [s.id for s in selected if s.chart_version != version]
    if isinstance(canary, int):
        first = moving[:canary]
    else:
        unknown = [s for s in canary if s not in moving]
        if unknown:
            problems.append(_problem("canary", f"{', '.join(unknown)}: not among the {engine} stores"
                                               f"{f' of cluster {cluster}' if cluster else ''} to move to {version} "
                                               f"({', '.join(moving) or 'none'})"))
        first = list(dict.fromkeys(canary))
    if not moving:
        there = f" (already there: {', '.join(already)})" if already else ""
        of = f" of cluster {cluster}" if cluster else ""
        problems.append(_problem("engine", f"no {engine} store{of} to move to {version}{there}"))
    if problems:
        return None, problems
    rest = [s for s in moving if s not in first]
    waves = [tuple(first), *(tuple(rest[i:i + batch]) for i in range(0, len(rest), batch))]
    return Plan(tuple(waves), already), []
