"""Rollouts: move the stores of an engine to a released chart version in waves, each after the last is ready.

A rollout is planned once (``generator.waves``: a canary wave, then batches) and kept in the service's
state database, so a restart picks it up where it was. Each wave is a set of ordinary intake requests
(``chartVersion`` set on each store's entry, with idempotency keys of the rollout, so a wave queued
twice is queued once), committed by the writer like any other change. The next wave is queued only
once every store of this one is ``ready`` at the commit that moved it, as the status reader reports;
the first ``failed`` or ``degraded`` store of the wave (a transition after the wave was queued), a
request the writer rejected, or a wave not ready within the timeout halts the rollout with a report:
the wave, the store and its message, the stores moved and the stores left untouched.

A rollout that reaches a cluster with ``review: true`` starts in ``review``: its plan
(``rollouts/<id>.yaml``, ``generator.waves``) goes into one pull request listing the waves. Merged, the
rollout runs the waves of the merged file (reviewers may have edited them), each without a pull request
of its own; closed without merging, it halts as ``rejected``. The review's branch is deleted either way.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from kubernetes.client.exceptions import ApiException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from generator import entries, errors, publishing, waves
from generator.errors import GitError, Problem
from webhook import access, backups, state
from webhook.errors import Conflict, Forbidden, Invalid, NotFound, NotReady, Rejected
from webhook.intake import queueing
from webhook.intake.admission import Caller, Intake
from webhook.repository import Repository
from webhook.types import CLOSED, MERGED, Review, StatusView

__all__ = ["DONE", "HALTED", "ROUTES", "RUNNING", "Rollout", "Rollouts", "Runner", "parse_start"]

log = logging.getLogger(__name__)

RUNNING = "running"
DONE = "done"
HALTED = "halted"
#: Waiting for its plan's pull request (a cluster with ``review: true``).
REVIEW = "review"

#: Store states that halt a rollout (the status reader's words).
FAILING = ("failed", "degraded")
READY = "ready"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts (state, seq);
"""


@dataclass(frozen=True)
class Rollout:
    """One rollout and where it stands; kept whole (as JSON) in the state database."""

    id: str
    engine: str
    version: str
    cluster: str | None
    waves: list[list[str]]
    timeout: float
    by: str
    created: float
    state: str = RUNNING
    #: The wave being worked (0-based); ``len(waves)`` once done.
    wave: int = 0
    #: The current wave's request per store ('' for a store that was already at the version).
    requests: dict[str, str] = field(default_factory=dict)
    queued_at: float | None = None
    #: The commit that moved each store, for every store moved so far.
    commits: dict[str, str] = field(default_factory=dict)
    #: Each finished wave: its stores and when all of them were ready.
    finished: list[dict[str, Any]] = field(default_factory=list)
    #: Why the rollout halted (or what it did, once done).
    report: dict[str, Any] | None = None
    updated: float = 0.0
    #: The pull request of its plan, on a cluster with ``review: true``: url, branch, head.
    review: dict[str, str] | None = None
    #: The pre-upgrade backup Job of each store moved so far whose cluster keeps backups.
    backups: dict[str, str] = field(default_factory=dict)
    #: When the current wave's backups were started.
    backups_at: float | None = None

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["waves"] = [{"wave": i + 1, "stores": stores,
                         "state": "done" if i < self.wave else (self.state if i == self.wave else "waiting")}
                        for i, stores in enumerate(self.waves)]
        out["moved"], out["untouched"] = self.moved(), self.untouched()
        return out

    def moved(self) -> list[str]:
        """Stores the rollout asked to move: the finished waves, and those of the current wave it queued."""
        current = self.waves[self.wave] if self.wave < len(self.waves) else []
        return [s for wave in self.waves[:self.wave] for s in wave] + [s for s in current if s in self.requests]

    def untouched(self) -> list[str]:
        """Stores the rollout has not asked to move: later waves, and those of the current wave not queued."""
        current = self.waves[self.wave] if self.wave < len(self.waves) else []
        return [s for s in current if s not in self.requests] + \
            [s for wave in self.waves[self.wave + 1:] for s in wave]


class Rollouts:
    """The rollouts, in the service's state database (``STOREOPS_STATE_DIR/service.sqlite3``, or PostgreSQL)."""

    def __init__(self, path: state.Location) -> None:
        self._db = state.connect(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, rollout: Rollout) -> Rollout:
        rollout = replace(rollout, updated=time.time())
        self._db.execute("INSERT INTO rollouts (id, state, doc, created, updated) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc, "
                         "updated = excluded.updated",
                         (rollout.id, rollout.state, json.dumps(asdict(rollout), sort_keys=True), rollout.created,
                          rollout.updated))
        return rollout

    def get(self, rollout_id: str) -> Rollout | None:
        found = self._select("WHERE id = ?", (rollout_id,))
        return found[0] if found else None

    def running(self) -> list[Rollout]:
        return self._select("WHERE state = ? ORDER BY seq", (RUNNING,))

    def in_review(self) -> list[Rollout]:
        return self._select("WHERE state = ? ORDER BY seq", (REVIEW,))

    def recent(self, limit: int = 100) -> list[Rollout]:
        return self._select("ORDER BY seq DESC LIMIT ?", (limit,))

    def _select(self, where: str, args: tuple[object, ...]) -> list[Rollout]:
        rows = self._db.execute(f"SELECT doc FROM rollouts {where}", args).rows
        return [Rollout(**json.loads(row[0])) for row in rows]


def _since(view: dict[str, object]) -> float:
    raw = str(view.get("since") or "")
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass
class Runner:
    """Starts rollouts and moves them on, one step per poll (``run``), from the queue and the status reader."""

    rollouts: Rollouts
    intake: Intake
    #: The status reader, when one runs: rollouts wait for it to say each wave is ready.
    status: StatusView | None
    poll: float
    timeout: float
    #: Tells the writer there is work (called on the event loop).
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    #: Where plans of rollouts on reviewed clusters go for review (None: such rollouts are refused).
    repository: Repository | None = None
    #: Seconds between asking the review backend about plans in review.
    review_poll: float = 60.0
    _review_asked: float = field(default=0.0, init=False)

    # --- starting ---------------------------------------------------------------------------------

    def start(self, *, engine: str, version: str, cluster: str | None, canary: tuple[str, ...] | int, batch: int,
              timeout: float | None, by: str) -> Rollout:
        """Plan and record a rollout; its first wave is queued on the next step. 422/409 when it cannot run."""
        if self.status is None:
            raise NotReady("a rollout waits for stores to be ready, which the status reader tells: it is off "
                           "(STOREOPS_KUBECONFIG)")
        running = [*self.rollouts.running(), *self.rollouts.in_review()]
        # One rollout at a time per engine and cluster: a second would plan around the first one's moves.
        for other in running:
            if other.engine == engine and (None in (other.cluster, cluster) or other.cluster == cluster):
                where = f" of cluster {other.cluster}" if other.cluster else ""
                raise Conflict(f"rollout {other.id} is still moving the {engine} stores{where} to {other.version}: "
                               f"wait for it to finish or halt")
        planned, problems = waves.plan(self.intake.snapshot().overlay, engine=engine, version=version,
                                       cluster=cluster, canary=canary, batch=batch)
        if planned is None:
            raise Invalid(f"cannot roll out {engine} {version}: {problems[0].message}", problems)
        busy = {s: r.id for r in running for wave in r.waves for s in wave}
        overlap = sorted(set(planned.stores) & set(busy))
        if overlap:
            raise Conflict(f"rollout {busy[overlap[0]]} is still moving {', '.join(overlap[:10])}: wait for it to "
                           f"finish or halt")
        rollout = Rollout(id=uuid.uuid4().hex[:12], engine=engine, version=version, cluster=cluster,
                          waves=[list(w) for w in planned.waves], timeout=timeout or self.timeout, by=by,
                          created=self.clock())
        log.info("rollout %s of %s %s by %s: %d waves (%s)", rollout.id, engine, version, by, len(rollout.waves),
                 "; ".join(", ".join(w) for w in rollout.waves)[:500])
        if planned.reviewed:
            rollout = self._open_review(rollout, planned.reviewed)
        return self.rollouts.save(rollout)

    def _open_review(self, rollout: Rollout, clusters: tuple[str, ...]) -> Rollout:
        """Put the rollout's plan in a pull request of its own; the rollout waits for it."""
        if self.repository is None:
            raise Invalid(f"{', '.join(clusters)} need review, and no review backend is set up",
                          [Problem("request", 0, "cluster", "needs review", errors.REQUEST)])
        branch = f"storeops/rollout-{rollout.id}"
        path = waves.plan_path(rollout.id)
        text = waves.plan_document(rollout_id=rollout.id, engine=rollout.engine, version=rollout.version,
                                   cluster=rollout.cluster, waves=rollout.waves, by=rollout.by)

        def edit(root: Path) -> list[str]:
            (root / waves.PLANS_DIR).mkdir(exist_ok=True)
            (root / path).write_text(text)
            return [path]

        pushed = self.repository.push_branch(branch, edit=edit, render=False,
                                             message=f"Rollout {rollout.id}: {rollout.engine} chart {rollout.version} "
                                                     f"in {len(rollout.waves)} waves (plan for review)")
        listing = "\n".join(f"{i + 1}. {', '.join(w)}" for i, w in enumerate(rollout.waves))
        count = sum(len(w) for w in rollout.waves)
        review = self.repository.open_pull(
            branch, title=f"Rollout {rollout.id}: {rollout.engine} chart {rollout.version} ({count} stores, "
                          f"{len(rollout.waves)} waves)",
            body=f"Clusters needing review: {', '.join(clusters)}. Asked for by {rollout.by}.\n\n"
                 f"Waves, each committed only once every store of the one before is ready:\n\n{listing}\n\n"
                 f"Merge to run them (edit `{path}` first to change the waves); close to call the rollout off.")
        log.info("rollout %s: plan in review at %s", rollout.id, review.url)
        return replace(rollout, state=REVIEW, review={"url": review.url, "branch": branch,
                                                      "head": pushed.sha or review.head})

    def review_step(self, rollout: Rollout) -> None:
        """Where a rollout in review stands: merged, it runs the merged plan's waves; closed, it halts."""
        assert self.repository is not None and rollout.review is not None
        review = Review(url=rollout.review["url"], branch=rollout.review["branch"], head=rollout.review["head"])
        outcome = self.repository.review_outcomes([review]).get(review.url)
        if outcome is None or outcome.state not in (MERGED, CLOSED):
            return
        if outcome.state == CLOSED:
            self._halt(rollout, store="", state="rejected",
                       message=f"the plan's review {review.url} was closed without merging")
        else:
            self._run_reviewed(rollout, outcome.merge_commit)
        try:
            self.repository.end_review(review)
        except (GitError, OSError) as e:
            log.warning("rollout %s: the review branch %s stays: %s", rollout.id, review.branch, e)

    def _run_reviewed(self, rollout: Rollout, merge_commit: str) -> None:
        assert self.repository is not None
        path = waves.plan_path(rollout.id)
        text = publishing.file_at(self.repository.git, f"origin/{self.repository.git.branch}", path)
        try:
            if text is None:
                raise ValueError(f"{path} is not on {self.repository.git.branch} after the merge")
            merged = waves.read_plan_document(text, rollout_id=rollout.id)
            if (merged["engine"], merged["version"]) != (rollout.engine, rollout.version):
                raise ValueError(f"{path} moves {merged['engine']} to {merged['version']}, not {rollout.engine} to "
                                 f"{rollout.version}")
            overlay = self.intake.snapshot().overlay
            for store in (s for wave in merged["waves"] for s in wave):
                held = overlay.stores.get(entries.path_for(store))
                if held is None or held.entry is None or held.entry.store.engine != rollout.engine:
                    raise ValueError(f"{path}: {store} is not a {rollout.engine} store")
        except ValueError as e:
            self._halt(rollout, store="", state="rejected", message=f"the merged plan cannot run: {e}")
            return
        self.rollouts.save(replace(rollout, state=RUNNING, waves=[list(w) for w in merged["waves"]],
                                   review={**(rollout.review or {}), "merge_commit": merge_commit}))
        log.info("rollout %s: plan merged%s; %d waves to run", rollout.id,
                 f" at {merge_commit[:12]}" if merge_commit else "", len(merged["waves"]))

    # --- moving on --------------------------------------------------------------------------------

    async def run(self, *, stop: anyio.Event) -> None:
        """Step every running rollout each ``poll`` seconds until ``stop`` is set."""
        while not stop.is_set():
            if self.repository is not None and self.clock() - self._review_asked >= self.review_poll:
                self._review_asked = self.clock()
                for rollout in await anyio.to_thread.run_sync(self.rollouts.in_review):
                    try:
                        await anyio.to_thread.run_sync(functools.partial(self.review_step, rollout))
                    except Exception:
                        log.exception("rollout %s: asking about its plan's review failed", rollout.id)
            for rollout in await anyio.to_thread.run_sync(self.rollouts.running):
                try:
                    queued = await anyio.to_thread.run_sync(functools.partial(self.step, rollout))
                except Exception:
                    log.exception("rollout %s: step failed; trying again in %.1fs", rollout.id, self.poll)
                    continue
                if queued:
                    self.wake()
            with anyio.move_on_after(self.poll):
                await stop.wait()

    def step(self, rollout: Rollout) -> bool:
        """Move ``rollout`` on as far as it can go now; returns whether it queued requests (the writer has work)."""
        if rollout.state != RUNNING:
            return False
        if not rollout.requests:
            if not self._backed_up(rollout):
                return False
            self._queue(self.rollouts.get(rollout.id) or rollout)
            return True
        wave = rollout.waves[rollout.wave]
        commits: dict[str, str] = {}
        committed_at = 0.0
        for store, request_id in rollout.requests.items():
            if not request_id:
                continue
            request = self.intake.queue.get(request_id)
            if request is not None and request.status == queueing.REJECTED:
                problems = "; ".join(str(p) for p in request.problems) or "rejected"
                self._halt(rollout, store=store, state="rejected", message=f"the writer refused the move: {problems}")
                return False
            if request is None or request.status != queueing.COMMITTED or not request.commit_sha:
                return self._waited_too_long(rollout, [store], "its move is not committed yet")
            commits[store] = request.commit_sha
            committed_at = max(committed_at, request.updated)
        if set(commits) - set(rollout.commits):
            rollout = self.rollouts.save(replace(rollout, commits={**rollout.commits, **commits}))
        assert self.status is not None and rollout.queued_at is not None
        views = {store: self.status.store_status(store) or {} for store in wave}
        for store in wave:
            view = views[store]
            if view.get("status") in FAILING and _since(view) > rollout.queued_at:
                self._halt(rollout, store=store, state=str(view.get("status")), message=str(view.get("message") or ""))
                return False
        waiting = [s for s in wave if not self._ready(views[s], commits.get(s, ""), committed_at)]
        if waiting:
            return self._waited_too_long(rollout, waiting, "")
        finished = [*rollout.finished, {"wave": rollout.wave + 1, "stores": wave, "ready": self.clock(),
                                        "commits": sorted({commits[s] for s in wave if s in commits})}]
        following = rollout.wave + 1
        done = following == len(rollout.waves)
        rollout = replace(rollout, wave=following, requests={}, queued_at=None, finished=finished,
                          state=DONE if done else RUNNING,
                          report={"message": f"every store is at {rollout.engine} {rollout.version}"} if done else None)
        self.rollouts.save(rollout)
        log.info("rollout %s: wave %d of %d is ready (%s)%s", rollout.id, following, len(rollout.waves),
                 ", ".join(wave), "; done" if done else "")
        return False

    def _backed_up(self, rollout: Rollout) -> bool:
        """Whether every store of the current wave whose cluster keeps backups has its pre-upgrade backup; starts
        them (Jobs from each store's backup CronJob) on the first call, halts the rollout when one fails."""
        api = getattr(self.status, "api", None)
        snapshot = self.intake.snapshot()
        wanted = []
        for store in rollout.waves[rollout.wave]:
            held = snapshot.overlay.stores.get(entries.path_for(store))
            if held is None or held.entry is None or held.entry.store.chart_version == rollout.version:
                continue
            cluster = snapshot.git.clusters.get(held.entry.store.cluster)
            if cluster is not None and cluster[0].backups is not None:
                wanted.append(store)
        if not wanted:
            return True
        if api is None:
            self._halt(rollout, store=wanted[0], state="backup-failed",
                       message="its cluster keeps backups, and the cluster cannot be reached to take one")
            return False
        started = {}
        for store in (s for s in wanted if s not in rollout.backups):
            try:
                started[store] = backups.take(api, store, kind="pre-upgrade")
            except (NotReady, ApiException) as e:
                self._halt(replace(rollout, backups={**rollout.backups, **started}), store=store,
                           state="backup-failed", message=f"no pre-upgrade backup could be started: {e}")
                return False
        if started:
            self.rollouts.save(replace(rollout, backups={**rollout.backups, **started}, backups_at=self.clock()))
            log.info("rollout %s: pre-upgrade backups of wave %d started (%s)", rollout.id, rollout.wave + 1,
                     ", ".join(started))
            return False
        waiting = []
        for store in wanted:
            state, said = backups.job_state(api, store, rollout.backups[store])
            if state == "failed":
                self._halt(rollout, store=store, state="backup-failed",
                           message=f"its pre-upgrade backup ({rollout.backups[store]}) failed: {said}; nothing moved")
                return False
            if state != "done":
                waiting.append(store)
        if not waiting:
            return True
        if rollout.backups_at is not None and self.clock() - rollout.backups_at > rollout.timeout:
            self._halt(rollout, store=waiting[0], state="timeout",
                       message=f"pre-upgrade backups not done within {rollout.timeout:g}s; waiting: "
                               f"{', '.join(waiting)}")
        return False

    @staticmethod
    def _ready(view: dict[str, object], commit: str, committed_at: float) -> bool:
        """Ready at the commit that moved the store: the reader reports readiness for the store's latest change,
        so a ready report for that commit, or one made after the commit was marked (a later change), will do.
        A store whose entry already was at the version (no commit) only needs to be ready."""
        if view.get("status") != READY:
            return False
        return not commit or view.get("change") == commit or _since(view) > committed_at

    def _queue(self, rollout: Rollout) -> None:
        """Queue the current wave: one request per store, keyed by the rollout (a replay finds the same one)."""
        wave = rollout.waves[rollout.wave]
        requests: dict[str, str] = {}
        overlay = self.intake.snapshot().overlay
        client = f"rollout:{rollout.id}"
        for store in wave:
            key = f"{rollout.id}:{store}"
            held = overlay.stores.get(entries.path_for(store))
            # Not a store this rollout already queued (before a crash) and that is at the version for that reason.
            if self.intake.queue.by_idempotency_key(client=client, key=key) is None and held is not None \
                    and held.entry is not None and held.entry.store.chart_version == rollout.version:
                requests[store] = ""
                continue
            caller = Caller(client=client, source="rollout", idempotency_key=key,
                            scope=f"ROLLOUT {rollout.id}", planned=rollout.review is not None,
                            reason=f"rollout {rollout.id} wave {rollout.wave + 1}/{len(rollout.waves)}: "
                                   f"{rollout.engine} chart {rollout.version}")
            try:
                queued, _ = self.intake.update(store_id=store, patch={"chartVersion": rollout.version}, caller=caller,
                                               body=f"ROLLOUT {rollout.id} {store} {rollout.version}".encode())
            except Rejected as e:
                # Requests of this wave queued before it stay queued: they land as ordinary changes.
                self._halt(replace(rollout, requests=requests, queued_at=self.clock()), store=store, state="rejected",
                           message="; ".join([e.message, *(str(p) for p in e.problems)]))
                return
            requests[store] = queued.id
        self.rollouts.save(replace(rollout, requests=requests, queued_at=self.clock()))
        log.info("rollout %s: wave %d of %d queued (%s)", rollout.id, rollout.wave + 1, len(rollout.waves),
                 ", ".join(wave))

    def _waited_too_long(self, rollout: Rollout, waiting: list[str], why: str) -> bool:
        assert rollout.queued_at is not None
        if self.clock() - rollout.queued_at <= rollout.timeout:
            return False
        store = waiting[0]
        view = (self.status.store_status(store) if self.status is not None else None) or {}
        said = why or f"{view.get('status') or 'no status'}{': ' + str(view['message']) if view.get('message') else ''}"
        self._halt(rollout, store=store, state="timeout",
                   message=f"not ready within {rollout.timeout:g}s ({said}); waiting: {', '.join(waiting)}")
        return False

    def _halt(self, rollout: Rollout, *, store: str, state: str, message: str) -> None:
        report = {"wave": rollout.wave + 1, "store": store, "state": state, "message": message,
                  "moved": rollout.moved(), "untouched": rollout.untouched()}
        self.rollouts.save(replace(rollout, state=HALTED, report=report))
        log.warning("rollout %s halted at wave %d: %s %s: %s; untouched: %s", rollout.id, rollout.wave + 1, store,
                    state, message, ", ".join(rollout.untouched()) or "none")


# --- the API --------------------------------------------------------------------------------------

_FIELDS = {"engine", "version", "cluster", "canary", "batch", "timeout"}


def _runner(request: Request, call: access.Call) -> Runner:
    if call.caller.owner:
        raise Forbidden("a rollout moves many owners' stores: it needs an operator's token or sign-in")
    runner: Runner | None = getattr(request.app.state, "rollouts", None)
    if runner is None:
        raise NotReady("rollouts are not running yet")
    return runner


def _request_problem(field_name: str, message: str) -> Invalid:
    return Invalid(f"{field_name}: {message}", [Problem("request", 0, field_name, message, errors.REQUEST)])


def parse_start(data: Any) -> dict[str, Any]:
    """The arguments of :meth:`Runner.start` from a ``POST /v1/rollouts`` body; 422 naming what is wrong."""
    if not isinstance(data, dict):
        raise _request_problem("(top)", "expected {\"engine\": ..., \"version\": ..., \"cluster\": ..., "
                                        "\"canary\": [ids] or a count, \"batch\": n, \"timeout\": seconds}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise _request_problem(unknown[0], f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
    for name in ("engine", "version"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise _request_problem(name, "required: a string")
    cluster = data.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        raise _request_problem("cluster", "must be a cluster name")
    canary = data.get("canary", 1)
    if isinstance(canary, list) and canary and all(isinstance(s, str) for s in canary):
        canary = tuple(canary)
    elif isinstance(canary, bool) or not isinstance(canary, int):
        raise _request_problem("canary", "must be a list of store ids or a count")
    batch = data.get("batch", 1)
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise _request_problem("batch", "must be a whole number")
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise _request_problem("timeout", "must be a number of seconds above 0")
    return {"engine": data["engine"], "version": data["version"], "cluster": cluster or None, "canary": canary,
            "batch": batch, "timeout": float(timeout) if timeout is not None else None}


@access.endpoint(access.WRITE, media=("application/json",), body=True)
async def start_rollout(request: Request, call: access.Call) -> Response:
    """Start moving the stores of an engine (of a cluster) to a released chart version, in waves."""
    runner = _runner(request, call)
    asked = parse_start(access.parse_json(call.body))
    rollout = await anyio.to_thread.run_sync(functools.partial(runner.start, by=call.caller.client, **asked))
    return JSONResponse(rollout.view(), status_code=201, headers={"Location": f"/v1/rollouts/{rollout.id}"})


@access.endpoint(access.READ)
async def list_rollouts(request: Request, call: access.Call) -> Response:
    runner = _runner(request, call)
    found = await anyio.to_thread.run_sync(runner.rollouts.recent)
    return JSONResponse({"rollouts": [r.view() for r in found]})


@access.endpoint(access.READ)
async def get_rollout(request: Request, call: access.Call) -> Response:
    runner = _runner(request, call)
    rollout_id = request.path_params["rollout_id"]
    found = await anyio.to_thread.run_sync(functools.partial(runner.rollouts.get, rollout_id))
    if found is None:
        raise NotFound(f"no rollout {rollout_id!r}")
    view = found.view()
    if found.state == RUNNING and runner.status is not None and found.wave < len(found.waves):
        view["current"] = {store: runner.status.store_status(store) for store in found.waves[found.wave]}
    return JSONResponse(view)


ROUTES = [
    Route("/v1/rollouts", start_rollout, methods=["POST"]),
    Route("/v1/rollouts", list_rollouts, methods=["GET"]),
    Route("/v1/rollouts/{rollout_id}", get_rollout, methods=["GET"]),
]
