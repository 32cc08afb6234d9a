"""``storeops migrate-state --to postgresql://...``: a state dir's SQLite files into one PostgreSQL database.

The target's tables are made by the parts themselves (each opens its tables as ``storeops serve``
does), so the schema is the one the service uses. A target that holds rows already is refused unless
``--force`` (which replaces the rows of every table copied). Each table is copied in one transaction
(its rows, then its identity sequence moved past the copied keys), and counted again afterwards.
The SQLite files keep their rows (they are brought up to date first, as the service's start would);
run it with the service stopped, then start the service with ``STOREOPS_DATABASE_URL`` set.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TextIO

from generator.settings import Settings
from webhook import credentials, settings, signin, state
from webhook.errors import WebhookError
from webhook.github import deliveries, hooks
from webhook.intake import queueing, rollouts
from webhook.status import ledger

__all__ = ["MigrationError", "Source", "add_commands", "migrate", "sources"]

log = logging.getLogger(__name__)


class MigrationError(WebhookError):
    """The state cannot be moved as asked (a target with rows, a count that does not match)."""


class _Closes(Protocol):
    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Source:
    """One SQLite file of the state dir, and what opens (and makes) its tables at a location."""

    what: str
    path: Path
    opener: Callable[[state.Location], _Closes]


def _queue(where: state.Location) -> _Closes:
    return queueing.Queue(path=where)


def _deliveries(where: state.Location) -> _Closes:
    return deliveries.Deliveries(path=where)


def sources(env: Mapping[str, str]) -> list[Source]:
    """The SQLite files the service keeps its state in, as the environment places them."""
    local = {k: v for k, v in env.items() if k != "STOREOPS_DATABASE_URL"}
    service = settings.ServiceSettings.from_env(local)
    status = settings.StatusSettings.from_env(local)
    assert isinstance(status.ledger, Path)
    return [
        Source("intake queue", service.queue_path, _queue),
        Source("status ledger", status.ledger, ledger.Ledger),
        Source("GitHub deliveries", service.git.state_dir / hooks.DELIVERIES_FILE, _deliveries),
        Source("service state", service.state_path, state.SharedState),
        Source("credential links", service.state_path, credentials.Links),
        Source("sessions", service.state_path, signin.Sessions),
        Source("rollouts", service.state_path, rollouts.Rollouts),
    ]


def _made(found: list[Source], where: state.Location | None = None) -> None:
    """Open every part at ``where`` (by default, its own file): its tables are made, and an older SQLite
    file's brought up to date as the service would at its start."""
    for source in found:
        source.opener(source.path if where is None else where).close()


def migrate(found: list[Source], *, to: str, force: bool = False, out: TextIO | None = None) -> dict[str, int]:
    """Copy every table of the ``found`` files that exist into the PostgreSQL database at ``to``; rows per table
    (each printed to ``out``, standard output by default)."""
    out = out or sys.stdout
    if not state.is_postgres(to):
        raise MigrationError(f"--to {state.redacted(to)!r}: not a PostgreSQL URL (postgresql://user:password@host/db)")
    present = [s for s in found if s.path.is_file()]
    if not present:
        raise MigrationError("no state to move: none of " + ", ".join(sorted({str(s.path) for s in found})) +
                             " exists")
    _made(present)
    _made(found, to)
    target = state.Database(to, "")
    try:
        tables: dict[str, Path] = {}
        for path in sorted({s.path for s in present}):
            reader = state.Database(path, "")
            try:
                for table in reader.tables():
                    tables.setdefault(table, path)
            finally:
                reader.close()
        known = set(target.tables())
        unknown = sorted(set(tables) - known)
        if unknown:
            raise MigrationError(f"the SQLite files hold tables this version does not know: {', '.join(unknown)}")
        holding = [t for t in tables if t != "queue_version" and _count(target, t)]
        if holding and not force:
            raise MigrationError(f"{state.redacted(to)} holds rows already (in {', '.join(sorted(holding))}); "
                                 f"give --force to replace them")
        counts = {}
        for table, path in sorted(tables.items()):
            counts[table] = _copy(path, target, table)
            out.write(f"{table}: {counts[table]} rows\n")
        return counts
    finally:
        target.close()


def _count(db: state.Database, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").scalar())


def _copy(path: Path, target: state.Database, table: str) -> int:
    """One table, in one transaction of the target; its rows counted on both sides after."""
    source = state.Database(path, "")
    try:
        columns = sorted(source.columns(table) & target.columns(table))
        rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}").rows
        read = _count(source, table)
    finally:
        source.close()
    identity = target.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                              "current_schema() AND table_name = ? AND is_identity = 'YES'", (table,)).rows
    with target.transaction(f"migrate:{table}") as db:
        db.execute(f"DELETE FROM {table}")
        if rows:
            db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           rows)
        for (column,) in identity:  # new rows are numbered after the copied ones
            db.execute(f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false) "
                       f"FROM {table}", (table, column))
    written = _count(target, table)
    if written != read:
        raise MigrationError(f"{table}: {read} rows in {path}, {written} in the target after the copy")
    log.info("migrated %s from %s: %d rows", table, path, written)
    return written


def cmd_migrate_state(args: argparse.Namespace, _git: Settings) -> int:
    to = args.to or os.environ.get("STOREOPS_DATABASE_URL", "")
    if not to:
        raise MigrationError("say where to: --to postgresql://user:password@host:5432/db")
    found = sources(os.environ)
    counts = migrate(found, to=to, force=args.force)
    print(f"moved {sum(counts.values())} rows of {len(counts)} tables into {state.redacted(to)}; "
          f"start the service with STOREOPS_DATABASE_URL set to it")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "move the service's state (the state dir's SQLite files) into a PostgreSQL database"
    command = subparsers.add_parser("migrate-state", help=help_text, description=help_text)
    command.add_argument("--to", metavar="URL", default="",
                         help="postgresql://user:password@host:5432/db (default: STOREOPS_DATABASE_URL)")
    command.add_argument("--force", action="store_true", help="replace rows the target holds already")
    command.set_defaults(func=cmd_migrate_state)
