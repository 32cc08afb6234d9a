"""``storeops status``: the fleet as a table, straight from Argo CD's Applications (one paged list).

Each Application is assessed with the same mapping the reader uses; what the reader last reported
(its ledger, when this machine has one) adds since when each store is in its state. With no
cluster configured, the ledger alone is shown.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from kubernetes import client

from generator.settings import Settings
from webhook import state
from webhook.errors import StatusError
from webhook.settings import StatusSettings
from webhook.status import lifecycle
from webhook.status import reader as statusreader
from webhook.status.ledger import Ledger, Row
from webhook.status.revisions import Revisions
from webhook.status.watching import GROUP, PLURAL, VERSION

__all__ = ["add_commands", "cmd_status", "fleet_rows", "print_table"]

log = logging.getLogger(__name__)

COLUMNS = ("STORE", "STATUS", "REVISION", "SINCE", "URL / MESSAGE")


def list_applications(api: client.ApiClient, settings: StatusSettings) -> Iterator[dict[str, Any]]:
    custom = client.CustomObjectsApi(api)
    token: str | None = None
    while True:
        try:
            page: Any = custom.list_namespaced_custom_object(GROUP, VERSION, settings.namespace, PLURAL,
                                                             label_selector=settings.selector,
                                                             limit=settings.page_size, _continue=token)
        except client.ApiException as e:
            raise StatusError(f"cannot list Applications in {settings.namespace} ({settings.selector}): "
                              f"{e.status} {e.reason}") from e
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return


def fleet_rows(settings: StatusSettings, *, api: client.ApiClient | None = None) -> list[dict[str, str]]:
    """One row per store: from the cluster when configured (merged with the ledger), else from the ledger."""
    reported: dict[str, Row] = {}
    changes: dict[str, str] = {}
    if state.exists(settings.ledger):
        ledger = Ledger(settings.ledger)
        try:
            reported, changes = ledger.rows(), ledger.changes()
        finally:
            ledger.close()
    if api is None and not settings.enabled:
        return [_row(row.store_id, row.state, row.revision, row.since, row.url if row.state == lifecycle.READY
                     else row.message) for row in reported.values() if row.state != lifecycle.DELETED]
    own_api = api is None
    api = api or statusreader.api_client(settings)
    now = datetime.datetime.now(datetime.UTC)
    revisions = Revisions(settings.workdir)
    rows = []
    try:
        for app in list_applications(api, settings):
            store_id = lifecycle.application_store_id(app)
            change = changes.get(store_id, "")
            found = lifecycle.assess(app, store_id=store_id, now=now, stuck_after=settings.stuck_after,
                                     contains=functools.partial(_contains, revisions, change) if change else None)
            last = reported.get(store_id)
            since = last.since if last is not None and last.state == found.state else None
            rows.append(_row(store_id, found.state, found.revision, since,
                             found.url if found.state == lifecycle.READY else found.message))
    finally:
        if own_api:
            api.close()  # type: ignore[no-untyped-call]
    return rows


def _contains(revisions: Revisions, change: str, revision: str) -> bool:
    return revisions.contains(revision, change)


def _row(store_id: str, state: str, revision: str, since: datetime.datetime | None, text: str) -> dict[str, str]:
    return {"store": store_id, "status": state, "revision": revision[:12],
            "since": since.strftime("%Y-%m-%d %H:%M:%S") if since else "", "detail": text}


def print_table(rows: list[dict[str, str]], out: TextIO) -> None:
    cells = [COLUMNS, *((r["store"], r["status"], r["revision"], r["since"], r["detail"]) for r in
                        sorted(rows, key=lambda r: r["store"]))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    for row in cells:
        out.write("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)))
        out.write(f"  {row[-1]}".rstrip() + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{counts[s]} {s}" for s in lifecycle.STATES if s in counts)
    out.write(f"{len(rows)} stores{': ' + summary if summary else ''}\n")


def cmd_status(args: argparse.Namespace, _git: Settings) -> int:
    settings = StatusSettings.from_env()
    if not settings.enabled and not state.exists(settings.ledger):
        raise StatusError("no cluster to ask and no status ledger: set STOREOPS_KUBECONFIG "
                          f"(or STOREOPS_STATUS_DB; looked for {settings.ledger})")
    rows = fleet_rows(settings)
    if args.state:
        rows = [r for r in rows if r["status"] in args.state]
    if args.json:
        json.dump(sorted(rows, key=lambda r: r["store"]), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(rows, sys.stdout)
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "print every store's deployment status (from Argo CD's Applications) as a table"
    status = subparsers.add_parser("status", help=help_text, description=help_text)
    status.add_argument("--state", action="append", choices=[s for s in lifecycle.STATES
                                                             if s not in lifecycle.INTAKE_STATES],
                        help="only stores in this state (repeatable)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)
