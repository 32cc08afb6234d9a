"""The Starlette app: routes and middleware declared as data; the writer runs in its lifespan."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping

import anyio
import anyio.from_thread
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from generator import publishing, remotes
from generator.models import Cluster
from webhook import access, auth, backups, credentials, leadership, settings, signin, state
from webhook.errors import NotReady, Rejected
from webhook.github import deploys, hooks
from webhook.github.client import GitHub, GitHubPullRequests, GitHubSettings
from webhook.intake import console, endpoints, rollouts, service
from webhook.repository import LocalPullRequests, Repository, log_published
from webhook.settings import StatusSettings
from webhook.status import callbacks
from webhook.status import reader as statusreader
from webhook.status import routes as statusroutes
from webhook.status.ledger import Event
from webhook.status.sinks import Sink
from webhook.types import PullRequests

log = logging.getLogger(__name__)

ROUTES = [
    Route("/", endpoints.form_page, methods=["GET"]),
    Route("/", endpoints.submit_form, methods=["POST"]),
    Route("/requests/{request_id}", endpoints.status_page, methods=["GET"]),
    Route("/v1/stores", endpoints.create_store, methods=["POST"]),
    Route("/v1/stores", endpoints.list_stores, methods=["GET"]),
    Route("/v1/stores/{store_id}", endpoints.get_store, methods=["GET"]),
    Route("/v1/stores/{store_id}", endpoints.update_store, methods=["PATCH"]),
    Route("/v1/stores/{store_id}", endpoints.delete_store, methods=["DELETE"]),
    Route("/v1/stores/{store_id}/history", endpoints.store_history, methods=["GET"]),
    Route("/v1/stores/{store_id}/rollback", endpoints.rollback_store, methods=["POST"]),
    Route("/v1/stores/{store_id}/backups", endpoints.list_backups, methods=["GET"]),
    Route("/v1/stores/{store_id}/backups", endpoints.take_backup, methods=["POST"]),
    Route("/v1/stores/{store_id}/restore", endpoints.restore_backup, methods=["POST"]),
    Route("/v1/stores/{store_id}/credentials/link", endpoints.credentials_link, methods=["POST"]),
    Route("/v1/stores/{store_id}/credentials/rotate", endpoints.rotate_credentials, methods=["POST"]),
    Route("/v1/stores/{store_id}/credentials/{link}", endpoints.reveal_credentials, methods=["GET"]),
    Route("/v1/requests/{request_id}", endpoints.get_request, methods=["GET"], name="request_status"),
    Route("/v1/webhooks/form", endpoints.form_webhook, methods=["POST"]),
    Route("/v1/webhooks/forms/{name}", endpoints.form_service_webhook, methods=["POST"]),
    Route("/v1/webhooks/github", hooks.github_webhook, methods=["POST"]),
    Route("/signin", signin.signin_route, methods=["GET"]),
    Route("/signin/callback", signin.callback_route, methods=["GET"]),
    Route("/signout", signin.signout_route, methods=["POST"]),
    Route("/healthz", endpoints.healthz, methods=["GET"]),
    Route("/readyz", endpoints.readyz, methods=["GET"]),
    Route("/metrics", endpoints.metrics, methods=["GET"]),
    Route("/openapi.json", endpoints.openapi_document, methods=["GET"]),
    *rollouts.ROUTES,
    *statusroutes.ROUTES,
    *console.ROUTES,
]


class MetricsMiddleware:
    """Counts every answer by endpoint and status, and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            built: service.Service | None = getattr(scope["app"].state, "service", None)
            if built is not None:
                built.metrics.count("storeops_http_requests_total", route=route, code=str(status))
                built.metrics.observe("storeops_http_request_seconds", time.monotonic() - started, route=route)


class SecurityHeadersMiddleware:
    """Headers every answer carries: no sniffing, no referrer, never framed, nothing loaded.

    An answer that sets its own Content-Security-Policy (the HTML pages, which allow their style)
    keeps it.
    """

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin"))
    POLICY = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", self.POLICY))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejected)
    return endpoints.error_response(exc)


async def _not_ready(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc), "problems": []}, status_code=503, headers={"Retry-After": "1"})


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "problems": []}, status_code=exc.status_code, headers=exc.headers)


#: Known errors become their 4xx/503 answers (JSON: ``{error, problems}``).
EXCEPTION_HANDLERS = {Rejected: _rejected, NotReady: _not_ready, HTTPException: _http}


def status_sinks(
    status: StatusSettings, *, hub: GitHub | None, branch: str,
    details: Callable[[Event], Mapping[str, object]] | None = None,
) -> list[Sink]:
    """Where store transitions are reported: one line per sink (see ``webhook.status.sinks``).

    ``details`` adds to a ready report on the callback (a private channel) what its owner needs
    next; GitHub, which repository readers see, gets the status and URL only."""
    return [
        callbacks.CallbackSink.from_settings(status, details=details),
        *([deploys.DeploySink(hub=hub, branch=branch)] if hub is not None else []),
    ]


def _backup_fleet(built: service.Service) -> tuple[dict[str, Cluster], dict[str, str]]:
    """The clusters and each store's cluster, as Git has them (for the backup keeper)."""
    if not built.intake.ready:
        return {}, {}
    git = built.intake.snapshot().git
    stores = {held.entry.store.id: held.entry.store.cluster for held in git.stores.values() if held.entry is not None}
    return {name: cluster for name, (cluster, _) in git.clusters.items()}, stores


async def _follow(built: service.Service, reader: statusreader.StatusReader, *, interval: float, stop: anyio.Event,
                  leading: anyio.Event) -> None:
    """Until this replica leads (or stops): read Git and the status ledger every ``interval`` seconds, so its
    answers follow what the leader writes."""
    # The clone may be as a kill -9 left it (stale locks, a half-made clone); the writer does the same first.
    await anyio.to_thread.run_sync(built.writer.recover)
    while not leading.is_set() and not stop.is_set():
        try:
            await anyio.to_thread.run_sync(built.writer.refresh)
            await anyio.to_thread.run_sync(reader.reload)
        except Exception as e:  # a follower that stops following serves stale views: log, and try again
            log.warning("following the leader: reading Git or the ledger failed, again in %.0fs: %s", interval,
                        remotes.redact(str(e)))
        with anyio.move_on_after(interval):
            async with anyio.create_task_group() as group:
                async def ends(event: anyio.Event) -> None:
                    await event.wait()
                    group.cancel_scope.cancel()
                group.start_soon(ends, stop)
                group.start_soon(ends, leading)


def create_app(config: settings.ServiceSettings, *, pulls: PullRequests | None = None,
               github: GitHubSettings | None = None, status: StatusSettings | None = None,
               on_lost: Callable[[], None] = leadership.exit_now) -> Starlette:
    """The app; the queue opens and the writer starts when the app starts (its lifespan).

    With ``github`` enabled, ``POST /v1/webhooks/github`` works and review-mode requests open pull
    requests on GitHub (unless ``pulls`` says otherwise). With ``status`` enabled (a kubeconfig, or
    in a cluster) the status reader watches the store Applications, reports to the callback URL and
    GitHub, serves ``/v1/stores/{id}/status`` and ``/events``, and asks Argo CD to refresh after a push.

    With leader election (``config.leader_election``; see ``webhook.leadership``) the app serves the
    API at once and runs the single workers (the writer, the status reader, the GitHub delivery worker,
    the rollouts driver, the backup keeper) only while it holds the Lease; until then it reads Git and
    the status ledger every ``follower_refresh`` seconds. ``on_lost`` is called when the Lease is lost.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        remotes.install_log_redaction()
        repo = GitHub(settings=github) if github is not None and github.enabled else None
        def details(event: Event) -> Mapping[str, object]:
            built: service.Service = app.state.service
            view = built.intake.store_view(event.store_id) or {}
            entry = view.get("entry")
            engine = str(entry.get("engine", "")) if isinstance(entry, dict) else ""
            return credentials.ready_details(
                store_id=event.store_id, engine=engine, url=event.url,
                public_url=config.public_url or f"http://{config.host}:{config.port}",
                api=getattr(app.state.status_reader, "api", None),
            )

        settings.check_election(config, status)
        lease = config.lease
        reader = statusreader.launch(status, sinks=status_sinks(status, hub=repo, branch=config.git.branch,
                                                                details=details)
                                     if status is not None else None, start=lease is None)  # fmt: skip
        app.state.status_reader = reader
        opener = pulls
        if opener is None:
            config.git.state_dir.mkdir(parents=True, exist_ok=True)
            opener = GitHubPullRequests(hub=repo) if repo is not None else LocalPullRequests(
                remote=publishing.remote_url(config.git), index=config.git.state_dir / "reviews.json")
        repository = Repository(git=config.git, pulls=opener,
                                on_published=reader.note_published if reader is not None else log_published)
        hub = hooks.build(config, github, hub=repo, repository=repository) \
            if github is not None and repo is not None else None
        built = service.build(config, repository=repository)
        app.state.service = built
        app.state.owner_of = built.intake.owner_of
        # Refusals of form deliveries go to the callback the person gave, by the callback rules.
        notifier = callbacks.Callbacks.from_settings(status or StatusSettings())
        app.state.notify = lambda url, payload: notifier.post(url, payload, event_id="form-rejection")
        shared = state.SharedState(config.state_location)
        app.state.credential_links = credentials.Links(config.state_location, ttl=config.credentials_link_ttl)
        sessions = signin.Sessions(config.state_location) if config.oidc_issuer else None
        if sessions is not None:
            provider = signin.Provider(issuer=config.oidc_issuer, client_id=config.oidc_client_id,
                                       client_secret=config.oidc_client_secret, operators=config.operators,
                                       viewers=config.viewers)
            app.state.signin = (provider, sessions, config.public_url)
        app.state.gate = access.Gate(
            tokens=built.tokens, limiter=auth.RateLimiter(rate=config.rate, burst=config.burst, state=shared),
            max_body_bytes=config.max_body_bytes,
            trusted_proxies=tuple(ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies),
            csrf_secret=shared.secret("csrf"), public_url=config.public_url, sessions=sessions)
        app.state.github = hub
        runner = rollouts.Runner(rollouts=rollouts.Rollouts(config.state_location), intake=built.intake, status=reader,
                                 poll=config.rollout_poll, timeout=config.rollout_timeout, wake=built.writer.wake,
                                 repository=repository, review_poll=config.review_poll_interval)
        app.state.rollouts = runner
        keeper = backups.Keeper(api=reader.api, fleet=lambda: _backup_fleet(built), interval=config.backup_interval,
                                endpoints=config.backup_endpoints) if reader is not None else None
        app.state.backups = keeper
        stop = anyio.Event()

        async def lead() -> None:
            """The work only one process may do at a time."""
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: built.writer.run(stop=stop))
                group.start_soon(lambda: runner.run(stop=stop))
                if hub is not None:
                    group.start_soon(lambda: hub.run(stop=stop))
                if keeper is not None:
                    group.start_soon(lambda: keeper.run(stop=stop))

        elector: leadership.Elector | None = None
        if lease is not None and status is not None and reader is not None:
            leading = anyio.Event()
            token = anyio.lowlevel.current_token()

            def started() -> None:
                with contextlib.suppress(anyio.RunFinishedError):
                    anyio.from_thread.run_sync(leading.set, token=token)

            elector = leadership.Elector(api=statusreader.api_client(status), lease=lease,
                                         holder=leadership.identity(), on_started=started, on_lost=on_lost)
            follower_reader = reader

            async def elected() -> None:
                await _follow(built, follower_reader, interval=config.follower_refresh, stop=stop, leading=leading)
                if stop.is_set():
                    return
                log.info("leading: starting the writer, the status reader and the other single workers")
                await anyio.to_thread.run_sync(follower_reader.reload)
                statusreader.begin(follower_reader)
                await lead()

        app.state.elector = elector
        async with anyio.create_task_group() as group:
            if elector is None:
                group.start_soon(lead)
            else:
                group.start_soon(elected)
                elector.start()
            log.info("storeops intake on %s:%d; queue %s%s", config.host, config.port,
                     state.redacted(config.queue_location),
                     f"; candidate {elector.holder} for lease {config.leader_election}" if elector else "")
            try:
                yield
            finally:
                app.state.stopping.set()
                stop.set()
        built.close()
        runner.rollouts.close()
        shared.close()
        app.state.credential_links.close()
        if sessions is not None:
            sessions.close()
        notifier.close()
        if hub is not None:
            hub.close()
        await statusreader.shutdown(reader)
        if elector is not None:
            # Only now, with every single worker stopped: the next leader may start the moment the Lease is free.
            await anyio.to_thread.run_sync(elector.stop)
            elector.close()

    middleware = [Middleware(MetricsMiddleware), Middleware(SecurityHeadersMiddleware)]
    built_app = Starlette(routes=ROUTES, middleware=middleware, lifespan=lifespan,
                          exception_handlers=EXCEPTION_HANDLERS)
    #: Set when shutdown begins (by ``storeops serve`` on SIGTERM, or the lifespan's end): streams end.
    built_app.state.stopping = threading.Event()
    return built_app
