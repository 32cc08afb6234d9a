"""``storeops rollout``, ``backup``, ``backups`` and ``restore``: clients of the service's API.

A rollout waits for the status reader and commits through the intake queue, and backups are reached
through the cluster (``/v1/stores/{id}/backups``, ``/restore``), so they run in the service; these
commands are its clients. ``STOREOPS_API_URL`` (default ``http://127.0.0.1:8080``) names the service and
``STOREOPS_API_TOKEN`` an operator's write token.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from generator.settings import Settings
from webhook.errors import ApiError

__all__ = ["ApiSettings", "add_commands", "describe"]

#: How often ``storeops rollout start --wait`` / ``show --wait`` looks again.
WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ApiSettings:
    url: str = "http://127.0.0.1:8080"
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if environ is None else environ
        return cls(url=env.get("STOREOPS_API_URL", cls.url).rstrip("/"), token=env.get("STOREOPS_API_TOKEN", ""))


def call(api: ApiSettings, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api.url}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {api.token}", "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        try:
            said = json.loads(e.read())
            problems = "".join(f"\n  {p.get('field')}: {p.get('message')}" for p in said.get("problems") or [])
            message = f"{said.get('error')}{problems}"
        except ValueError:
            message = e.reason
        raise ApiError(f"{method} {path}: {e.code}: {message}") from e
    except urllib.error.URLError as e:
        raise ApiError(f"cannot reach the service at {api.url} (STOREOPS_API_URL): {e.reason}") from e


def describe(rollout: Mapping[str, Any]) -> str:
    """A rollout for people: its waves, where it stands, and the report of a halt."""
    lines = [f"rollout {rollout['id']}: {rollout['engine']} {rollout['version']}"
             f"{' on ' + rollout['cluster'] if rollout.get('cluster') else ''}: {rollout['state']}"]
    review = rollout.get("review") or {}
    if rollout["state"] == "review":
        lines.append(f"its plan is in review: {review.get('url')} (merge to run the waves, close to call it off)")
    for wave in rollout["waves"]:
        lines.append(f"  wave {wave['wave']}: {wave['state']:<8} {', '.join(wave['stores'])}")
    report = rollout.get("report") or {}
    if rollout["state"] == "halted":
        lines.append(f"halted at wave {report.get('wave')}: {report.get('store')} {report.get('state')}: "
                     f"{report.get('message')}")
        lines.append(f"moved: {', '.join(report.get('moved') or []) or 'none'}")
        lines.append(f"untouched (still on their chart): {', '.join(report.get('untouched') or []) or 'none'}")
    elif report.get("message"):
        lines.append(str(report["message"]))
    for store, status in sorted((rollout.get("current") or {}).items()):
        lines.append(f"  {store}: {(status or {}).get('status', 'no status yet')}")
    return "\n".join(lines)


def _follow(api: ApiSettings, rollout: Mapping[str, Any], wait: bool) -> int:
    while wait and rollout["state"] == "running":
        time.sleep(WAIT_SECONDS)
        rollout = call(api, "GET", f"/v1/rollouts/{rollout['id']}")
    print(describe(rollout))
    return 1 if rollout["state"] == "halted" else 0


def cmd_rollout_start(args: argparse.Namespace, settings: Settings) -> int:
    api = ApiSettings.from_env()
    canary: object = args.canary.split(",") if args.canary and not args.canary.isdigit() else int(args.canary or 1)
    body = {"engine": args.engine, "version": args.version, "canary": canary, "batch": args.batch,
            **({"cluster": args.cluster} if args.cluster else {}),
            **({"timeout": args.timeout} if args.timeout else {})}
    return _follow(api, call(api, "POST", "/v1/rollouts", body), args.wait)


def cmd_rollout_show(args: argparse.Namespace, settings: Settings) -> int:
    api = ApiSettings.from_env()
    if not args.rollout_id:
        for rollout in call(api, "GET", "/v1/rollouts")["rollouts"]:
            count = len(rollout["waves"])
            print(f"{rollout['id']}  {rollout['state']:<8} {rollout['engine']} {rollout['version']} "
                  f"{rollout.get('cluster') or '(every cluster)'}  wave {min(rollout['wave'] + 1, count)}/{count}")
        return 0
    return _follow(api, call(api, "GET", f"/v1/rollouts/{args.rollout_id}"), args.wait)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    api = ApiSettings.from_env()
    started = call(api, "POST", f"/v1/stores/{args.store_id}/backups", {})
    print(f"backup of {args.store_id} started: Job {started['job']} (storeops backups {args.store_id} lists it "
          f"once it finished)")
    if not args.wait:
        return 0
    known = {b["id"] for b in call(api, "GET", f"/v1/stores/{args.store_id}/backups")["backups"]}
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(WAIT_SECONDS)
        new = [b for b in call(api, "GET", f"/v1/stores/{args.store_id}/backups")["backups"]
               if b["id"] not in known and b["kind"] == "manual"]
        if new:
            print(f"{new[0]['reference']}  {new[0]['size']} bytes")
            return 0
    print(f"no new backup of {args.store_id} within {args.timeout:.0f}s: see the Job {started['job']}")
    return 1


def cmd_backups(args: argparse.Namespace, settings: Settings) -> int:
    api = ApiSettings.from_env()
    listed = call(api, "GET", f"/v1/stores/{args.store_id}/backups")
    if not listed["exists"]:
        print(f"{args.store_id} was deleted; its backups are kept for the cluster's finalBackupDays")
    for backup in listed["backups"]:
        print(f"{backup['id']}  {backup['kind']:<11} {backup['created']}  {backup['size']:>12} bytes")
    if not listed["backups"]:
        print(f"no finished backup of {args.store_id} on cluster {listed['cluster']}")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    api = ApiSettings.from_env()
    body = {"from": args.backup, **({"to": args.to} if args.to else {})}
    queued = call(api, "POST", f"/v1/stores/{args.store_id}/restore", body)
    print(f"store {queued['store_id']} requested from {args.store_id}/{args.backup.rpartition('/')[2]}: "
          f"{queued.get('status', 'queued')} ({queued['status_url']})")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = ("move stores to a released chart version in waves, through the service "
                 "(STOREOPS_API_URL, STOREOPS_API_TOKEN)")
    rollout = subparsers.add_parser("rollout", help=help_text, description=help_text)
    commands = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    start = commands.add_parser("start", help="start a rollout: a canary wave, then batches, each after the last "
                                              "is ready")
    start.set_defaults(func=cmd_rollout_start)
    start.add_argument("--engine", required=True, help="the engine whose stores move")
    start.add_argument("--version", required=True, help="the released chart version to move them to "
                                                       "(templates/releases/ENGINE/VERSION)")
    start.add_argument("--cluster", help="only the stores of this cluster (default: every cluster of the engine)")
    start.add_argument("--canary", default="1", help="the first wave: store ids (a,b) or a count (default: 1)")
    start.add_argument("--batch", type=int, default=1, help="stores per wave after the canary (default: 1)")
    start.add_argument("--timeout", type=float, help="seconds a wave may take to be ready (default: the service's "
                                                     "STOREOPS_ROLLOUT_TIMEOUT)")
    start.add_argument("--wait", action="store_true", help="follow it until it is done or halts (exit 1 on a halt)")
    show = commands.add_parser("show", help="a rollout's waves and report (without an id: the latest rollouts)")
    show.set_defaults(func=cmd_rollout_show)
    show.add_argument("rollout_id", nargs="?", metavar="ROLLOUT_ID")
    show.add_argument("--wait", action="store_true", help="follow it until it is done or halts (exit 1 on a halt)")
    where = "through the service (STOREOPS_API_URL, STOREOPS_API_TOKEN)"
    backup = subparsers.add_parser("backup", help=f"back a store up now, {where}",
                                   description=f"Back a store up now (kind manual), {where}.")
    backup.set_defaults(func=cmd_backup)
    backup.add_argument("store_id", metavar="ID")
    backup.add_argument("--wait", action="store_true", help="wait until the backup is finished and print its id")
    backup.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits (default: 900)")
    listing = subparsers.add_parser("backups", help=f"a store's finished backups, newest first, {where}",
                                    description=f"A store's finished backups, newest first, {where}; a "
                                                f"deleted store's too, while they are kept.")
    listing.set_defaults(func=cmd_backups)
    listing.add_argument("store_id", metavar="ID")
    restore = subparsers.add_parser("restore", help=f"a store from a backup, {where}",
                                    description=f"A store from one of ID's backups, {where}: into a new store "
                                                f"(--to), or back under ID once ID was deleted.")
    restore.set_defaults(func=cmd_restore)
    restore.add_argument("store_id", metavar="ID")
    restore.add_argument("--from", dest="backup", required=True, metavar="BACKUP",
                         help="the backup id (storeops backups ID lists them)")
    restore.add_argument("--to", metavar="NEW_ID", help="the new store's id (default: ID, which must be free)")
