"""Waves of a rollout: which stores move to a chart version, and in what order. Pure.

A rollout moves the stores of one engine (optionally of one cluster) to a released chart version: a
canary wave first (named stores, or the first ``count`` by id), then the rest in batches, by id.
Stores already pinned to the version are left out.

A rollout that reaches a cluster with ``review: true`` is reviewed once, as a plan: the file
``rollouts/<id>.yaml`` (:func:`plan_document`) on a branch of its own, in one pull request listing the
waves. Once it is merged the waves proceed without a pull request each; the writer lets a rollout's
change onto such a cluster only while that file is in Git and names the store and the version
(:func:`approves`), and the merged file's waves (reviewers may edit them) are the ones that run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator import constants, errors, fleet
from generator.errors import Problem

#: Where reviewed rollout plans are kept in the repository.
PLANS_DIR = "rollouts"


@dataclass(frozen=True)
class Plan:
    waves: tuple[tuple[str, ...], ...]
    #: Stores of the selection already at the version (nothing to do for them).
    already: tuple[str, ...]
    #: Clusters of the moving stores whose profile says ``review: true``: the plan is reviewed first.
    reviewed: tuple[str, ...] = ()

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
    moved = set(first) | set(rest)
    reviewed = tuple(sorted({s.cluster for s in selected if s.id in moved and loaded.clusters[s.cluster][0].review}))
    return Plan(tuple(waves), already, reviewed), []


def plan_path(rollout_id: str) -> str:
    return f"{PLANS_DIR}/{rollout_id}{constants.ENTRY_SUFFIX}"


def plan_document(*, rollout_id: str, engine: str, version: str, cluster: str | None,
                  waves: list[list[str]], by: str) -> str:
    """The reviewed plan of a rollout, as its pull request adds it."""
    head = (f"# Rollout {rollout_id}: merging this file lets storeops move these {engine} stores to chart\n"
            f"# {version}, wave by wave, each after the one before is ready, without a pull request each.\n"
            f"# Edit the waves here before merging to change them; close the pull request to call it off.\n")
    body = {"id": rollout_id, "engine": engine, "version": version, **({"cluster": cluster} if cluster else {}),
            "by": by, "waves": [list(w) for w in waves]}
    return head + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def read_plan_document(text: str, *, rollout_id: str) -> dict[str, Any]:
    """A merged plan file: its engine, version and waves; ValueError naming what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{plan_path(rollout_id)} is not YAML: {e}") from e
    if not isinstance(data, dict) or data.get("id") != rollout_id:
        raise ValueError(f"{plan_path(rollout_id)} is not the plan of rollout {rollout_id}")
    waves = data.get("waves")
    if not isinstance(waves, list) or not waves or not all(
            isinstance(w, list) and w and all(isinstance(s, str) for s in w) for w in waves):
        raise ValueError(f"{plan_path(rollout_id)}: waves must be a list of non-empty lists of store ids")
    stores = [s for w in waves for s in w]
    if len(stores) != len(set(stores)):
        raise ValueError(f"{plan_path(rollout_id)}: a store is in more than one wave")
    for name in ("engine", "version"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"{plan_path(rollout_id)}: {name} is missing")
    return data


def approves(root: Path, rollout_id: str, store_id: str, version: str | None) -> bool:
    """Whether the reviewed plan of ``rollout_id`` in the work tree ``root`` moves ``store_id`` to ``version``."""
    path = root / plan_path(rollout_id)
    if not rollout_id or "/" in rollout_id or not path.is_file():
        return False
    try:
        data = read_plan_document(path.read_text(), rollout_id=rollout_id)
    except ValueError:
        return False
    return data["version"] == version and any(store_id in wave for wave in data["waves"])
