"""HTTP view of the status reader: a store's status, its transitions as Server-Sent Events, the fleet, metrics.

The routes find the reader at ``request.app.state.status_reader`` (a
:class:`~webhook.status.reader.StatusReader`, or ``None`` when no cluster is configured: then they
answer 503); its ``store_status`` is also what ``GET /v1/stores/{id}`` merges into its answer.
Reading a store's status needs a bearer token, like the rest of ``/v1`` (``webhook.access``);
``/metrics/status`` is open like ``/metrics``.

SSE: ``GET /v1/stores/{id}/events`` first sends the store's current state (or, with
``Last-Event-ID``, every transition after that id), then each new transition as it is reported.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from webhook import access
from webhook.status import lifecycle
from webhook.status.ledger import Event
from webhook.status.reader import StatusReader, row_view
from webhook.types import OwnerOf

__all__ = ["ROUTES"]

#: How often an SSE stream looks for new transitions (in memory; no database or API request when idle).
POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0


def _reader(request: Request) -> StatusReader | None:
    reader = getattr(request.app.state, "status_reader", None)
    return reader if isinstance(reader, StatusReader) else None


def _owned(request: Request, call: access.Call, store_id: str) -> bool:
    """Whether the caller may see the store: any store, or for an owner-scoped token its owner's only."""
    if not call.caller.owner:
        return True
    owner_of: OwnerOf | None = getattr(request.app.state, "owner_of", None)
    email = owner_of(store_id) if owner_of is not None else None
    return email is not None and email.casefold() == call.caller.owner.casefold()


def _off() -> Response:
    return JSONResponse({"error": "the status reader is off: set STOREOPS_KUBECONFIG or run in a cluster",
                         "problems": []}, status_code=503)


@access.endpoint(access.READ)
async def get_store_status(request: Request, call: access.Call) -> Response:
    reader = _reader(request)
    if reader is None:
        return _off()
    store_id = request.path_params["store_id"]
    found = reader.store_status(store_id) if _owned(request, call, store_id) else None
    if found is None:
        return JSONResponse({"error": f"no status for store '{store_id}' (no Application seen)", "problems": []},
                            status_code=404)
    return JSONResponse(found)


@access.endpoint(access.READ)
async def get_fleet_status(request: Request, call: access.Call) -> Response:
    reader = _reader(request)
    if reader is None:
        return _off()
    fleet = reader.fleet_status()
    if call.caller.owner:
        listed = fleet["stores"]
        stores = [s for s in listed if isinstance(s, dict) and _owned(request, call, str(s["store_id"]))] \
            if isinstance(listed, list) else []
        counts: dict[str, int] = {}
        for store in stores:
            counts[str(store["status"])] = counts.get(str(store["status"]), 0) + 1
        fleet = {"counts": counts, "stores": stores}
    return JSONResponse(fleet)


async def get_status_metrics(request: Request) -> Response:
    reader = _reader(request)
    if reader is None:
        return _off()
    return PlainTextResponse(reader.metrics_text(), media_type="text/plain; version=0.0.4")


@access.endpoint(access.READ)
async def stream_store_events(request: Request, call: access.Call) -> Response:
    reader = _reader(request)
    if reader is None:
        return _off()
    store_id = request.path_params["store_id"]
    if not _owned(request, call, store_id):
        return JSONResponse({"error": f"no status for store '{store_id}' (no Application seen)", "problems": []},
                            status_code=404)
    return _stream_response(request, reader, lambda candidate: candidate == store_id, single=store_id)


@access.endpoint(access.READ)
async def stream_fleet_events(request: Request, call: access.Call) -> Response:
    """One stream for many stores (a page that shows a list): ``?stores=a,b`` or every store the caller sees."""
    reader = _reader(request)
    if reader is None:
        return _off()
    named = {s for s in request.query_params.get("stores", "").split(",") if s}
    return _stream_response(request, reader, lambda candidate: (not named or candidate in named)
                            and _owned(request, call, candidate), single=None)


def _stream_response(request: Request, reader: StatusReader, wanted: Callable[[str], bool], *,
                     single: str | None) -> Response:
    raw_last = request.headers.get("last-event-id") or request.query_params.get("after") or ""
    after = int(raw_last) if raw_last.isdigit() else None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    stopping: threading.Event = getattr(request.app.state, "stopping", None) or reader.stopped
    return StreamingResponse(_events(reader, wanted, after, stopping, single=single), media_type="text/event-stream",
                             headers=headers)


async def _events(reader: StatusReader, wanted: Callable[[str], bool], after: int | None,
                  stopping: threading.Event, *, single: str | None) -> AsyncIterator[str]:
    """Frames of the wanted stores until the client leaves or the service begins to shut down (for one
    store, also until it is deleted)."""
    yield f"retry: {int(KEEPALIVE_SECONDS * 1000)}\n\n"
    seen = reader.reporter.seq
    if after is None:
        for store_id, row in sorted(reader.reporter.rows().items()):
            if wanted(store_id):
                yield _frame(seen, row_view(row))
        after = seen
    last_sent = time.monotonic()
    while not (reader.stopped.is_set() or stopping.is_set()):
        target = reader.reporter.seq
        if target > after:
            events = await anyio.to_thread.run_sync(functools.partial(reader.ledger.events, store_id=single,
                                                                      after=after))
            for event in events:
                if not wanted(event.store_id):
                    continue
                yield _frame(event.seq, _event(event))
                last_sent = time.monotonic()
                if single is not None and event.state == lifecycle.DELETED:
                    return
            # Everything up to ``target`` was committed before it was published: none of it is missed.
            after = max([target, *(event.seq for event in events)])
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(POLL_SECONDS)


def _event(event: Event) -> dict[str, object]:
    data = event.as_dict()
    data["error"] = event.message if event.state in (lifecycle.FAILED, lifecycle.DEGRADED, lifecycle.STUCK) else None
    data["url"] = event.url if event.state == lifecycle.READY and event.url else None
    return data


def _frame(seq: int, data: dict[str, object]) -> str:
    return f"id: {seq}\nevent: status\ndata: {json.dumps(data, sort_keys=True)}\n\n"


ROUTES = [
    Route("/v1/stores/{store_id}/status", get_store_status, methods=["GET"]),
    Route("/v1/stores/{store_id}/events", stream_store_events, methods=["GET"]),
    Route("/v1/status", get_fleet_status, methods=["GET"]),
    Route("/v1/events", stream_fleet_events, methods=["GET"]),
    Route("/metrics/status", get_status_metrics, methods=["GET"]),
]
