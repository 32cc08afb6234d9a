"""What the generator knows of backups: the schedule a store's backups run on, and backup references.

Backups are made in each store's namespace by its chart (a CronJob, an Argo CD ``PreDelete`` hook and,
for a store that starts from one, a restore Job) into the S3-compatible store of its cluster profile
(``backups``), under ``<cluster>/<store id>/<backup id>/``. A backup id is the UTC time it was taken
and its kind: ``20261127T031700Z-scheduled``.
"""

from __future__ import annotations

import re
import zlib

__all__ = ["KINDS", "SECRET_NAME", "parse_reference", "schedule_for"]

#: Why a backup was taken: on the plan's schedule, asked for, before an upgrade, or as the store was deleted.
KINDS = ("scheduled", "manual", "pre-upgrade", "final")
#: The Secret with the S3 keys in each store namespace (``backup.secretName``), copied there by storeops.
SECRET_NAME = "storeops-backup"

BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-(?:" + "|".join(KINDS) + r")")
REFERENCE = re.compile(r"(?P<store>[a-z](?:[-a-z0-9]*[a-z0-9])?)/(?P<backup>" + BACKUP_ID.pattern + r")")


def schedule_for(schedule: str, store_id: str) -> str:
    """The plan's cron ``schedule`` for one store: ``H`` in the minute or hour field becomes a value
    spread by the store's id, so a fleet's backups do not all start at once (and one store's stays put)."""
    spread = zlib.crc32(store_id.encode())
    fields = schedule.split()
    if fields and fields[0] == "H":
        fields[0] = str(spread % 60)
    if len(fields) > 1 and fields[1] == "H":
        fields[1] = str(spread // 60 % 24)
    return " ".join(fields)


def parse_reference(reference: str) -> tuple[str, str]:
    """``shop-1/20261127T031700Z-manual`` -> (store id, backup id); ValueError for anything else."""
    match = REFERENCE.fullmatch(reference)
    if not match:
        raise ValueError(f"{reference!r} is not a backup reference such as shop-1/20261127T031700Z-scheduled")
    return match["store"], match["backup"]
