"""Back up a store to S3-compatible object storage, and restore a new store from such a backup.

Runs in the charts' backup and restore Jobs, in the credentials image (any Python 3.11+, standard
library only: a small S3 client with AWS Signature Version 4, tarfile, gzip, hashlib). The database
dump and load happen in the database's own image, in the same pod, through a shared folder (WORK_DIR).

Layout: s3://<bucket>/<prefix>/<store>/<backup-id>/ holds

  * ``database.sql.gz``: the database's plain SQL dump, gzip;
  * ``files.tar.gz``: the store's content volume (WordPress's /var/www/html, Medusa's uploads);
  * ``manifest.json``, written last: a backup without it is incomplete and ignored.

backup-id is ``<UTC yyyymmddThhmmssZ>-<kind>``, kind one of scheduled, manual, pre-upgrade, final.

Commands:

  backup   gzip WORK_DIR/database.sql, tar CONTENT_DIR, upload both, then the manifest; then, for a
           scheduled backup, delete the store's scheduled backups beyond the newest RETENTION (and
           incomplete scheduled ones older than the newest complete one). Other kinds are never deleted.
  list     print the store's complete backups, newest first, one JSON object a line.
  fetch    (restore, first step) read the restore marker in CONTENT_DIR; unless the restore is done,
           download the backup named by RESTORE_FROM (<store>/<backup-id>) into WORK_DIR, check each
           file's size and sha256 against the manifest, and unpack the dump to WORK_DIR/database.sql.
  extract  (restore, last step, after the database image loaded the dump) unpack files.tar.gz into
           CONTENT_DIR (emptied first when replacing) and mark the restore done.

The restore marker, CONTENT_DIR/.storeops-restore, is one JSON object {"from": ..., "state": ...}:
"database" once the database image starts loading (the database is then this restore's to reload),
"files" once it has loaded, "done" at the end. The database step refuses to load into a database
that has tables when there is no marker (WORK_DIR/check-empty): a restore never overwrites a store
that already has data, unless RESTORE_REPLACE is true (a rollback to an earlier backup of the same
store): then the database step empties the database first (WORK_DIR/replace) and extract empties the
content volume, once per RESTORE_FROM (the marker again).

Environment: STORE_ID, ENGINE, BACKUP_KIND (default scheduled), CHART_VERSION (optional),
RETENTION (default 7), S3_ENDPOINT (http[s]://host[:port]), S3_BUCKET, S3_REGION (default us-east-1),
S3_PREFIX, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_CA_FILE (optional), WORK_DIR (default /work),
CONTENT_DIR (default /content), RESTORE_FROM, RESTORE_REPLACE (true: replace the store's data).

Exit codes: 0 done, 1 failure worth retrying (network, server), 2 bad settings, 3 refused (a corrupted
backup, a store restored from another backup): retrying will not help.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import ssl
import sys
import tarfile
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import IO

KINDS = ("scheduled", "manual", "pre-upgrade", "final")
MANIFEST = "manifest.json"
DATABASE = "database.sql.gz"
FILES = "files.tar.gz"
MARKER = ".storeops-restore"
#: Left out of files.tar.gz: the restore marker and what a file system keeps for itself.
SKIPPED = {MARKER, "lost+found"}
BACKUP_ID = re.compile(r"^(?P<time>\d{8}T\d{6}Z)-(?P<kind>" + "|".join(KINDS) + r")$")
STORE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CHUNK = 1 << 20
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class BackupError(Exception):
    """A failure worth retrying."""

    exit_code = 1


class SettingsError(BackupError):
    exit_code = 2


class RefusedError(BackupError):
    exit_code = 3


class S3Error(BackupError):
    def __init__(self, method: str, key: str, status: int, body: bytes) -> None:
        self.status = status
        # Refused keys or rights are settings to fix, not a failure to retry.
        self.exit_code = 2 if status in (401, 403) else 1
        self.code = _xml_text(body, "Code") or str(status)
        message = _xml_text(body, "Message") or body[:200].decode("utf-8", "replace")
        super().__init__(f"S3 {method} {key or '/'}: {status} {self.code}: {message}")


def _xml_text(body: bytes, tag: str) -> str:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    for element in root.iter():
        if element.tag.split("}")[-1] == tag:
            return element.text or ""
    return ""


# --- S3 ------------------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


@dataclasses.dataclass(frozen=True)
class S3:
    """Path-style requests to one bucket, signed with AWS Signature Version 4 (service s3)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    ca_file: str | None = None
    timeout: float = 300.0

    def _connection(self) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            return http.client.HTTPSConnection(url.netloc, timeout=self.timeout, context=context)
        if url.scheme == "http":
            return http.client.HTTPConnection(url.netloc, timeout=self.timeout)
        raise SettingsError(f"S3_ENDPOINT {self.endpoint!r} is not an http:// or https:// URL")

    def sign(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], payload_sha256: str,
        now: datetime.datetime,
    ) -> dict[str, str]:  # fmt: skip
        """The request's headers with x-amz-date, x-amz-content-sha256 and Authorization added."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
        signed["host"] = urllib.parse.urlsplit(self.endpoint).netloc
        signed["x-amz-date"] = stamp
        signed["x-amz-content-sha256"] = payload_sha256
        names = sorted(signed)
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        canonical = "\n".join(
            [method, _quote(path, safe="/-_.~"), canonical_query, *(f"{n}:{signed[n]}" for n in names), "",
             ";".join(names), payload_sha256]
        )  # fmt: skip
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(("AWS4" + self.secret_key).encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out = dict(headers)
        out["x-amz-date"] = stamp
        out["x-amz-content-sha256"] = payload_sha256
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature}"
        )
        return out

    def _request(
        self, method: str, key: str, *, query: dict[str, str] | None = None, body: IO[bytes] | bytes | None = None,
        size: int = 0, sha256: str = EMPTY_SHA256, headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:  # fmt: skip
        path = f"/{self.bucket}/{key}" if key else f"/{self.bucket}"
        query = query or {}
        all_headers = dict(headers or {})
        if method == "PUT":
            all_headers["Content-Length"] = str(size)
        signed = self.sign(method, path, query, all_headers, sha256, datetime.datetime.now(datetime.UTC))
        target = _quote(path, safe="/-_.~")
        if query:
            target += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        connection = self._connection()
        try:
            connection.request(method, target, body=body, headers=signed)
            response = connection.getresponse()
        except OSError as e:
            connection.close()
            raise BackupError(f"S3 {method} {key or '/'}: {self.endpoint}: {e}") from e
        if response.status >= 300:
            data = response.read()
            connection.close()
            raise S3Error(method, key, response.status, data)
        return response

    def put(self, key: str, path: str, *, sha256: str, content_type: str = "application/octet-stream") -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            response = self._request("PUT", key, body=handle, size=size, sha256=sha256,
                                     headers={"Content-Type": content_type})  # fmt: skip
            response.read()
            response.close()

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        response = self._request("PUT", key, body=data, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                 headers={"Content-Type": content_type})  # fmt: skip
        response.read()
        response.close()

    def get(self, key: str, out: IO[bytes]) -> int:
        """Write the object to `out`; its size."""
        response = self._request("GET", key)
        size = 0
        try:
            while block := response.read(CHUNK):
                out.write(block)
                size += len(block)
        finally:
            response.close()
        return size

    def get_bytes(self, key: str) -> bytes:
        response = self._request("GET", key)
        try:
            return response.read()
        finally:
            response.close()

    def delete(self, key: str) -> None:
        response = self._request("DELETE", key)
        response.read()
        response.close()

    def list(self, prefix: str, *, delimiter: str = "") -> tuple[list[str], list[str]]:
        """Keys and common prefixes under `prefix` (ListObjectsV2, every page)."""
        keys: list[str] = []
        prefixes: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            response = self._request("GET", "", query=query)
            try:
                root = ET.fromstring(response.read())
            finally:
                response.close()
            keys += [e.text or "" for e in root.iter(f"{S3_NS}Key")]
            prefixes += [e.text or "" for e in root.iter(f"{S3_NS}Prefix") if e.text and e.text != prefix]
            truncated = (root.findtext(f"{S3_NS}IsTruncated") or "false").lower() == "true"
            token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
            if not truncated or not token:
                return keys, prefixes


# --- settings ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    s3: S3
    prefix: str
    store: str
    engine: str
    kind: str
    chart_version: str
    retention: int
    work: str
    content: str
    restore_from: str
    restore_replace: bool = False

    def store_prefix(self, store: str | None = None) -> str:
        return "/".join(p for p in (self.prefix, store or self.store) if p) + "/"


def settings(env: dict[str, str]) -> Settings:
    def need(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise SettingsError(f"{name} is not set")
        return value

    store = need("STORE_ID")
    if not STORE_ID.match(store):
        raise SettingsError(f"STORE_ID {store!r} is not a store id (DNS-1123 label)")
    kind = env.get("BACKUP_KIND", "").strip() or "scheduled"
    if kind not in KINDS:
        raise SettingsError(f"BACKUP_KIND {kind!r} is not one of {', '.join(KINDS)}")
    try:
        retention = int(env.get("RETENTION", "").strip() or "7")
    except ValueError:
        raise SettingsError(f"RETENTION {env.get('RETENTION')!r} is not a whole number") from None
    if retention < 1:
        raise SettingsError(f"RETENTION {retention} must be at least 1")
    s3 = S3(
        endpoint=need("S3_ENDPOINT").rstrip("/"),
        bucket=need("S3_BUCKET"),
        access_key=need("AWS_ACCESS_KEY_ID"),
        secret_key=need("AWS_SECRET_ACCESS_KEY"),
        region=env.get("S3_REGION", "").strip() or "us-east-1",
        ca_file=env.get("S3_CA_FILE") or None,
    )
    return Settings(
        s3=s3,
        prefix=env.get("S3_PREFIX", "").strip().strip("/"),
        store=store,
        engine=env.get("ENGINE", "").strip(),
        kind=kind,
        chart_version=env.get("CHART_VERSION", "").strip(),
        retention=retention,
        work=env.get("WORK_DIR", "/work"),
        content=env.get("CONTENT_DIR", "/content"),
        restore_from=env.get("RESTORE_FROM", "").strip(),
        restore_replace=env.get("RESTORE_REPLACE", "").strip().lower() in ("1", "true", "yes"),
    )


# --- backup --------------------------------------------------------------------------------------


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def backup_id(now: datetime.datetime, kind: str) -> str:
    return f"{now.astimezone(datetime.UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}"


def _gzip(source: str, target: str) -> None:
    # mtime 0: the same dump gives the same file.
    with open(source, "rb") as src, open(target, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0
    ) as out:  # fmt: skip
        shutil.copyfileobj(src, out, CHUNK)


def _tar(content: str, target: str) -> int:
    """files.tar.gz of everything in `content` but SKIPPED at its top; the number of entries."""
    count = 0
    with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(content)) if os.path.isdir(content) else []:
            if name in SKIPPED:
                continue
            tar.add(os.path.join(content, name), arcname=name)
        count = len(tar.getmembers())
    return count


def backup(config: Settings, *, now: datetime.datetime | None = None) -> dict[str, object]:
    """Upload one backup of the store; its manifest."""
    now = now or datetime.datetime.now(datetime.UTC)
    ident = backup_id(now, config.kind)
    base = config.store_prefix() + ident + "/"
    dump = os.path.join(config.work, "database.sql")
    if not os.path.isfile(dump):
        raise BackupError(f"{dump} is missing: the database dump did not run")
    staged = {DATABASE: os.path.join(config.work, DATABASE), FILES: os.path.join(config.work, FILES)}
    _gzip(dump, staged[DATABASE])
    entries = _tar(config.content, staged[FILES])
    files: dict[str, dict[str, object]] = {}
    for name, path in staged.items():
        digest = _sha256_file(path)
        config.s3.put(base + name, path, sha256=digest, content_type="application/gzip")
        files[name] = {"size": os.path.getsize(path), "sha256": digest}
        log(f"uploaded {base}{name} ({files[name]['size']} bytes)")
    manifest: dict[str, object] = {
        "store": config.store,
        "engine": config.engine,
        "kind": config.kind,
        "created": now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "id": ident,
        "files": files,
        "contentEntries": entries,
    }
    if config.chart_version:
        manifest["chartVersion"] = config.chart_version
    # Last: the backup exists from here on.
    config.s3.put_bytes(base + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    log(f"backup {config.store}/{ident} complete")
    if config.kind == "scheduled":
        prune(config)
    return manifest


@dataclasses.dataclass(frozen=True)
class Listed:
    id: str
    kind: str
    complete: bool


def listed(config: Settings, store: str | None = None) -> list[Listed]:
    """The store's backups (complete or not), newest first."""
    root = config.store_prefix(store)
    keys, _ = config.s3.list(root)
    found: dict[str, bool] = {}
    for key in keys:
        ident, _, name = key[len(root):].partition("/")
        match = BACKUP_ID.match(ident)
        if not match:
            continue
        found[ident] = found.get(ident, False) or name == MANIFEST
    out = [Listed(id=i, kind=BACKUP_ID.match(i).group("kind"), complete=c) for i, c in found.items()]  # type: ignore[union-attr]
    return sorted(out, key=lambda b: b.id, reverse=True)


def delete_backup(config: Settings, ident: str) -> None:
    """The manifest first (the backup is then incomplete, so ignored), then the rest."""
    base = config.store_prefix() + ident + "/"
    keys, _ = config.s3.list(base)
    for key in sorted(keys, key=lambda k: k != base + MANIFEST):
        config.s3.delete(key)
    log(f"deleted {config.store}/{ident}")


def prune(config: Settings) -> list[str]:
    """Delete the scheduled backups beyond the newest `retention`, and incomplete scheduled ones older
    than the newest complete one; the ids deleted. Other kinds are never deleted here."""
    scheduled = [b for b in listed(config) if b.kind == "scheduled"]
    complete = [b for b in scheduled if b.complete]
    doomed = [b.id for b in complete[config.retention:]]
    if complete:
        doomed += [b.id for b in scheduled if not b.complete and b.id < complete[0].id]
    for ident in sorted(doomed):
        delete_backup(config, ident)
    return sorted(doomed)


def list_backups(config: Settings) -> Iterator[dict[str, object]]:
    for b in listed(config):
        if b.complete:
            yield json.loads(config.s3.get_bytes(config.store_prefix() + b.id + "/" + MANIFEST))


# --- restore -------------------------------------------------------------------------------------


def parse_from(value: str) -> tuple[str, str]:
    store, _, ident = value.partition("/")
    if not STORE_ID.match(store) or not BACKUP_ID.match(ident):
        raise SettingsError(f"RESTORE_FROM {value!r} is not <store-id>/<backup-id> (e.g. shop/20261127T031700Z-manual)")
    return store, ident


def read_marker(content: str) -> dict[str, str] | None:
    path = os.path.join(content, MARKER)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RefusedError(f"{path} is not a restore marker: {e}") from e
    if not isinstance(data, dict):
        raise RefusedError(f"{path} is not a restore marker")
    return {str(k): str(v) for k, v in data.items()}


def write_marker(content: str, source: str, state: str) -> None:
    path = os.path.join(content, MARKER)
    with open(path + ".tmp", "w") as handle:
        json.dump({"from": source, "state": state}, handle)
        handle.write("\n")
    os.replace(path + ".tmp", path)


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def fetch(config: Settings) -> str:
    """Download and check the backup to restore; what the next steps do: skip, load, files."""
    store, ident = parse_from(config.restore_from)
    marker = read_marker(config.content)
    ours = marker is not None and marker.get("from") == config.restore_from
    if marker is not None and not ours and not config.restore_replace:
        raise RefusedError(
            f"this store was restored from {marker.get('from')!r}, not {config.restore_from!r}: "
            "refusing to restore again (RESTORE_REPLACE replaces its data)"
        )
    if ours and marker is not None and marker.get("state") == "done":
        _touch(os.path.join(config.work, "skip"))
        log(f"already restored from {config.restore_from}: nothing to do")
        return "skip"
    base = config.store_prefix(store) + ident + "/"
    try:
        manifest = json.loads(config.s3.get_bytes(base + MANIFEST))
    except S3Error as e:
        if e.status == 404:
            raise RefusedError(
                f"backup {config.restore_from} has no {MANIFEST}: it is incomplete or does not exist"
            ) from e
        raise
    files = manifest.get("files") or {}
    for name in (DATABASE, FILES):
        if name not in files:
            raise RefusedError(f"backup {config.restore_from}: its manifest lists no {name}")
        download(config.s3, base + name, os.path.join(config.work, name),
                 size=int(files[name]["size"]), sha256=str(files[name]["sha256"]))  # fmt: skip
    with gzip.open(os.path.join(config.work, DATABASE), "rb") as src, open(
        os.path.join(config.work, "database.sql"), "wb"
    ) as out:  # fmt: skip
        shutil.copyfileobj(src, out, CHUNK)
    os.unlink(os.path.join(config.work, DATABASE))
    if ours and marker is not None and marker.get("state") == "files":
        _touch(os.path.join(config.work, "database-done"))
        next_step = "files"
    elif config.restore_replace:
        # The store's data goes: the load step empties the database first, extract the content volume.
        _touch(os.path.join(config.work, "replace"))
        next_step = "replace"
    elif marker is None:
        # No restore has begun: the database must be empty (the load step checks).
        _touch(os.path.join(config.work, "check-empty"))
        next_step = "load"
    else:
        next_step = "load"
    log(f"backup {config.restore_from} fetched and checked (engine {manifest.get('engine')}, "
        f"created {manifest.get('created')}); next: {next_step}")  # fmt: skip
    return next_step


def download(s3: S3, key: str, path: str, *, size: int, sha256: str) -> None:
    """Download `key` to `path`, refusing it unless its size and sha256 are the manifest's."""
    digest = hashlib.sha256()

    class _Hashing:
        def __init__(self, handle: IO[bytes]) -> None:
            self.handle = handle

        def write(self, block: bytes) -> None:
            digest.update(block)
            self.handle.write(block)

    with open(path, "wb") as handle:
        got = s3.get(key, _Hashing(handle))  # type: ignore[arg-type]
    if got != size or digest.hexdigest() != sha256:
        os.unlink(path)
        raise RefusedError(
            f"{key}: {got} bytes with sha256 {digest.hexdigest()}, the manifest says {size} bytes with "
            f"sha256 {sha256}: the backup is corrupted"
        )
    log(f"downloaded {key} ({size} bytes, sha256 checked)")


def extract(config: Settings) -> None:
    """Unpack files.tar.gz into the content volume, then mark the restore done."""
    if os.path.exists(os.path.join(config.work, "skip")):
        log("already restored: nothing to do")
        return
    marker = read_marker(config.content)
    if marker is None or marker.get("from") != config.restore_from or marker.get("state") not in ("files", "done"):
        raise BackupError(f"the database step has not loaded {config.restore_from} (marker: {marker})")
    archive = os.path.join(config.work, FILES)
    if config.restore_replace:
        for name in os.listdir(config.content):
            if name in SKIPPED:
                continue
            path = os.path.join(config.content, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[0] not in SKIPPED]
        # filter="data": no absolute paths, no links out of the folder, no device files, no set-id bits.
        tar.extractall(config.content, members=members, filter="data")
    write_marker(config.content, config.restore_from, "done")
    log(f"files of {config.restore_from} extracted ({len(members)} entries); restore done")


# --- command -------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"backup: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    try:
        config = settings(dict(os.environ))
        if command == "backup":
            backup(config)
        elif command == "list":
            for manifest in list_backups(config):
                print(json.dumps(manifest, sort_keys=True))
        elif command == "fetch":
            fetch(config)
        elif command == "extract":
            extract(config)
        else:
            raise SettingsError(f"usage: backup.py backup|list|fetch|extract (got {command!r})")
    except BackupError as e:
        log(f"error: {e}")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
