"""The console: signed-in owners see and change their stores, operators see the fleet. Server-rendered.

Pages are Jinja2 templates (``templates/``, autoescaped), usable without JavaScript; one small
inline script keeps each page's statuses live over one combined event stream (``/v1/events``).
Every action is a normal request through the intake, named after the person's session, and every
form carries the CSRF token (``webhook.csrf``). Who sees what is the sign-in's role: an owner their
stores, an operator every store and the fleet page.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from generator import validation
from webhook import access, backups, credentials, csrf, signin
from webhook.errors import NotFound, NotReady, Rejected
from webhook.intake import endpoints, forms
from webhook.intake.admission import Caller
from webhook.intake.service import Service
from webhook.types import StatusView

log = logging.getLogger(__name__)

__all__ = ["ROUTES"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:0 1rem;line-height:1.45;color:#1a1a1a}
nav{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;padding:.75rem 0;border-bottom:1px solid #bbb}
a{color:#0b57d0}
.who{color:#444;font-size:.9rem}
.inline{display:inline;margin:0}
table{border-collapse:collapse;width:100%;margin:1rem 0}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ddd;vertical-align:top}
label{display:block;font-weight:600;margin-top:.75rem}
input,select{font-size:1rem;padding:.35rem;max-width:100%}
button{font-size:1rem;padding:.45rem .9rem;margin-top:.5rem}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
.error{color:#b00020}
.timeline li{margin:.3rem 0}
@media (max-width:40rem){th:nth-child(n+5),td:nth-child(n+5){display:none}}
"""
#: Keeps the statuses on a page live: one EventSource for the stores listed on it.
SCRIPT = """
(function(){var spans=document.querySelectorAll('.status[data-store]');if(!spans.length||!window.EventSource)return;
var ids=[];spans.forEach(function(s){ids.push(s.getAttribute('data-store'));});
var source=new EventSource('/v1/events?stores='+encodeURIComponent(ids.join(',')));
source.addEventListener('status',function(e){var d=JSON.parse(e.data);
document.querySelectorAll('.status[data-store="'+d.store_id+'"]').forEach(function(s){s.textContent=d.status;});});
})();
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Only the page's own style and script run; nothing frames it; forms post here only.
POLICY = (f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; connect-src 'self'; "
          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SORTS = ("id", "name", "status", "created", "updated")
ATTENTION = ("failed", "degraded", "stuck")
PAGE = 200

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))


def _when(value: object) -> str:
    moment = _seconds(value)
    if moment is None:
        return "—"
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: object) -> str:
    moment = _seconds(value)
    return "" if moment is None else datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


templates.env.filters["when"] = _when
templates.env.filters["iso"] = _iso


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _signed_in(request: Request) -> tuple[access.Caller, signin.Session] | None:
    """The person on this request, or None (they are sent to sign in)."""
    gate: access.Gate = request.app.state.gate
    if gate.sessions is None:
        raise NotFound("the console needs sign-in: set STOREOPS_OIDC_ISSUER, _CLIENT_ID and _CLIENT_SECRET")
    key = request.cookies.get(signin.COOKIE, "")
    session = gate.sessions.get(key) if key else None
    if session is None:
        return None
    return gate.authenticate(request, write=False), session


def _to_signin(request: Request) -> Response:
    return RedirectResponse("/signin?" + urllib.parse.urlencode({"next": request.url.path}), status_code=303)


def _page(request: Request, name: str, context: Mapping[str, Any], *, status_code: int = 200) -> Response:
    gate: access.Gate = request.app.state.gate
    token = csrf.issue(request, gate.csrf_secret)
    person = _signed_in(request)
    who, role = ("", "") if person is None else (person[1].email or person[1].name, person[1].role)
    response = templates.TemplateResponse(request, name, {
        "style": STYLE, "script": SCRIPT, "who": who, "role": role, "csrf_field": csrf.field(token),
        # Operators and viewers see every store and the fleet; only viewers may change nothing.
        "operator": role in (signin.OPERATOR, signin.VIEWER), "can_change": role != signin.VIEWER,
        **context}, status_code=status_code, headers={"Content-Security-Policy": POLICY})
    csrf.set_cookie(response, token, secure=gate.public_url.startswith("https://"))
    return response


def _reader(request: Request) -> StatusView | None:
    reader: StatusView | None = getattr(request.app.state, "status_reader", None)
    return reader


def _summaries(request: Request, call: access.Call) -> list[dict[str, Any]]:
    """The stores the caller sees, summarised; the fleet's summaries are kept until anything changes."""
    service = _service(request)
    reader = _reader(request)
    views = service.intake.store_views()
    key = (service.intake.views_key, reader.seq if reader is not None else 0)
    cached: tuple[object, list[dict[str, Any]]] | None = getattr(request.app.state, "console_summaries", None)
    if cached is None or cached[0] != key:
        times = service.queue.times()
        fleet = []
        for store_id, view in views.items():
            deployment = reader.store_status(store_id) if reader is not None else None
            summary = endpoints.summary(view, deployment, times.get(store_id))
            summary["url"] = deployment.get("url") if deployment else None
            summary["owner_key"] = (summary.get("owner") or "").casefold()
            fleet.append(summary)
        cached = (key, fleet)
        request.app.state.console_summaries = cached
    if not call.caller.owner:
        return cached[1]
    mine = call.caller.owner.casefold()
    return [s for s in cached[1] if s["owner_key"] == mine]


async def stores_page(request: Request) -> Response:
    person = _signed_in(request)
    if person is None:
        return _to_signin(request)
    call = access.Call(caller=person[0])
    query = request.query_params
    q, status, sort = query.get("q", "").strip(), query.get("status", ""), query.get("sort", "id")
    sort = sort if sort in SORTS else "id"
    found = await anyio.to_thread.run_sync(lambda: _summaries(request, call))
    shown = [s for s in found if (not status or s["status"] == status)
             and (not q or q.casefold() in f"{s['id']} {s.get('name') or ''}".casefold())]
    shown.sort(key=lambda s: (s.get(sort) is None, s.get(sort) or 0 if sort in ("created", "updated")
                              else str(s.get(sort) or "")), reverse=sort in ("created", "updated"))
    return _page(request, "stores.html", {"stores": shown[:PAGE], "total": len(shown), "q": q, "status": status,
                                          "sort": sort, "statuses": sorted({s["status"] for s in found}),
                                          "sorts": SORTS})


async def store_page(request: Request, *, message: str = "", status_code: int = 200) -> Response:
    person = _signed_in(request)
    if person is None:
        return _to_signin(request)
    call = access.Call(caller=person[0])
    store_id = request.path_params["store_id"]
    service = _service(request)
    view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
    if view is None or not endpoints.visible(call, view):
        return _page(request, "stores.html", {"stores": [], "total": 0, "q": "", "status": "", "sort": "id",
                                              "statuses": [], "sorts": SORTS}, status_code=404)
    reader = _reader(request)
    deployment = reader.store_status(store_id) if reader is not None else None
    requests = await anyio.to_thread.run_sync(lambda: service.queue.for_store(store_id))
    timeline: list[dict[str, Any]] = [
        {"at": r.created, "what": f"{r.action} requested ({r.status})", "by": r.requester,
         "detail": "; ".join(p.message for p in r.problems) or (f"commit {r.commit_sha[:12]}" if r.commit_sha else "")}
        for r in requests]
    if reader is not None:
        timeline += [{"at": t.get("at"), "what": f"became {t.get('status')}", "by": "Argo CD",
                      "detail": t.get("message") or ""} for t in reader.transitions(store_id)]
    timeline.sort(key=lambda item: _seconds(item["at"]) or 0.0)
    summary = endpoints.summary(view, deployment, None)
    raw_entry = view.get("entry")
    entry: dict[str, Any] = raw_entry if isinstance(raw_entry, dict) else {}
    url = deployment.get("url") if deployment else None
    admin = credentials.admin_url(str(summary["engine"]), url)
    links: credentials.Links = request.app.state.credential_links
    # Only the owner gets the credentials: the button is theirs alone.
    shown = links.state(store_id, credentials.rotation_of(entry)) if person[1].role == signin.OWNER else None
    kept, backups_note = await _backups_of(request, store_id, str(entry.get("cluster", "")))
    return _page(request, "store.html", {"credentials": shown,
        "store": summary, "deployment": deployment, "timeline": timeline, "url": url, "admin": admin,
        "state": entry.get("state", "active"), "plans": validation.plans_offered(), "message": message,
        "backups": kept, "backups_note": backups_note}, status_code=status_code)


async def _backups_of(request: Request, store_id: str, cluster: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The store's finished backups for its page (None: its cluster keeps none), and a note when they
    cannot be listed now."""
    service = _service(request)
    held = service.intake.snapshot().git.clusters.get(cluster) if service.intake.ready else None
    if held is None or held[0].backups is None:
        return None, ""
    try:
        objects = await anyio.to_thread.run_sync(lambda: endpoints.backup_objects(request, cluster))
        return [b.as_dict() for b in await anyio.to_thread.run_sync(lambda: objects.of(store_id))], ""
    except Exception as e:  # the page shows the store whatever the object store says
        log.warning("backups of %s not listed: %s", store_id, e)
        return [], f"The backups cannot be listed now: {e}"


@access.endpoint(access.WRITE, media=(forms.URLENCODED,), body=True, csrf=True)
async def store_action(request: Request, call: access.Call) -> Response:
    """Suspend, resume, change the plan, give the admin a new password, or delete (after typing the store's
    id): each a normal request."""
    service = _service(request)
    store_id = request.path_params["store_id"]
    values = forms.parse_urlencoded(call.body)
    action = values.get("action", "")
    caller = Caller(client=call.caller.client, source="console", owner=call.caller.owner,
                    scope=f"POST {request.url.path}")
    patches = {"suspend": {"state": "suspended"}, "resume": {"state": "active"},
               "plan": {"plan": values.get("plan", "")}}
    try:
        if action in patches:
            await anyio.to_thread.run_sync(lambda: service.intake.update(
                store_id=store_id, patch=patches[action], caller=caller, body=call.body))
        elif action == "rotate-password":
            await anyio.to_thread.run_sync(lambda: service.intake.rotate_password(
                store_id=store_id, caller=caller, body=call.body))
        elif action == "backup":
            view = await anyio.to_thread.run_sync(lambda: service.intake.store_view(store_id))
            if view is None or not endpoints.visible(call, view):
                raise NotFound(f"no store {store_id!r} in Git or in the queue")
            api = getattr(_reader(request), "api", None)
            if api is None:
                return await store_page(request, message="Not done: the cluster is out of reach.", status_code=503)
            job = await anyio.to_thread.run_sync(lambda: backups.take(api, store_id))
            return await store_page(request, message=f"Backup started (Job {job}); it is listed once finished.",
                                    status_code=202)
        elif action == "restore":
            await endpoints.restore(request, call, store_id, backup_id=values.get("backup", ""),
                                    to=values.get("to", ""), source="console")
        elif action == "credentials":
            link = await endpoints.make_credentials_link(request, call, store_id)
            return RedirectResponse(f"/console/stores/{store_id}/credentials/{link.token}", status_code=303)
        elif action == "delete":
            if values.get("confirm", "") != store_id:
                return await store_page(request, message=f"Type {store_id} to delete the store.", status_code=422)
            await endpoints.final_backup(request, call, store_id)
            await anyio.to_thread.run_sync(lambda: service.intake.delete(store_id=store_id, caller=caller,
                                                                         body=call.body))
        else:
            return await store_page(request, message=f"Unknown action {action!r}.", status_code=400)
    except Rejected as e:
        said = "; ".join(p.message for p in e.problems) or e.message
        return await store_page(request, message=f"Not done: {said}", status_code=e.status)
    except NotReady as e:
        return await store_page(request, message=f"Not done: {e}", status_code=503)
    service.writer.wake()
    return RedirectResponse(f"/console/stores/{store_id}", status_code=303)


@access.endpoint(access.READ)
async def credentials_page(request: Request, call: access.Call) -> Response:
    """The one-use credentials link opened in the browser: the login and password, once."""
    store_id = request.path_params["store_id"]
    try:
        shown = await endpoints.reveal(request, call, store_id, request.path_params["link"])
    except Rejected as e:
        return await store_page(request, message=f"No credentials shown: {e.message}.", status_code=e.status)
    except NotReady as e:
        return await store_page(request, message=f"No credentials shown: {e}.", status_code=503)
    response = _page(request, "credentials.html", {"shown": shown})
    response.headers["Cache-Control"] = "no-store"
    return response


async def request_page(request: Request, *, values: Mapping[str, str] | None = None, message: str = "",
                       problems: list[Any] | None = None, status_code: int = 200) -> Response:
    person = _signed_in(request)
    if person is None:
        return _to_signin(request)
    service = _service(request)
    clusters = sorted(service.intake.snapshot().overlay.clusters) if service.intake.ready else []
    if person[1].role == signin.VIEWER:
        message, status_code = "You are signed in read-only: you cannot request a store.", 403
    return _page(request, "request.html", {
        "values": values or {}, "message": message, "problems": problems or [], "email": person[1].email,
        "engines": validation.engines(), "plans": validation.plans_offered(), "clusters": clusters},
        status_code=status_code)


@access.endpoint(access.WRITE, media=(forms.URLENCODED,), body=True, csrf=True)
async def request_store(request: Request, call: access.Call) -> Response:
    """A new store, owned by the signed-in person."""
    service = _service(request)
    person = _signed_in(request)
    if person is None:
        return _to_signin(request)
    session = person[1]
    values = forms.parse_urlencoded(call.body)
    data: dict[str, Any] = {k: values[k] for k in ("id", "name", "engine", "plan", "cluster") if values.get(k)}
    data["owner"] = {"name": session.email.split("@")[0], "email": session.email}
    caller = Caller(client=call.caller.client, source="console", owner=call.caller.owner, scope="POST /console")
    try:
        queued, _ = await anyio.to_thread.run_sync(lambda: service.intake.create(data=data, caller=caller,
                                                                                 body=call.body))
    except Rejected as e:
        return await request_page(request, values=values, message=f"Please correct the request: {e.message}.",
                                  problems=list(e.problems), status_code=e.status)
    service.writer.wake()
    return RedirectResponse(f"/console/stores/{queued.store_id}", status_code=303)


async def fleet_page(request: Request) -> Response:
    person = _signed_in(request)
    if person is None:
        return _to_signin(request)
    if person[1].role not in (signin.OPERATOR, signin.VIEWER):
        return _page(request, "stores.html", {"stores": [], "total": 0, "q": "", "status": "", "sort": "id",
                                              "statuses": [], "sorts": SORTS}, status_code=403)
    call = access.Call(caller=person[0])
    service = _service(request)
    found = await anyio.to_thread.run_sync(lambda: _summaries(request, call))
    snapshot = service.intake.snapshot()
    statuses = sorted({s["status"] for s in found})
    clusters = []
    for name, (profile, _) in sorted(snapshot.overlay.clusters.items()):
        mine = [s for s in found if s["cluster"] == name]
        counts: dict[str, int] = {}
        for s in mine:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        clusters.append({"name": name, "stores": len(mine), "capacity": profile.capacity.stores, "counts": counts})
    attention = sorted((s for s in found if s["status"] in ATTENTION), key=lambda s: (ATTENTION.index(s["status"]),
                                                                                     s["id"]))
    recent = await anyio.to_thread.run_sync(lambda: service.queue.recent(limit=20))
    return _page(request, "fleet.html", {"clusters": clusters, "statuses": statuses, "attention": attention,
                                         "recent": [{"at": r.created, "action": r.action, "store": r.store_id,
                                                     "status": r.status, "by": r.requester} for r in recent]})


ROUTES = [
    Route("/console", stores_page, methods=["GET"]),
    Route("/console/request", request_page, methods=["GET"]),
    Route("/console/request", request_store, methods=["POST"]),
    Route("/console/fleet", fleet_page, methods=["GET"]),
    Route("/console/stores/{store_id}", store_page, methods=["GET"]),
    Route("/console/stores/{store_id}", store_action, methods=["POST"]),
    Route("/console/stores/{store_id}/credentials/{link}", credentials_page, methods=["GET"]),
]
