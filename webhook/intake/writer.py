"""The writer: drains the queue into Git, everything pending in one commit and one push.

Each store file's desired state is a function of its request alone (the content the request
carried, or absent for a delete), so applying a request twice changes nothing the second time.
Requests are marked done only after the push succeeded; after a crash the ones already in Git are
applied again as no-ops and then marked, so each lands exactly once. An unreachable remote or a
failed push leaves the requests queued and the writer retries with exponential backoff.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from generator import errors, fleet, remotes, trees
from generator.errors import InvalidInput, MassDeleteRefused, Problem, StoreopsError
from webhook.intake import queueing
from webhook.intake.admission import Intake
from webhook.metrics import Metrics
from webhook.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class Outcomes:
    """What applying a batch did to each request (reset on every attempt publish makes)."""

    landed: list[str] = field(default_factory=list)
    rejected: dict[str, list[Problem]] = field(default_factory=dict)


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
        if not reviewed and (clusters := fleet.reviewed_clusters(current, after, path)):
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


class Writer:
    def __init__(self, *, repository: Repository, intake: Intake, metrics: Metrics,
                 batch_max: int, batch_window: float, retry_min: float, retry_max: float,
                 review_branch_prefix: str, refresh_interval: float = 30.0) -> None:
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
        self.failing_since: float | None = None
        self.last_error = ""
        self._wake: anyio.Event | None = None

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
            self.queue.finish(request_ids=[request.id], status=queueing.REJECTED,
                              problems=outcomes.rejected[request.id])
            return
        review = self.repository.open_pull(
            branch, title=f"{request.action.capitalize()} store {request.store_id}",
            body=f"Requested through storeops intake (request {request.id}).\n\n"
                 f"Cluster {request.cluster} needs review for store changes.")
        self.queue.finish(request_ids=[request.id], status=queueing.PENDING_REVIEW, commit_sha=result.sha,
                          review_url=review.url)
        log.info("request %s for store %s is in review at %s", request.id, request.store_id, review.url)

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, *, stop: anyio.Event) -> None:
        """Drain until ``stop`` is set; retries with backoff while Git cannot be reached."""
        delay = self.retry_min
        await anyio.to_thread.run_sync(self.recover)
        loaded = False
        last_refresh = 0.0
        while not stop.is_set():
            try:
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
            with anyio.move_on_after(self.refresh_interval):
                await _first(stop, wake)
            if wake.is_set() and self.batch_window:
                await anyio.sleep(self.batch_window)

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
