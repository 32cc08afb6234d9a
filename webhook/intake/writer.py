"""The writer: drains the queue into Git, everything pending in one commit and one push.

Each store file's desired state is a function of its request alone (the content the request
carried, or absent for a delete), so applying a request twice changes nothing the second time.
Requests are marked done only after the push succeeded; after a crash the ones already in Git are
applied again as no-ops and then marked, so each lands exactly once. An unreachable remote or a
failed push leaves the requests queued and the writer retries with exponential backoff.

A request that needs review waits ``pending-review`` on its own branch and pull request until the
review ends: merged, its requests are ``committed`` (at the merge commit when known) and the merge is
rendered; closed without merging, they are ``rejected`` and their store ids are free again. Either
way the branch is deleted. Beside the drain, the writer asks the review backend where every open
review stands every ``review_interval`` seconds (and once at start, so an end that came while the
service was down is found), and acts at once when a backend reports an end by itself (GitHub's
``pull_request`` event); only the changes to Git and the queue take turns with the drain.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import anyio
import anyio.from_thread
import anyio.lowlevel
import yaml

from generator import errors, fleet, planning, remotes, trees, waves
from generator.errors import InvalidInput, MassDeleteRefused, Problem, StoreopsError
from webhook.intake import queueing
from webhook.intake.admission import Intake
from webhook.metrics import Metrics
from webhook.repository import Repository
from webhook.types import CLOSED, MERGED, Review, ReviewOutcome

log = logging.getLogger(__name__)


@dataclass
class Outcomes:
    """What applying a batch did to each request (reset on every attempt publish makes)."""

    landed: list[str] = field(default_factory=list)
    rejected: dict[str, list[Problem]] = field(default_factory=dict)


def _planned(root: Path, request: queueing.Request, existing: bytes | None, desired: bytes | None) -> bool:
    """A rollout's move of a store on a reviewed cluster that its reviewed plan (``rollouts/<id>.yaml``, in
    Git) approves: the store's entry changes in ``chartVersion`` alone, to the plan's version."""
    if request.source != "rollout" or not request.client.startswith("rollout:") or existing is None or desired is None:
        return False
    before, after = yaml.safe_load(existing), yaml.safe_load(desired)
    if not isinstance(before, dict) or not isinstance(after, dict):
        return False
    version = after.pop("chartVersion", None)
    before.pop("chartVersion", None)
    return before == after and waves.approves(root, request.client.removeprefix("rollout:"), request.store_id,
                                              version)


def apply_requests(root: Path, requests: list[queueing.Request], outcomes: Outcomes, *, reviewed: bool) -> list[str]:
    """Write the desired store files of ``requests`` (in order) into the work tree at ``root``.

    A request that no longer fits what is in Git (someone took the id meanwhile) is rejected and
    leaves no trace; one whose file already holds its content (landed before a crash) is a no-op.
    Unless the work tree is a review branch (``reviewed``), a change that touches a cluster with
    ``review: true`` as Git has it now is rejected too: a profile may have turned to review after
    the request was queued, and nothing reaches such a cluster without review.
    """
    outcomes.landed.clear()
    outcomes.rejected.clear()
    files = trees.read_inputs(root)
    current = fleet.build(files)
    written: list[str] = []
    for request in requests:
        path = request.path
        existing = files.get(path)
        desired = request.content.encode() if request.content is not None else None
        if existing == desired:
            outcomes.landed.append(request.id)
            continue
        after = current.with_store(path, desired)
        if not reviewed and (clusters := fleet.reviewed_clusters(current, after, path)) \
                and not _planned(root, request, existing, desired):
            outcomes.rejected[request.id] = [Problem(path, 0, "cluster", f"{', '.join(clusters)} needs review for "
                                                     "store changes now; request the change again",
                                                     errors.NEEDS_REVIEW)]
            continue
        if desired is None:
            (root / path).unlink()
            del files[path]
            current = after
            written.append(path)
            outcomes.landed.append(request.id)
            continue
        # On a review branch a change may build on a store still waiting in another review.
        if request.action == queueing.UPDATE and existing is None and not reviewed:
            outcomes.rejected[request.id] = [Problem(path, 0, "id", f"{request.store_id!r} was removed from Git "
                                                                    "before this change landed", errors.GONE)]
            continue
        if request.action == queueing.CREATE and existing is not None:
            outcomes.rejected[request.id] = [Problem(path, 0, "id", f"{request.store_id!r} was taken in Git "
                                                                    "by another change before this request landed",
                                                     errors.ID_TAKEN)]
            continue
        new = fleet.change_problems(current, after)
        if new:
            outcomes.rejected[request.id] = new
            continue
        (root / path).write_bytes(desired)
        files[path] = desired
        current = after
        written.append(path)
        outcomes.landed.append(request.id)
    return written


class Ended(NamedTuple):
    """A review that ended, with the requests in it."""

    review: Review
    requests: list[queueing.Request]
    outcome: ReviewOutcome


class Writer:
    def __init__(self, *, repository: Repository, intake: Intake, metrics: Metrics,
                 batch_max: int, batch_window: float, retry_min: float, retry_max: float,
                 review_branch_prefix: str, refresh_interval: float = 30.0, review_interval: float = 60.0,
                 queue_poll: float | None = None) -> None:
        self.repository = repository
        self.git = repository.git
        self.intake = intake
        self.queue = intake.queue
        self.metrics = metrics
        self.batch_max = batch_max
        self.batch_window = batch_window
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.review_branch_prefix = review_branch_prefix
        self.refresh_interval = refresh_interval
        #: Seconds between asking the review backend where every open review stands.
        self.review_interval = review_interval
        #: Seconds between looks at the queue while idle, for requests other processes queued (they cannot wake
        #: this one); None: only when woken, and every ``refresh_interval``.
        self.queue_poll = queue_poll
        self.failing_since: float | None = None
        self.last_error = ""
        self._wake: anyio.Event | None = None
        #: The running loop and its thread, so a review end reported from another thread can wake it.
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread = 0
        #: Review ends a backend reported (by review URL), not yet acted on, and what wakes the review follower.
        self._told: dict[str, ReviewOutcome] = {}
        self._told_lock = threading.Lock()
        self._review_wake = anyio.Event()
        #: Held while Git and the queue are changed (a drain, a review's end): one change at a time.
        self._turn = anyio.Lock()

    def wake(self) -> None:
        """Tell the writer there is work (called from the event loop after a request is queued)."""
        if self._wake is not None:
            self._wake.set()

    # --- one pass (blocking; runs in a worker thread) ---------------------------------------------

    def recover(self) -> None:
        """Undo what a kill -9 can leave in the storeops-owned clone: stale locks, a half-made clone.

        Only the writer uses the clone, and this runs before its first pass, so no lock is live.
        """
        workdir = self.git.workdir
        dot_git = workdir / ".git"
        if not dot_git.is_dir():
            if workdir.exists():
                shutil.rmtree(workdir)
            return
        for lock in dot_git.rglob("*.lock"):
            log.warning("removing stale %s left by a crash", lock)
            lock.unlink(missing_ok=True)
        check = subprocess.run(["git", "-C", str(workdir), "rev-parse", "--verify", "--quiet", "HEAD"],
                               capture_output=True, check=False)
        if check.returncode != 0:
            log.warning("the work clone %s is broken; cloning afresh", workdir)
            shutil.rmtree(workdir)

    def refresh(self) -> None:
        """Read the remote's branch into the intake's view of Git."""
        files, sha = self.repository.read()
        self.intake.load_git(files=files, sha=sha)

    def drain_once(self) -> int:
        """Land up to ``batch_max`` pending requests; returns how many were handled."""
        batch = self.queue.pending(limit=self.batch_max)
        if not batch:
            return 0
        direct = [r for r in batch if not r.review]
        if direct:
            self._publish_direct(direct)
        for request in (r for r in batch if r.review):
            self._publish_review(request)
        return len(batch)

    def _publish_direct(self, batch: list[queueing.Request]) -> None:
        outcomes = Outcomes()
        ids = ", ".join(sorted({r.store_id for r in batch})[:20])
        started = time.monotonic()
        deletes = [r for r in batch if r.action == queueing.DELETE]
        try:
            reasons = sorted({r.override for r in deletes if r.override})
            extra = "".join(f"\nMass delete reason: {reason}" for reason in reasons)
            extra += "".join(f"\nStoreops-Requested-By: {who}" for who in sorted({r.requester for r in batch}))
            extra += "".join(f"\nStoreops-Reason: {r.store_id}: {r.override}" for r in batch
                             if r.override and r.action != queueing.DELETE)
            result, files = self.repository.publish(
                edit=lambda root: apply_requests(root, batch, outcomes, reviewed=False),
                message=f"Requests: {len(batch)} via storeops intake ({ids}){extra}",
                # The intake let these past the mass-delete limit with a stated reason, kept in the commit.
                allow_mass_delete=bool(deletes) and all(r.override for r in deletes))
        except MassDeleteRefused as e:
            # The intake caps queued deletions, but Git may have shrunk meanwhile: refuse the deletions.
            self.queue.finish(request_ids=[r.id for r in deletes], status=queueing.REJECTED,
                              problems=[Problem("stores", 0, "id", str(e))])
            raise
        self.metrics.observe_publish(seconds=time.monotonic() - started, pushed=result.committed,
                                     requests=len(batch))
        self.queue.finish(request_ids=outcomes.landed, status=queueing.COMMITTED, commit_sha=result.sha)
        for request_id, problems in outcomes.rejected.items():
            self.queue.finish(request_ids=[request_id], status=queueing.REJECTED, problems=problems)
        self.metrics.count("storeops_requests_landed_total", len(outcomes.landed))
        self.metrics.count("storeops_requests_rejected_late_total", len(outcomes.rejected))
        log.info("landed %d requests in %s (%d rejected, %d attempts)", len(outcomes.landed),
                 result.sha[:12], len(outcomes.rejected), result.attempts)
        self.intake.load_git(files=files, sha=result.sha)

    def _publish_review(self, request: queueing.Request) -> None:
        """One branch and one pull request per request that needs review."""
        branch = f"{self.review_branch_prefix}{request.id}"
        outcomes = Outcomes()
        result = self.repository.push_branch(
            branch, edit=lambda root: apply_requests(root, [request], outcomes, reviewed=True),
            message=f"Request: {request.id} ({request.action} {request.store_id})")
        self.metrics.observe_publish(seconds=0.0, pushed=result.committed, requests=1)
        if outcomes.rejected:
            # The branch stays behind until the next sweep of ended reviews' branches deletes it.
            self.queue.finish(request_ids=[request.id], status=queueing.REJECTED, review_branch=branch,
                              problems=outcomes.rejected[request.id])
            return
        review = self.repository.open_pull(
            branch, title=f"{request.action.capitalize()} store {request.store_id}",
            body=f"Requested through storeops intake (request {request.id}).\n\n"
                 f"Cluster {request.cluster} needs review for store changes.")
        self.queue.finish(request_ids=[request.id], status=queueing.PENDING_REVIEW, commit_sha=result.sha,
                          review_url=review.url, review_branch=branch)
        log.info("request %s for store %s is in review at %s", request.id, request.store_id, review.url)

    # --- the end of reviews -----------------------------------------------------------------------

    def note_reviewed(self, review: Review, outcome: ReviewOutcome) -> None:
        """``Repository.on_reviewed``, from any thread: a backend reported a review's end; act on it now.

        Only a hint kept in memory: were it lost, the next poll of the reviews finds the same end.
        """
        with self._told_lock:
            self._told[review.url] = outcome
        if threading.get_ident() == self._loop_thread:
            self._review_wake.set()
        elif self._token is not None:
            with contextlib.suppress(anyio.RunFinishedError):  # no loop left to wake
                anyio.from_thread.run_sync(self._review_wake.set, token=self._token)

    def review_ends(self, *, poll: bool) -> list[Ended]:
        """The reviews that ended: those a backend reported, and with ``poll`` those the backend says ended when
        asked about every other open review (blocking; calls the backend, so never in the writer's turn)."""
        with self._told_lock:
            told, self._told = self._told, {}
        waiting: dict[str, list[queueing.Request]] = {}
        for request in self.queue.in_review():
            if request.review_url:
                waiting.setdefault(request.review_url, []).append(request)
        reviews = {url: Review(url=url, branch=held[0].review_branch or f"{self.review_branch_prefix}{held[0].id}",
                               head=held[-1].commit_sha or "") for url, held in waiting.items()}
        outcomes = {url: outcome for url, outcome in told.items() if url in reviews}
        if poll:
            outcomes |= self.repository.review_outcomes([r for url, r in reviews.items() if url not in outcomes])
        return [Ended(reviews[url], waiting[url], outcome) for url, outcome in outcomes.items()
                if outcome.state in (MERGED, CLOSED)]

    def finish_reviews(self, ended: list[Ended]) -> None:
        """Record the ends of reviews, and bring the intake's view of Git and the queue up to date. A landed
        change is in that view before its requests stop holding the store id, so no request for the id slips
        in between (blocking; in the writer's turn)."""
        for review, requests, outcome in ended:
            ids = ", ".join(r.id for r in requests)
            if outcome.state == MERGED:
                self._render_merge(review, requests)
                self.refresh()
                self._commit_reviewed(requests, commit_sha=outcome.merge_commit or None)
                log.info("review %s was merged (%s): requests %s are committed", review.url,
                         outcome.merge_commit[:12] or "merge commit unknown", ids)
            elif self._landed_anyway(requests):
                # Closed, but its change is on the branch all the same (a squash or rebase by hand, the same
                # change pushed directly): the requests did land.
                self._commit_reviewed(requests, commit_sha=None)
                log.info("review %s was closed with its change already on %s: requests %s are committed",
                         review.url, self.git.branch, ids)
            else:
                message = f"the review pull request {review.url} was closed without merging"
                for request in requests:
                    self.queue.end_review(request_id=request.id, status=queueing.REJECTED, problems=[
                        Problem(request.path, 0, "review", message, queueing.REVIEW_CLOSED)])
                self.refresh()
                log.info("review %s was closed without merging: requests %s are rejected", review.url, ids)

    def delete_branches(self, ended: list[Ended], *, sweep: bool) -> None:
        """Delete the branches of ``ended`` reviews; with ``sweep`` also those of earlier ended reviews (and of
        requests refused on their branch) still on the remote, as of the last fetch (blocking)."""
        for review, _, _ in ended:
            try:
                self.repository.end_review(review)
            except (StoreopsError, OSError) as e:
                log.warning("review %s ended, but its branch %s stays until the next poll: %s", review.url,
                            review.branch, remotes.redact(str(e)))
        if not sweep:
            return
        for name in self.repository.branches(self.review_branch_prefix):
            requests = self.queue.by_review_branch(name)
            if requests and all(r.status not in queueing.ACTIVE for r in requests):
                self.repository.end_review(Review(url=requests[-1].review_url or "", branch=name))

    def _render_merge(self, review: Review, requests: list[queueing.Request]) -> None:
        """Render what the merge brought (the publish a push to the branch makes; nothing when it is rendered).

        A review branch is rendered before the merge, so the merge itself usually publishes nothing: the
        status reader is then told of the merge as of a publish of the review's stores, so Argo CD is asked
        to look at once rather than at its next poll."""
        try:
            published, _ = self.repository.publish(message=f"Published after the merge of {review.url}")
        except StoreopsError as e:
            # The entry is on the branch all the same; the next publish renders it.
            log.warning("rendering after the merge of %s failed: %s", review.url, remotes.redact(str(e)))
            return
        if published.committed or not published.sha:
            return
        stores = sorted({r.store_id for r in requests})
        changes = planning.ChangeSet(added=[r.store_id for r in requests if r.action == queueing.CREATE],
                                     changed=[s for s in stores if not any(
                                         r.action == queueing.CREATE and r.store_id == s for r in requests)],
                                     removed=[r.store_id for r in requests if r.action == queueing.DELETE],
                                     files=trees.Changes([r.path for r in requests], []))
        self.repository.merged(replace(published, changes=changes, committed=True))

    def _commit_reviewed(self, requests: list[queueing.Request], *, commit_sha: str | None) -> None:
        landed = [r.id for r in requests
                  if self.queue.end_review(request_id=r.id, status=queueing.COMMITTED, commit_sha=commit_sha)]
        self.metrics.count("storeops_requests_landed_total", len(landed))

    def _landed_anyway(self, requests: list[queueing.Request]) -> bool:
        """Whether the branch holds what each of ``requests`` asked for (its store file, or its absence); if so,
        the intake's view of Git is brought up to date."""
        files, sha = self.repository.read()
        if not all(files.get(r.path) == (None if r.content is None else r.content.encode()) for r in requests):
            return False
        self.intake.load_git(files=files, sha=sha)
        return True

    # --- the loops --------------------------------------------------------------------------------

    async def run(self, *, stop: anyio.Event) -> None:
        """Drain until ``stop`` is set, retrying with backoff while Git cannot be reached; beside it, follow
        the reviews, so a slow or unreachable review backend never holds queued requests back."""
        self._token, self._loop_thread = anyio.lowlevel.current_token(), threading.get_ident()
        await anyio.to_thread.run_sync(self.recover)
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow_reviews, stop)
            await self._drain(stop)

    async def _drain(self, stop: anyio.Event) -> None:
        delay = self.retry_min
        loaded = False
        last_refresh = 0.0
        while not stop.is_set():
            try:
                async with self._turn:
                    if not loaded or time.monotonic() - last_refresh > self.refresh_interval:
                        await anyio.to_thread.run_sync(self.refresh)
                        loaded, last_refresh = True, time.monotonic()
                    handled = await anyio.to_thread.run_sync(self.drain_once)
                if handled:
                    last_refresh = time.monotonic()
            except (StoreopsError, OSError) as e:
                self._failed(e)
                await _sleep_or_stop(stop, delay)
                delay = min(self.retry_max, delay * 2)
                continue
            if self.failing_since is not None:
                log.info("writer recovered after %.1fs", time.monotonic() - self.failing_since)
            self.failing_since, self.last_error, delay = None, "", self.retry_min
            if handled:
                continue
            wake = self._wake = anyio.Event()
            if self.queue.pending(limit=1):
                continue
            with anyio.move_on_after(min(self.refresh_interval, self.queue_poll or self.refresh_interval)):
                await _first(stop, wake)
            if wake.is_set() and self.batch_window:
                await anyio.sleep(self.batch_window)

    async def _follow_reviews(self, stop: anyio.Event) -> None:
        """Every ``review_interval`` seconds (at once at start: a review may have ended while the service was
        down), and whenever a backend reports an end, finish the reviews that ended."""
        next_poll = 0.0
        while not stop.is_set():
            wake = self._review_wake = anyio.Event()
            poll = time.monotonic() >= next_poll
            if poll or self._told:
                await self._review_pass(poll=poll)
                if poll:
                    next_poll = time.monotonic() + self.review_interval
                continue
            with anyio.move_on_after(next_poll - time.monotonic()):
                await _first(stop, wake)

    async def _review_pass(self, *, poll: bool) -> None:
        try:
            ended = await anyio.to_thread.run_sync(lambda: self.review_ends(poll=poll))
            if ended:
                async with self._turn:
                    await anyio.to_thread.run_sync(self.finish_reviews, ended)
            await anyio.to_thread.run_sync(lambda: self.delete_branches(ended, sweep=poll))
        except (StoreopsError, OSError) as e:
            # Queued requests do not wait for this: the drain goes on, and the reviews are asked about again.
            log.warning("following reviews failed, trying again in %.0fs: %s", self.review_interval,
                        remotes.redact(str(e)))

    def _failed(self, error: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        message = "; ".join(str(p) for p in error.problems[:3]) if isinstance(error, InvalidInput) else str(error)
        self.last_error = remotes.redact(message)
        self.metrics.count("storeops_writer_failures_total")
        log.warning("writer: %s; requests stay queued", self.last_error)


async def _sleep_or_stop(stop: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stop.wait()


async def _first(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as group:
        async def waiter(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()
        for event in events:
            group.start_soon(waiter, event)
