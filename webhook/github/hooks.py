"""``POST /v1/webhooks/github``: verify, record, answer; then work through the deliveries in the background.

The endpoint answers within milliseconds (GitHub gives up after 10 s): it checks the signature,
decides from the payload whether there is anything to do, records the delivery in SQLite (the
answer waits for that write, so nothing answered is lost) and wakes :class:`GitHubService`, which
does the slow work - git, rendering, GitHub calls - one delivery at a time in a worker thread.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from generator.errors import GitError, PushConflict, StoreopsError
from webhook import access, state
from webhook.errors import BadRequest, NotFound, NotReady, Unauthenticated
from webhook.github import deliveries, events, signatures
from webhook.github.client import GitHub, GitHubError, GitHubSettings
from webhook.github.handlers import Handlers
from webhook.repository import Repository
from webhook.settings import ServiceSettings

log = logging.getLogger(__name__)

DELIVERIES_FILE = "github-deliveries.sqlite3"
#: Delivery bodies read at once, and how long a delivery waits for its turn (GitHub waits 10 s for an answer).
BODIES_AT_ONCE = 4
BODY_WAIT = 5.0
#: Failures that may pass (the remote or GitHub unreachable, a push race): retried this many times.
ATTEMPTS = 5
#: Finished deliveries are remembered this long for de-duplication (GitHub redelivers up to 3 days back).
REMEMBER = 30 * 24 * 3600.0


@dataclass
class GitHubService:
    settings: GitHubSettings
    deliveries: deliveries.Deliveries
    handlers: Handlers
    retry_min: float = 0.5
    retry_max: float = 60.0
    poll: float = 30.0
    _wake: anyio.Event | None = field(default=None, repr=False)
    #: Deliveries read at once: a body is held whole until its signature is checked, so at most
    #: BODIES_AT_ONCE x max_body_bytes is in memory for unverified senders.
    bodies: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(BODIES_AT_ONCE))

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        self.deliveries.close()

    def work_once(self) -> tuple[int, bool]:
        """Handle what is pending (blocking; a worker thread). Returns (handled, some failed and will be retried)."""
        batch = self.deliveries.claim(limit=20)
        retry = False
        for delivery in batch:
            started = time.monotonic()
            try:
                payload = json.loads(delivery.payload)
                outcome = self.handlers.handle(delivery_id=delivery.id, event=delivery.event, payload=payload)
            except (GitHubError, GitError, OSError) as e:
                attempts = self.deliveries.retry_later(delivery.id, outcome=f"error: {e}")
                if attempts >= ATTEMPTS and not isinstance(e, PushConflict):
                    self.deliveries.finish(delivery.id, status=deliveries.FAILED, outcome=f"gave up: {e}")
                    log.error("delivery %s (%s): gave up after %d attempts: %s", delivery.id, delivery.event,
                              attempts, e)
                else:
                    log.warning("delivery %s (%s): attempt %d failed, retrying: %s", delivery.id, delivery.event,
                                attempts, e)
                    retry = True
                continue
            except StoreopsError as e:
                self.deliveries.finish(delivery.id, status=deliveries.FAILED, outcome=f"failed: {e}")
                log.error("delivery %s (%s) failed: %s", delivery.id, delivery.event, e)
                continue
            except Exception as e:  # a bug must not stop every later delivery
                self.deliveries.finish(delivery.id, status=deliveries.FAILED, outcome=f"bug: {e!r}")
                log.exception("delivery %s (%s) failed unexpectedly", delivery.id, delivery.event)
                continue
            self.deliveries.finish(delivery.id, status=deliveries.DONE, outcome=outcome)
            log.info("delivery %s (%s) in %.2fs: %s", delivery.id, delivery.event, time.monotonic() - started,
                     outcome)
        return len(batch), retry

    async def run(self, *, stop: anyio.Event) -> None:
        """Work until ``stop``; pending deliveries left by a crash or restart are picked up first."""
        delay = self.retry_min
        await anyio.to_thread.run_sync(lambda: self.deliveries.forget(older_than=REMEMBER))
        while not stop.is_set():
            wake = self._wake = anyio.Event()
            handled, retry = await anyio.to_thread.run_sync(self.work_once)
            if retry:
                with anyio.move_on_after(delay):
                    await stop.wait()
                delay = min(self.retry_max, delay * 2)
                continue
            delay = self.retry_min
            if handled:
                continue
            with anyio.move_on_after(self.poll):
                await _first(stop, wake)


async def _first(*signals: anyio.Event) -> None:
    async with anyio.create_task_group() as group:
        async def waiter(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()
        for signal in signals:
            group.start_soon(waiter, signal)


def build(config: ServiceSettings, github: GitHubSettings, *, hub: GitHub, repository: Repository) -> GitHubService:
    store = deliveries.Deliveries(path=state.location(config.git.state_dir / DELIVERIES_FILE, config.database_url))
    handlers = Handlers(repository=repository, hub=hub, public_url=config.public_url,
                        review_branch_prefix=config.review_branch_prefix)
    return GitHubService(settings=github, deliveries=store, handlers=handlers, retry_min=config.retry_min,
                         retry_max=config.retry_max,
                         # Another replica may have stored the delivery: it cannot wake this one.
                         poll=config.queue_poll if config.leader_election else GitHubService.poll)


async def github_webhook(request: Request) -> Response:
    service: GitHubService | None = getattr(request.app.state, "github", None)
    if service is None:
        raise NotFound("the GitHub webhook is off (STOREOPS_GITHUB_WEBHOOK_SECRET is not set)")
    settings = service.settings
    if not request.headers.get(signatures.HEADER):
        raise Unauthenticated(f"missing {signatures.HEADER} header")  # before reading a byte of the body
    try:
        with anyio.fail_after(BODY_WAIT):
            await service.bodies.acquire()
    except TimeoutError:
        raise NotReady(f"{BODIES_AT_ONCE} deliveries are being read; try again") from None
    try:
        body = await access.read_body(request, limit=settings.max_body_bytes)
    finally:
        service.bodies.release()
    signatures.verify(secret=settings.webhook_secret, header=request.headers.get(signatures.HEADER), body=body)
    event = request.headers.get("x-github-event", "")
    delivery_id = request.headers.get("x-github-delivery", "")
    if not event:
        raise BadRequest("missing X-GitHub-Event header")
    if not 1 <= len(delivery_id) <= 100:
        raise BadRequest("missing X-GitHub-Delivery header")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise BadRequest(f"Content-Type must be application/json (set the webhook's content type), not "
                         f"{media or '(none)'}")
    payload = access.parse_json(body)
    if not isinstance(payload, dict):
        raise events.Malformed("the delivery must be a JSON object")
    decision = events.classify(event, payload, repository=settings.repository,
                               branch=service.handlers.git.branch, own=service.handlers.own)
    answer = {"delivery": delivery_id, "event": event, "action": decision.action, "reason": decision.reason}
    if event == events.PING:
        log.info("delivery %s: ping from hook %s", delivery_id, payload.get("hook_id"))
        return JSONResponse({**answer, "status": "pong"})
    if not decision.work:
        log.info("delivery %s (%s %s) ignored: %s", delivery_id, event, decision.action, decision.reason)
        return JSONResponse({**answer, "status": "ignored"})
    new = await anyio.to_thread.run_sync(lambda: service.deliveries.record(
        delivery_id=delivery_id, event=event, action=decision.action, payload=body))
    if not new:
        log.info("delivery %s (%s) seen before; not acting again", delivery_id, event)
        return JSONResponse({**answer, "status": "duplicate", "reason": "this delivery was received before"})
    service.wake()
    log.info("delivery %s (%s %s) queued: %s", delivery_id, event, decision.action, decision.reason)
    return JSONResponse({**answer, "status": "queued"}, status_code=202)
