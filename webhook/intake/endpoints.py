"""The HTTP endpoints. Each reads and checks its input, calls the intake, and shapes the answer."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import anyio
import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from generator import backups as generator_backups
from generator import constants, entries, errors, publishing, releases, remotes, rendering
from generator.errors import Problem
from webhook import access, auth, backups, credentials, csrf, openapi
from webhook.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound, NotReady, RefreshError, Rejected
from webhook.intake import forms, mappings, pages, queueing
from webhook.intake.admission import Caller
from webhook.intake.service import Service
from webhook.metrics import Labels
from webhook.types import Notify, StatusView

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
FORM = forms.URLENCODED


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _mass_delete_reason(request: Request) -> str:
    reason = request.headers.get("x-storeops-mass-delete-reason", "").strip()
    if len(reason) > 500:
        raise BadRequest("X-Storeops-Mass-Delete-Reason must be at most 500 characters")
    return reason


def visible(call: access.Call, view: Mapping[str, Any]) -> bool:
    """Whether the caller may see a store: any store, or for an owner-scoped token its owner's."""
    if not call.caller.owner:
        return True
    entry = view.get("entry")
    email = entry.get("owner", {}).get("email") if isinstance(entry, dict) and isinstance(entry.get("owner"), dict) \
        else None
    return isinstance(email, str) and email.casefold() == call.caller.owner.casefold()


def _scope(request: Request) -> str:
    return f"{request.method} {request.url.path}"


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise BadRequest("Idempotency-Key must be 1 to 200 characters")
    return key


def _status_url(request: Request, request_id: str) -> str:
    base = _service(request).settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/v1/requests/{request_id}"


def _accepted(request: Request, queued: queueing.Request, new: bool, source: str) -> JSONResponse:
    service = _service(request)
    if new:
        service.metrics.count("storeops_requests_accepted_total", source=source, action=queued.action)
        service.writer.wake()
    return JSONResponse({"request_id": queued.id, "store_id": queued.store_id, "status": queued.status,
                         "status_url": _status_url(request, queued.id)}, status_code=202)


def problem_list(problems: list[Problem]) -> list[dict[str, object]]:
    return [{"field": p.field, "message": p.message, "path": p.path, "line": p.line} for p in problems]


def error_response(error: Rejected) -> JSONResponse:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="storeops"'
    return JSONResponse({"error": error.message, "problems": problem_list(error.problems)},
                        status_code=error.status, headers=headers)


def request_view(queued: queueing.Request) -> dict[str, object]:
    return {"request_id": queued.id, "store_id": queued.store_id, "action": queued.action,
            "status": queued.status, "source": queued.source, "cluster": queued.cluster,
            "mode": "review" if queued.review else "direct", "commit": queued.commit_sha,
            "review_url": queued.review_url, "problems": problem_list(list(queued.problems)),
            "created": queued.created, "updated": queued.updated, "by": queued.requester,
            "mass_delete_reason": queued.override or None}


# --- the JSON API ---------------------------------------------------------------------------------

@access.endpoint(access.WRITE, media=(JSON,), body=True)
async def create_store(request: Request, call: access.Call) -> Response:
    service = _service(request)
    body = call.body
    data = access.parse_json(body)
    caller = Caller(client=call.caller.client, source="api", idempotency_key=_idempotency_key(request),
                    scope=_scope(request), owner=call.caller.owner)
    queued, new = await anyio.to_thread.run_sync(
        lambda: service.intake.create(data=data, caller=caller, body=body))
    return _accepted(request, queued, new, "api")


#: Filters ``GET /v1/stores`` takes, each matched exactly against the field of the same name.
_FILTERS = ("owner", "status", "cluster", "engine")
_PAGE_MAX = 1000


def summary(view: Mapping[str, Any], deployment: Mapping[str, Any] | None,
             times: tuple[float, float] | None) -> dict[str, Any]:
    raw_entry, raw_owner = view.get("entry"), None
    entry: dict[str, Any] = raw_entry if isinstance(raw_entry, dict) else {}
    raw_owner = entry.get("owner")
    owner: dict[str, Any] = raw_owner if isinstance(raw_owner, dict) else {}
    return {"id": view["id"], "name": entry.get("name"), "engine": entry.get("engine"), "plan": entry.get("plan"),
            "cluster": entry.get("cluster"), "owner": owner.get("email"), "status": _lifecycle(view, deployment),
            "in_git": view.get("in_git"), "created": times[0] if times else None,
            "updated": times[1] if times else None}


def _lifecycle(view: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> str:
    """A store's one status: a request on its way (requested, pending-review, deleting) if any, else where
    Argo CD has it (the status reader), else ``committed``."""
    if view.get("requests"):
        return str(view["status"])
    return str(deployment["status"]) if deployment else str(view.get("status") or "committed")


@access.endpoint(access.READ)
async def list_stores(request: Request, call: access.Call) -> Response:
    """Stores, filtered by ``owner``, ``status``, ``cluster``, ``engine``; ``limit`` per page, ``after`` a store id."""
    service = _service(request)
    query = request.query_params
    unknown = sorted(set(query) - {*_FILTERS, "limit", "after"})
    if unknown:
        raise BadRequest(f"unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                         f"(filters: {', '.join(_FILTERS)}; limit, after)")
    raw_limit = query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _PAGE_MAX:
        raise BadRequest(f"limit must be a whole number from 1 to {_PAGE_MAX}")
    limit, after = int(raw_limit), query.get("after", "")
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)

    def gather() -> list[dict[str, Any]]:
        out = []
        times = service.queue.times()
        for store_id, view in service.intake.store_views().items():
            if store_id <= after or not visible(call, view):
                continue
            found = summary(view, reader.store_status(store_id) if reader else None, times.get(store_id))
            if all(str(found.get(f) or "").casefold() == query[f].casefold() for f in _FILTERS if f in query):
                out.append(found)
                if len(out) > limit:
                    break
        return out

    found = await anyio.to_thread.run_sync(gather)
    page, more = found[:limit], len(found) > limit
    return JSONResponse({"stores": page, "next": page[-1]["id"] if more else None,
                         "commit": service.intake.snapshot().git_sha})


@access.endpoint(access.READ)
async def get_store(request: Request, call: access.Call) -> Response:
    service = _service(request)
    store_id = request.path_params["store_id"]
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    if call.caller.owner and (view is None or not visible(call, view)):
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)
    deployment = reader.store_status(store_id) if reader is not None else None
    if view is None and deployment is None:
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    view = dict(view or {"id": store_id})
    # One status for the store; where Argo CD has it (after `committed`), when the reader runs, beside it.
    view["status"] = _lifecycle(view, deployment)
    view["deployment"] = deployment
    if reader is not None and view["status"] in ("failed", "degraded"):
        # Where a rollback would go back to: the last revision at which the store was ready.
        with contextlib.suppress(Conflict):
            view["rollback"] = {"to": rollback_target(reader.transitions(store_id), ""),
                                "how": f"POST /v1/stores/{store_id}/rollback with {{\"reason\": \"...\"}}"}
    if call.caller.owner and view.get("entry"):
        # Only to the owner: whether the admin credentials were shown, and how to get them once.
        links: credentials.Links = request.app.state.credential_links
        rotation = credentials.rotation_of(view.get("entry"))
        view["credentials"] = {"state": await anyio.to_thread.run_sync(lambda: links.state(store_id, rotation)),
                               "link": f"POST /v1/stores/{store_id}/credentials/link",
                               "rotate": f"POST /v1/stores/{store_id}/credentials/rotate"}
    return JSONResponse(view)


@access.endpoint(access.READ)
async def store_history(request: Request, call: access.Call) -> Response:
    """Who asked for what and when, what Git and Argo CD made of it: the store's requests and transitions."""
    service = _service(request)
    store_id = request.path_params["store_id"]
    owner = await anyio.to_thread.run_sync(lambda: service.intake.owner_of(store_id))
    requests = await anyio.to_thread.run_sync(lambda: service.queue.for_store(store_id))
    if (call.caller.owner and (owner is None or owner.casefold() != call.caller.owner.casefold())) or \
            (owner is None and not requests):
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)
    return JSONResponse({"store_id": store_id, "requests": [
        {"request_id": r.id, "action": r.action, "status": r.status, "source": r.source, "by": r.requester,
         "at": r.created, "updated": r.updated, "commit": r.commit_sha, "review_url": r.review_url,
         "problems": problem_list(list(r.problems))} for r in requests],
        "transitions": reader.transitions(store_id) if reader is not None else []})


@access.endpoint(access.WRITE, media=(JSON, MERGE_PATCH), body=True)
async def update_store(request: Request, call: access.Call) -> Response:
    """Change fields of a store with a JSON merge patch, e.g. ``{"state": "suspended"}``."""
    service = _service(request)
    body = call.body
    patch = access.parse_json(body)
    store_id = request.path_params["store_id"]
    caller = Caller(client=call.caller.client, source="api", idempotency_key=_idempotency_key(request),
                    scope=_scope(request), owner=call.caller.owner)
    queued, new = await anyio.to_thread.run_sync(
        lambda: service.intake.update(store_id=store_id, patch=patch, caller=caller, body=body))
    return _accepted(request, queued, new, "api")


@access.endpoint(access.WRITE, body=True)
async def delete_store(request: Request, call: access.Call) -> Response:
    """Remove the store; on a cluster that keeps backups, only once its final backup is done."""
    service = _service(request)
    store_id = request.path_params["store_id"]
    body = call.body
    await final_backup(request, call, store_id)
    caller = Caller(client=call.caller.client, source="api", idempotency_key=_idempotency_key(request),
                    scope=_scope(request), mass_delete_reason=_mass_delete_reason(request), owner=call.caller.owner)
    queued, new = await anyio.to_thread.run_sync(
        lambda: service.intake.delete(store_id=store_id, caller=caller, body=f"DELETE {store_id}".encode() + body))
    return _accepted(request, queued, new, "api")


@access.endpoint(access.READ)
async def get_request(request: Request, call: access.Call) -> Response:
    service = _service(request)
    request_id = request.path_params["request_id"]
    queued = await anyio.to_thread.run_sync(lambda: service.queue.get(request_id))
    if queued is None or (call.caller.owner and queued.client != call.caller.client):
        raise NotFound(f"no request {request_id!r}")
    return JSONResponse(request_view(queued))


def _form_signature(request: Request, body: bytes) -> str:
    config = _service(request).settings
    auth.verify_signature(secret=config.form_secret, header_name=config.form_signature_header,
                          header=request.headers.get(config.form_signature_header), body=body)
    return access.address(request)


@access.endpoint(access.SIGNED, verify=_form_signature, rate_key="webhook:", media=(JSON, FORM))
async def form_webhook(request: Request, call: access.Call) -> Response:
    """A form service's delivery: signed raw body, JSON or urlencoded, fields mapped to the schema."""
    service = _service(request)
    config = service.settings
    body = call.body
    source = access.parse_json(body) if call.media == JSON else forms.parse_urlencoded(body)
    if not isinstance(source, dict):
        raise BadRequest("the delivery must be a JSON object")
    data = forms.to_store(source, config.form_fields)
    if config.form_submitted_at:
        forms.check_submitted_at(source, config.form_submitted_at, max_age=config.form_max_age, now=time.time())
    # The delivery's identity is what its sender signed: the body. Headers are not signed, so a
    # captured delivery replayed with a new delivery id header is still the same delivery, and is
    # answered with what became of the first (the key is kept with the request, for good).
    key = "sha256:" + hashlib.sha256(body).hexdigest()
    caller = Caller(client="webhook", source="webhook", idempotency_key=key, scope=_scope(request))
    queued, new = await anyio.to_thread.run_sync(lambda: service.intake.create(data=data, caller=caller, body=body))
    return _accepted(request, queued, new, "webhook")


def _form(request: Request) -> mappings.Form:
    name = request.path_params["name"]
    form = _service(request).forms.get(name)
    if form is None:
        raise NotFound(f"no form {name!r} in the form mapping (STOREOPS_FORM_MAPPING)")
    return form


def _form_service_signature(request: Request, body: bytes) -> str:
    form = _form(request)
    form.provider.verify(secret=form.secret, headers=request.headers, body=body, now=time.time(),
                         options=form.options)
    return f"{form.name}:{access.address(request)}"


@access.endpoint(access.SIGNED, verify=_form_service_signature, rate_key="forms:")
async def form_service_webhook(request: Request, call: access.Call) -> Response:
    """A form service's delivery for one form of the mapping file: its provider verifies and reads it."""
    service = _service(request)
    form = _form(request)
    delivery = form.provider.read(headers=request.headers, body=call.body)
    if form.form_id and delivery.form_id != form.form_id:
        raise Invalid(f"the delivery is from form {delivery.form_id or '(unnamed)'!r}, not {form.form_id!r}",
                      [Problem("delivery", 0, "form", f"{delivery.form_id!r} is not this form", errors.REQUEST)])
    submitted = form.submitted(delivery)
    now = time.time()
    if submitted is not None and not now - form.max_age <= submitted <= now + 300:
        raise BadRequest(f"the delivery was submitted {now - submitted:.0f} s ago, outside the form's "
                         f"{form.max_age:g} s window: a replay, or a sender whose clock is wrong")
    data, questions = form.to_store(delivery)
    # A delivery is known by the id its sender signed; without one, by its signed body.
    key = f"{form.provider.name}:{delivery.id}" if delivery.id else "sha256:" + hashlib.sha256(call.body).hexdigest()
    caller = Caller(client=f"form:{form.name}", source="webhook", idempotency_key=key, scope=_scope(request))
    try:
        queued, new = await anyio.to_thread.run_sync(
            lambda: service.intake.create(data=data, caller=caller, body=call.body))
    except Rejected as e:
        worded = _in_the_forms_words(e, questions)
        _tell_callback(request, data, worded)
        raise worded from None
    return _accepted(request, queued, new, "webhook")


def _in_the_forms_words(error: Rejected, questions: Mapping[str, str]) -> Rejected:
    """The same refusal, each problem said about the question the person answered."""
    problems = []
    for problem in error.problems:
        question = questions.get(problem.field) or questions.get(problem.field.split("[")[0])
        message = f"{question}: {problem.message}" if question else problem.message
        problems.append(Problem(problem.path, problem.line, problem.field, message, problem.code))
    worded = type(error)(error.message, problems) if type(error) in (Invalid, Conflict) else error
    return worded


def _tell_callback(request: Request, data: Mapping[str, Any], error: Rejected) -> None:
    """Post the refusal to the callback URL the person gave, when it passes the callback rules."""
    url = data.get("callbackUrl")
    notify: Notify | None = getattr(request.app.state, "notify", None)
    if notify is None or not isinstance(url, str):
        return  # the notifier applies the callback rules (and the operator's allow-list) itself
    payload: dict[str, object] = {"store_id": data.get("id") if isinstance(data.get("id"), str) else None,
                                  "status": "rejected", "error": error.message,
                                  "problems": [{"field": p.field, "message": p.message} for p in error.problems]}

    def send() -> None:
        try:
            notify(url, payload)
        except Exception as e:  # the answer already says it; the callback is a courtesy
            log.warning("could not tell %s about a refused form delivery: %s", remotes.redact(url), e)

    threading.Thread(target=send, name="form-rejection", daemon=True).start()


# --- the request page -----------------------------------------------------------------------------

def _clusters(service: Service) -> list[str]:
    return sorted(service.intake.snapshot().overlay.clusters) if service.intake.ready else []


def _form_response(request: Request, page: str, token: str, *, status_code: int = 200) -> Response:
    """The page, with its form's CSRF token set as a cookie (``webhook.csrf``)."""
    response = HTMLResponse(page, status_code=status_code, headers={"Content-Security-Policy": pages.POLICY})
    csrf.set_cookie(response, token, secure=request.url.scheme == "https"
                    or _service(request).settings.public_url.startswith("https://"))
    return response


def _token(request: Request) -> str:
    gate: access.Gate = request.app.state.gate
    return csrf.issue(request, gate.csrf_secret)


async def form_page(request: Request) -> Response:
    service = _service(request)
    if not service.settings.form_page_on:
        raise NotFound("the request page is off (STOREOPS_FORM_PAGE)")
    token = _token(request)
    return _form_response(request, pages.form_page(clusters=_clusters(service), csrf_token=token), token)


@access.endpoint(access.PUBLIC, rate_key="form:", media=(FORM,), body=True, csrf=True)
async def submit_form(request: Request, call: access.Call) -> Response:
    service = _service(request)
    if not service.settings.form_page_on:
        raise NotFound("the request page is off (STOREOPS_FORM_PAGE)")
    body = call.body
    values = forms.parse_urlencoded(body)
    data = forms.to_store(values, forms.PAGE_MAPPING)
    caller = Caller(client=call.caller.client, source="form")
    try:
        queued, _ = await anyio.to_thread.run_sync(lambda: service.intake.create(data=data, caller=caller, body=body))
    except Rejected as e:
        token = _token(request)
        page = pages.form_page(clusters=_clusters(service), values=values, problems=e.problems,
                               message=f"Please correct the request: {e.message}.", csrf_token=token)
        return _form_response(request, page, token, status_code=e.status)
    _accepted(request, queued, True, "form")
    return RedirectResponse(f"/requests/{queued.id}", status_code=303)


async def status_page(request: Request) -> Response:
    service = _service(request)
    request_id = request.path_params["request_id"]
    queued = await anyio.to_thread.run_sync(lambda: service.queue.get(request_id))
    if queued is None:
        token = _token(request)
        return _form_response(request, pages.form_page(clusters=_clusters(service), csrf_token=token,
                                                       message=f"No request {request_id}."), token, status_code=404)
    return HTMLResponse(pages.status_page(queued), headers={"Content-Security-Policy": pages.POLICY})


# --- operations -----------------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    service = _service(request)
    writer = service.writer
    elector = getattr(request.app.state, "elector", None)
    # One replica is its own leader; of several (leader election), one leads and runs the writer.
    role = "single" if elector is None else "leader" if elector.leading.is_set() else "follower"
    body = {"git_loaded": service.intake.ready,
            "writer": "retrying" if writer.failing_since is not None else "ok" if role != "follower" else "follower",
            "last_error": writer.last_error, "role": role}
    return JSONResponse({"status": "ready" if service.intake.ready else "not ready", **body},
                        status_code=200 if service.intake.ready else 503)


async def metrics(request: Request) -> Response:
    service = _service(request)
    counts = await anyio.to_thread.run_sync(service.queue.counts)
    gauges: dict[str, dict[Labels, float]] = {"storeops_queue_requests": {(("status", s),): float(counts.get(s, 0))
                                          for s in (*queueing.ACTIVE, queueing.COMMITTED, queueing.REJECTED)}}
    text = service.metrics.render(gauges=gauges)
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)
    if reader is not None:
        text += reader.metrics_text()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi.document())


def _owned(call: access.Call, view: Mapping[str, Any] | None, store_id: str, *, link: bool = False) -> str:
    """The store's owner email when the caller is that owner (owner token or sign-in); 404 or 403 otherwise.
    Another owner holding a link (``link``) is told it is not theirs (403) rather than that nothing is there."""
    if view is None or (not link and not visible(call, view)):
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    if call.caller.owner and not visible(call, view):
        raise Forbidden("this link is for the store's owner, signed in as themselves")
    if not call.caller.owner:
        raise Forbidden("a store's credentials are shown to its owner only: use the owner's sign-in or an "
                        "owner-scoped token")
    return call.caller.owner


def _admin_login(service: Service, entry: Mapping[str, Any]) -> str:
    """The admin login the store's chart makes: its values' default, or the owner's email."""
    engine = str(entry.get("engine", ""))
    owner = entry.get("owner")
    email = str(owner.get("email", "")) if isinstance(owner, dict) else ""
    # The chart the store runs: its pinned release's, else the working chart's.
    version = entry.get("chartVersion")
    chart_values = releases.values_path(engine, str(version)) if version else rendering.chart_values_path(engine)
    values_file = service.settings.git.repo / chart_values
    values = yaml.safe_load(values_file.read_text()) if values_file.is_file() else {}
    if engine == "woocommerce":
        return str((values.get("wordpress") or {}).get("adminUser") or "admin")
    return str((values.get("bootstrap") or {}).get("adminEmail") or email)


async def make_credentials_link(request: Request, call: access.Call, store_id: str) -> credentials.Link:
    """A one-use link to the store's admin credentials, for its owner (the API's and the console's)."""
    service = _service(request)
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    owner = _owned(call, view, store_id)
    assert view is not None
    rotation = credentials.rotation_of(view.get("entry"))
    links: credentials.Links = request.app.state.credential_links
    link = await anyio.to_thread.run_sync(lambda: links.issue(store_id, owner, rotation))
    log.info("credentials link for %s made for %s", store_id, call.caller.client)
    return link


async def reveal(request: Request, call: access.Call, store_id: str, link: str) -> dict[str, Any]:
    """Use the link: the store's admin login, password and admin URL (``webhook.credentials``)."""
    service = _service(request)
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    owner = _owned(call, view, store_id, link=True)
    assert view is not None
    reader = getattr(request.app.state, "status_reader", None)
    api = getattr(reader, "api", None)
    if api is None:
        raise NotReady("credentials are read from the cluster: the status reader is off (STOREOPS_KUBECONFIG)")
    links: credentials.Links = request.app.state.credential_links
    rotation = credentials.rotation_of(view.get("entry"))
    password = await anyio.to_thread.run_sync(lambda: links.redeem(
        store_id, link, owner=owner, rotation=rotation, read=lambda: credentials.read_password(api, store_id)))
    log.info("credentials of %s shown to %s", store_id, call.caller.client)
    raw_entry = view.get("entry")
    entry: dict[str, Any] = raw_entry if isinstance(raw_entry, dict) else {}
    deployment = reader.store_status(store_id) if reader is not None else None
    return {"store": store_id, "login": _admin_login(service, entry), "password": password,
            "admin_url": credentials.admin_url(str(entry.get("engine", "")), (deployment or {}).get("url")),
            "note": "shown once: keep it in your password manager"}


@access.endpoint(access.READ)
async def credentials_link(request: Request, call: access.Call) -> Response:
    """A link that shows the store's admin credentials once, to its owner (``webhook.credentials``)."""
    store_id = request.path_params["store_id"]
    link = await make_credentials_link(request, call, store_id)
    base = _service(request).settings.public_url or str(request.base_url).rstrip("/")
    return JSONResponse({"url": f"{base}/v1/stores/{store_id}/credentials/{link.token}",
                         "expires": _iso(link.expires), "uses": 1}, status_code=201,
                        headers={"Cache-Control": "no-store"})


@access.endpoint(access.WRITE, body=True)
async def rotate_credentials(request: Request, call: access.Call) -> Response:
    """Change the shop admin's password: a change of the store (``adminPasswordRotation`` one up), queued
    and committed like any other; the store's rotation Job sets the new password in the shop and in its
    Secret together, and the owner's next credentials link shows it."""
    service = _service(request)
    store_id = request.path_params["store_id"]
    caller = Caller(client=call.caller.client, source="api", idempotency_key=_idempotency_key(request),
                    scope=_scope(request), owner=call.caller.owner)
    body = f"ROTATE {store_id}".encode() + call.body
    queued, new = await anyio.to_thread.run_sync(
        lambda: service.intake.rotate_password(store_id=store_id, caller=caller, body=body))
    log.info("admin password change of %s asked for by %s", store_id, call.caller.client)
    return _accepted(request, queued, new, "api")


@access.endpoint(access.WRITE, body=True)
async def rollback_store(request: Request, call: access.Call) -> Response:
    """Put the store's entry back as it was when the store was last ``ready`` (or at ``to``, a revision at
    which it was), as a new change with the caller's ``reason``: ``{"reason": "...", "to": "<sha>"}``."""
    service = _service(request)
    store_id = request.path_params["store_id"]
    asked = access.parse_json(call.body) if call.body.strip() else {}
    if not isinstance(asked, dict) or not isinstance(asked.get("reason", ""), str) \
            or not isinstance(asked.get("to", ""), str) or not isinstance(asked.get("restore", True), bool) \
            or set(asked) - {"reason", "to", "restore"}:
        raise Invalid("the request must be a JSON object with a string reason and, optionally, to and restore",
                      [Problem("request", 0, "(top)", "expected {\"reason\": \"...\", \"to\": \"<revision>\", "
                                                      "\"restore\": true|false}", errors.REQUEST)])
    reason = " ".join(str(asked.get("reason") or "").split())[:200]
    if not reason:
        raise Invalid("say why: a rollback needs a reason (kept in the commit)",
                      [Problem("request", 0, "reason", "required", errors.REQUEST)])
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)
    if reader is None:
        raise NotReady("a rollback needs the status reader, which knows when the store was ready (STOREOPS_KUBECONFIG)")
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    if view is None or not visible(call, view):
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    revision = rollback_target(reader.transitions(store_id), str(asked.get("to") or ""))
    path = entries.path_for(store_id)
    text = await anyio.to_thread.run_sync(lambda: publishing.file_at(service.settings.git, revision, path))
    if text is None:
        raise Conflict(f"{path} is not in revision {revision[:12]}")
    entry = yaml.safe_load(text)
    raw_current = view.get("entry")
    current: dict[str, Any] = raw_current if isinstance(raw_current, dict) else {}
    restore_from = await _rollback_restore(request, store_id, current, entry, wanted=asked.get("restore", True))
    said = f"; data from {restore_from}" if restore_from else ""
    caller = Caller(client=call.caller.client, source="api", idempotency_key=_idempotency_key(request),
                    scope=_scope(request), owner=call.caller.owner,
                    reason=f"rollback to {revision[:12]}{said}: {reason}")
    body = f"ROLLBACK {store_id}".encode() + call.body
    queued, new = await anyio.to_thread.run_sync(lambda: service.intake.rollback(
        store_id=store_id, entry=entry, revision=revision, caller=caller, body=body, restore_from=restore_from))
    log.info("rollback of %s to %s asked for by %s%s", store_id, revision[:12], call.caller.client, said)
    # Argo CD takes the rollback's commit only once its running operation ends: a failing sync it keeps
    # retrying is stopped now rather than after its backoff.
    stop = getattr(reader, "stop_failing_sync", None)
    if new and stop is not None:
        with contextlib.suppress(RefreshError):
            await anyio.to_thread.run_sync(lambda: stop(store_id))
    return _accepted(request, queued, new, "api")


async def _rollback_restore(request: Request, store_id: str, current: Mapping[str, Any], entry: Mapping[str, Any],
                            *, wanted: bool) -> str | None:
    """The pre-upgrade backup a rollback restores: for an engine whose upgrades migrate its database forward
    only, when the change rolled back moved the store's chart and its cluster keeps backups, the newest one;
    None otherwise (or when the caller says ``"restore": false``). 409 when one is needed and there is none."""
    engine, cluster = str(current.get("engine", "")), str(current.get("cluster", ""))
    if not wanted or engine not in constants.FORWARD_ONLY_MIGRATIONS \
            or current.get("chartVersion") == entry.get("chartVersion"):
        return None
    service = _service(request)
    held = service.intake.snapshot().git.clusters.get(cluster)
    if held is None or held[0].backups is None:
        return None
    objects = await anyio.to_thread.run_sync(lambda: backup_objects(request, cluster))
    found = [b for b in await anyio.to_thread.run_sync(lambda: objects.of(store_id)) if b.kind == "pre-upgrade"]
    if not found:
        raise Conflict(f"{store_id}'s chart moved from {entry.get('chartVersion') or 'the working chart'} to "
                       f"{current.get('chartVersion') or 'the working chart'}, whose {engine} migrates the database "
                       f"forward only, and there is no pre-upgrade backup of it to restore: roll the entry back "
                       f"alone with \"restore\": false, or restore a backup into a new store")
    return found[0].reference


def rollback_target(transitions: list[dict[str, object]], to: str) -> str:
    """The revision a rollback goes back to: the last one at which the store was ``ready`` before its
    latest revision (or ``to``, when the store was ready at it). 409 when there is none."""
    ready = [str(t.get("revision")) for t in transitions if t.get("status") == "ready" and t.get("revision")]
    if to:
        found = [r for r in ready if r == to or (len(to) >= 7 and r.startswith(to))]
        if not found:
            raise Conflict(f"the store was never reported ready at {to!r}: roll back to a revision it was ready at")
        return found[-1]
    latest = next((str(t.get("revision")) for t in reversed(transitions) if t.get("revision")), "")
    earlier = [r for r in ready if r != latest]
    if not earlier:
        raise Conflict("the store has no earlier revision at which it was ready: nothing to roll back to")
    return earlier[-1]


@access.endpoint(access.READ)
async def reveal_credentials(request: Request, call: access.Call) -> Response:
    """The store's admin login and password, once, to the owner the link was made for."""
    shown = await reveal(request, call, request.path_params["store_id"], request.path_params["link"])
    return JSONResponse(shown, headers={"Cache-Control": "no-store"})


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- backups (webhook.backups) ------------------------------------------------------------------------


async def _backed_up_entry(request: Request, call: access.Call, store_id: str) -> tuple[dict[str, Any], bool]:
    """The store's entry as Git or the queue has it, or, for a deleted store, as it last was in Git; and
    whether the store exists now. 404 for a store the caller may not see."""
    service = _service(request)
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    entry = view.get("entry") if view is not None else None
    if isinstance(entry, dict):
        if not visible(call, view or {}):
            raise NotFound(f"no store {store_id!r} in Git or in the queue")
        return entry, True
    path = entries.path_for(store_id)
    text = await anyio.to_thread.run_sync(lambda: publishing.last_file(service.settings.git, path))
    last = yaml.safe_load(text) if text else None
    if not isinstance(last, dict) or not visible(call, {"entry": last}):
        raise NotFound(f"no store {store_id!r} in Git, in the queue or in Git's history")
    return last, False


def backup_objects(request: Request, cluster_name: str) -> backups.Objects:
    """The backups of a cluster (its S3 store, with the keys read from the cluster now)."""
    service = _service(request)
    reader = getattr(request.app.state, "status_reader", None)
    if reader is None:
        raise NotReady("backups are reached through the cluster: the status reader is off (STOREOPS_KUBECONFIG)")
    held = service.intake.snapshot().git.clusters.get(cluster_name)
    if held is None:
        raise NotFound(f"no cluster {cluster_name!r} in Git")
    return backups.Objects(held[0], api=reader.api, endpoint=service.settings.backup_endpoints.get(cluster_name))


@access.endpoint(access.READ)
async def list_backups(request: Request, call: access.Call) -> Response:
    """The store's finished backups, newest first (a deleted store's too, while they are kept)."""
    store_id = request.path_params["store_id"]
    entry, exists = await _backed_up_entry(request, call, store_id)
    objects = await anyio.to_thread.run_sync(lambda: backup_objects(request, str(entry.get("cluster"))))
    found = await anyio.to_thread.run_sync(lambda: objects.of(store_id))
    return JSONResponse({"store": store_id, "cluster": entry.get("cluster"), "exists": exists,
                         "backups": [b.as_dict() for b in found]})


@access.endpoint(access.WRITE, body=True)
async def take_backup(request: Request, call: access.Call) -> Response:
    """Back the store up now: a Job from its backup CronJob, of kind ``manual``; listed once it finished."""
    store_id = request.path_params["store_id"]
    _, exists = await _backed_up_entry(request, call, store_id)
    if not exists:
        raise NotFound(f"no store {store_id!r} in Git or in the queue")
    reader = getattr(request.app.state, "status_reader", None)
    if reader is None:
        raise NotReady("backups are taken in the cluster: the status reader is off (STOREOPS_KUBECONFIG)")
    job = await anyio.to_thread.run_sync(lambda: backups.take(reader.api, store_id))
    log.info("backup of %s asked for by %s: Job %s", store_id, call.caller.client, job)
    return JSONResponse({"store": store_id, "kind": "manual", "job": job,
                         "backups": f"/v1/stores/{store_id}/backups"}, status_code=202)


@access.endpoint(access.WRITE, body=True)
async def restore_backup(request: Request, call: access.Call) -> Response:
    """A store from one of this store's backups: ``{"from": "<backup id>", "to": "<new id>"}``. Without
    ``to`` the store comes back under its own id, which must be free (the store deleted); a store that
    exists keeps its data, so its backups go into a new id."""
    store_id = request.path_params["store_id"]
    asked = access.parse_json(call.body) if call.body.strip() else {}
    if not isinstance(asked, dict) or not isinstance(asked.get("from"), str) \
            or not isinstance(asked.get("to", ""), str) or set(asked) - {"from", "to"}:
        raise Invalid("the request must be a JSON object with from (a backup id) and, optionally, to (a new "
                      "store id)", [Problem("request", 0, "(top)", "expected {\"from\": \"<backup id>\", "
                                                                   "\"to\": \"<new store id>\"}", errors.REQUEST)])
    queued, new = await restore(request, call, store_id, backup_id=str(asked["from"]), to=str(asked.get("to") or ""),
                                source="api")
    return _accepted(request, queued, new, "api")


async def restore(request: Request, call: access.Call, store_id: str, *, backup_id: str, to: str,
                  source: str) -> tuple[queueing.Request, bool]:
    """Queue the store ``to`` (default: ``store_id``, which must be free) from ``store_id``'s backup."""
    service = _service(request)
    backup_id = backup_id.removeprefix(f"{store_id}/")
    if not generator_backups.BACKUP_ID.fullmatch(backup_id):
        raise Invalid(f"{backup_id!r} is not a backup id such as 20261127T031700Z-manual",
                      [Problem("request", 0, "from", "not a backup id of this store", errors.REQUEST)])
    to = to or store_id
    entry, exists = await _backed_up_entry(request, call, store_id)
    if exists and to == store_id:
        raise Conflict(f"store {store_id!r} exists and keeps its data: restore its backup into a new store "
                       f"(\"to\": \"<new id>\"), or delete it first")
    objects = await anyio.to_thread.run_sync(lambda: backup_objects(request, str(entry.get("cluster"))))
    backup = await anyio.to_thread.run_sync(lambda: objects.find(store_id, backup_id))
    if backup.manifest.get("engine") not in (None, entry.get("engine")):
        raise Conflict(f"backup {backup.reference} is of a {backup.manifest.get('engine')} store, not "
                       f"{entry.get('engine')}")
    caller = Caller(client=call.caller.client, source=source, idempotency_key=_idempotency_key(request),
                    scope=_scope(request), owner=call.caller.owner)
    body = f"RESTORE {store_id}".encode() + call.body
    queued, new = await anyio.to_thread.run_sync(lambda: service.intake.restore(
        reference=backup.reference, to=to, entry=entry, caller=caller, body=body))
    log.info("restore of %s into %s asked for by %s", backup.reference, to, call.caller.client)
    return queued, new


async def final_backup(request: Request, call: access.Call, store_id: str) -> str | None:
    """Before a store on a cluster that keeps backups is removed: its final backup (a Job from its backup
    CronJob, kind ``final``), waited for up to ``STOREOPS_FINAL_BACKUP_WAIT`` seconds; its reference, or None
    where there is nothing to back up (no such cluster, or a store whose chart never made the CronJob).
    A final backup finished in the last 15 minutes counts (a delete asked again). 409 when it failed (the
    store stays), 503 while it runs (ask again)."""
    service = _service(request)
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    entry = view.get("entry") if view is not None else None
    if not isinstance(entry, dict) or not visible(call, view or {}):
        return None  # the delete itself says what is wrong
    held = service.intake.snapshot().git.clusters.get(str(entry.get("cluster", "")))
    if held is None or held[0].backups is None or entry.get("state") == "suspended":
        return None
    reader = getattr(request.app.state, "status_reader", None)
    if reader is None:
        raise NotReady("a store on a cluster with backups is deleted after its final backup, which is taken "
                       "in the cluster: the status reader is off (STOREOPS_KUBECONFIG)")
    objects = await anyio.to_thread.run_sync(lambda: backup_objects(request, str(entry["cluster"])))
    now = datetime.datetime.now(datetime.UTC)
    recent = [b for b in await anyio.to_thread.run_sync(lambda: objects.of(store_id)) if b.kind == "final"
              and now - backups.backup_time(b.id) < datetime.timedelta(minutes=15)]
    api = reader.api
    if recent:
        await anyio.to_thread.run_sync(lambda: backups.clear_jobs(api, store_id))
        return recent[0].reference
    job = await anyio.to_thread.run_sync(lambda: backups.running_job(api, store_id, "final"))
    if job is None:
        try:
            job = await anyio.to_thread.run_sync(lambda: backups.take(api, store_id, kind="final"))
        except NotReady:
            log.info("deleting %s without a final backup: its chart has made no backup CronJob", store_id)
            return None
    deadline = time.monotonic() + service.settings.final_backup_wait
    while True:
        state, said = await anyio.to_thread.run_sync(lambda: backups.job_state(api, store_id, str(job)))
        if state == "done":
            break
        if state == "failed":
            raise Conflict(f"the final backup of {store_id} failed ({job}): {said}; the store stays. Fix the "
                           f"backup, or take one with POST /v1/stores/{store_id}/backups, then delete again")
        if time.monotonic() > deadline:
            raise NotReady(f"the final backup of {store_id} is running (Job {job}); ask again to delete it once "
                           f"it is done")
        await anyio.sleep(1.0)
    await anyio.to_thread.run_sync(lambda: backups.clear_jobs(api, store_id))
    done = [b for b in await anyio.to_thread.run_sync(lambda: objects.of(store_id)) if b.kind == "final"]
    log.info("final backup of %s done (%s) before its removal", store_id, done[0].reference if done else job)
    return done[0].reference if done else None
