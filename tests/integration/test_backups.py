"""The charts' backup script (templates/storeops-lib/files/backup.py) against a real S3 server and a
real database, on this host.

The server is SeaweedFS (harness/objectstore.py) on 127.0.0.1, fresh for this module, with random
keys; the database is a throwaway PostgreSQL cluster of Debian's binaries. The dump and load commands
are the Medusa chart's own, taken from `helm template` output, run here with the host's pg_dump and
psql; the script runs as the charts run it (python3 backup.py <command>, settings in the environment).
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tarfile
from typing import Any

import pytest
import yaml

from harness import errors, objectstore, postgres, versions

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = objectstore.BACKUP_SCRIPT
FROM = "old-shop/20261127T031700Z-manual"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[objectstore.ObjectStore]:
    try:
        binary = objectstore.binary()
    except errors.MissingBinariesError as e:
        pytest.fail(str(e), pytrace=False)
    assert binary.is_file()
    with objectstore.running(directory=tmp_path_factory.mktemp("seaweedfs")) as running:
        yield running


@pytest.fixture
def backup() -> Any:
    """The script as a module, for calls with a fixed clock; the subprocess runs check the command."""
    return objectstore.client_module()


def _env(store: objectstore.ObjectStore, **extra: str) -> dict[str, str]:
    prefix = extra.pop("S3_PREFIX", "")
    env = {"PATH": os.environ["PATH"], "ENGINE": "medusa", **store.env(prefix=prefix), **extra}
    return env


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def _content(folder: pathlib.Path) -> pathlib.Path:
    (folder / "product-images").mkdir(parents=True)
    (folder / "product-images" / "shirt.png").write_bytes(secrets.token_bytes(5000))
    (folder / "robots.txt").write_text("User-agent: *\n")
    (folder / "lost+found").mkdir()
    return folder


def _work(folder: pathlib.Path, sql: str = "CREATE TABLE t (x int);\n") -> pathlib.Path:
    folder.mkdir(parents=True)
    (folder / "database.sql").write_text(sql)
    return folder


def _settings(backup: Any, store: objectstore.ObjectStore, tmp_path: pathlib.Path, **extra: str) -> Any:
    env = _env(store, STORE_ID=extra.pop("STORE_ID", "shop-" + secrets.token_hex(3)),
               WORK_DIR=str(tmp_path / "work"), CONTENT_DIR=str(tmp_path / "content"), **extra)  # fmt: skip
    return backup.settings(env)


# --- uploads, the manifest, listing ---------------------------------------------------------------


class Recording:
    """The script's real S3 client, noting the key of every PUT in order."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.puts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    def put(self, key: str, path: str, **kwargs: Any) -> None:
        self.puts.append(key)
        self.s3.put(key, path, **kwargs)

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> None:
        self.puts.append(key)
        self.s3.put_bytes(key, data, **kwargs)


def test_a_backup_uploads_the_dump_and_the_files_then_the_manifest_last(
    backup: Any, store: objectstore.ObjectStore, tmp_path: pathlib.Path
) -> None:
    _work(tmp_path / "work", "CREATE TABLE orders (id int);\n")
    _content(tmp_path / "content")
    config = _settings(backup, store, tmp_path, S3_PREFIX="local", CHART_VERSION="0.1.0", BACKUP_KIND="manual")
    recording = Recording(config.s3)
    config = dataclasses.replace(config, s3=recording)
    now = datetime.datetime(2026, 11, 27, 3, 17, 0, tzinfo=datetime.UTC)
    manifest = backup.backup(config, now=now)

    base = f"local/{config.store}/20261127T031700Z-manual/"
    assert recording.puts == [base + "database.sql.gz", base + "files.tar.gz", base + "manifest.json"]
    stored = json.loads(store.client().get_bytes(base + "manifest.json"))  # type: ignore[attr-defined]
    assert stored == manifest
    assert stored["store"] == config.store and stored["engine"] == "medusa" and stored["kind"] == "manual"
    assert stored["created"] == "2026-11-27T03:17:00Z" and stored["chartVersion"] == "0.1.0"
    for name in ("database.sql.gz", "files.tar.gz"):
        data = store.client().get_bytes(base + name)  # type: ignore[attr-defined]
        assert stored["files"][name] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    dump = gzip.decompress(store.client().get_bytes(base + "database.sql.gz"))  # type: ignore[attr-defined]
    assert dump == b"CREATE TABLE orders (id int);\n"
    with tarfile.open(fileobj=io.BytesIO(store.client().get_bytes(base + "files.tar.gz"))) as tar:  # type: ignore[attr-defined]
        names = sorted(tar.getnames())
    # lost+found and the restore marker are the file system's and the restore's, not the store's.
    assert names == ["product-images", "product-images/shirt.png", "robots.txt"]


def test_the_command_runs_as_the_jobs_run_it_and_list_shows_complete_backups_only(
    store: objectstore.ObjectStore, tmp_path: pathlib.Path
) -> None:
    _work(tmp_path / "work")
    _content(tmp_path / "content")
    env = _env(store, STORE_ID="listed-" + secrets.token_hex(3), BACKUP_KIND="manual",
               WORK_DIR=str(tmp_path / "work"), CONTENT_DIR=str(tmp_path / "content"))  # fmt: skip
    done = _run("backup", env)
    assert done.returncode == 0, done.stderr
    # An upload that never got its manifest (a Job killed half-way) is not a backup.
    store.client().put_bytes(f"{env['STORE_ID']}/20991231T000000Z-manual/database.sql.gz", b"partial")  # type: ignore[attr-defined]
    listed = _run("list", env)
    assert listed.returncode == 0, listed.stderr
    manifests = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(manifests) == 1
    assert manifests[0]["kind"] == "manual" and manifests[0]["id"].endswith("-manual")


# --- retention ------------------------------------------------------------------------------------


def test_retention_keeps_the_newest_scheduled_backups_and_never_deletes_other_kinds(
    backup: Any, store: objectstore.ObjectStore, tmp_path: pathlib.Path
) -> None:
    _work(tmp_path / "work")
    _content(tmp_path / "content")
    config = _settings(backup, store, tmp_path, RETENTION="2")
    start = datetime.datetime(2026, 11, 1, 3, 17, tzinfo=datetime.UTC)
    made = []
    for day, kind in enumerate(["final", "scheduled", "manual", "scheduled", "pre-upgrade", "scheduled", "scheduled"]):
        # Only scheduled runs prune, as in the Jobs; the others are taken in between.
        backup.backup(dataclasses.replace(config, kind=kind), now=start + datetime.timedelta(days=day))
        made.append(backup.backup_id(start + datetime.timedelta(days=day), kind))
    # A scheduled run that died before its manifest, older than the newest complete one.
    store.client().put_bytes(f"{config.store}/20261102T000000Z-scheduled/database.sql.gz", b"x")  # type: ignore[attr-defined]

    backup.backup(config, now=start + datetime.timedelta(days=10))
    kept = {b.id for b in backup.listed(config)}
    newest_scheduled = backup.backup_id(start + datetime.timedelta(days=10), "scheduled")
    assert kept == {made[0], made[2], made[4], made[6], newest_scheduled}, "two scheduled kept, and every other kind"
    assert all(b.complete for b in backup.listed(config))
    assert backup.prune(config) == []


# --- downloads, corruption, authentication --------------------------------------------------------


def test_fetch_checks_every_file_against_the_manifest_and_refuses_a_corrupted_one(
    store: objectstore.ObjectStore, tmp_path: pathlib.Path
) -> None:
    _work(tmp_path / "made" / "work", "SELECT 1;\n")
    _content(tmp_path / "made" / "content")
    old = "old-" + secrets.token_hex(3)
    made = _env(store, STORE_ID=old, BACKUP_KIND="manual", WORK_DIR=str(tmp_path / "made" / "work"),
                CONTENT_DIR=str(tmp_path / "made" / "content"))  # fmt: skip
    assert _run("backup", made).returncode == 0
    ident = json.loads(_run("list", made).stdout.splitlines()[0])["id"]

    (tmp_path / "work").mkdir()
    (tmp_path / "content").mkdir()
    env = _env(store, STORE_ID="new-" + secrets.token_hex(3), RESTORE_FROM=f"{old}/{ident}",
               WORK_DIR=str(tmp_path / "work"), CONTENT_DIR=str(tmp_path / "content"))  # fmt: skip
    fetched = _run("fetch", env)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "work" / "database.sql").read_text() == "SELECT 1;\n"
    assert (tmp_path / "work" / "check-empty").exists(), "a first restore makes the load step check the database"

    # The same object with other bytes (same size): refused, nothing kept, exit 3 (no retry helps).
    key = f"{old}/{ident}/files.tar.gz"
    original = store.client().get_bytes(key)  # type: ignore[attr-defined]
    store.client().put_bytes(key, bytes([original[0] ^ 0xFF]) + original[1:])  # type: ignore[attr-defined]
    shutil.rmtree(tmp_path / "work")
    (tmp_path / "work").mkdir()
    refused = _run("fetch", env)
    assert refused.returncode == 3, refused.stderr
    assert "corrupted" in refused.stderr and "sha256" in refused.stderr
    assert not (tmp_path / "work" / "files.tar.gz").exists()


def test_a_wrong_secret_key_is_refused_by_the_server(backup: Any, store: objectstore.ObjectStore) -> None:
    with pytest.raises(backup.S3Error) as refused:
        store.client(secret_key="not-the-key").list("")  # type: ignore[attr-defined]
    assert refused.value.status == 403
    assert refused.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    env = {**store.env(), "PATH": os.environ["PATH"], "STORE_ID": "shop", "AWS_SECRET_ACCESS_KEY": "not-the-key"}
    listed = _run("list", env)
    assert listed.returncode == 2, listed.stderr
    assert "403" in listed.stderr


def test_bad_settings_exit_2_with_a_message_naming_them(store: objectstore.ObjectStore) -> None:
    for extra, message in [({"BACKUP_KIND": "hourly"}, "BACKUP_KIND 'hourly'"), ({"STORE_ID": "Shop!"}, "STORE_ID"),
                           ({"RESTORE_FROM": "shop/yesterday"}, "RESTORE_FROM 'shop/yesterday'")]:  # fmt: skip
        env = {"PATH": os.environ["PATH"], "STORE_ID": "shop", **store.env(), **extra}
        result = _run("fetch" if "RESTORE_FROM" in extra else "backup", env)
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr


# --- a real PostgreSQL database through the Medusa chart's own commands ---------------------------


@contextlib.contextmanager
def _postgres() -> collections.abc.Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster (Debian's binaries) on a free port, database medusa; libpq settings."""
    with postgres.cluster(prefix="storeops-backup-pg-", user="medusa") as pg:
        pg.create_database("medusa")
        yield {**pg.env, "PGDATABASE": "medusa", "PATH": f"{pg.bin_dir}:{os.environ['PATH']}"}


def _medusa_chart(tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    helm = versions.binaries().helm
    if not helm.exists():
        pytest.fail(f"{helm} is not built; run `{versions.BUILD_COMMAND}`", pytrace=False)
    values = {"backup": {"enabled": True, "s3": {"endpoint": "http://s3.example:8333", "bucket": "backups"}},
              "restore": {"from": FROM}}  # fmt: skip
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = subprocess.run([str(helm), "template", "store-shop", str(REPO / "templates" / "medusa"), "--namespace",
                          "store-shop", "--values", str(tmp_path / "values.yaml")],
                         capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def _script(container: dict[str, Any], work: pathlib.Path, content: pathlib.Path) -> list[str]:
    """The container's `sh -ec <script>` with its /work and /content folders moved to these."""
    assert container["command"][:2] == ["sh", "-ec"]
    script = container["command"][2].replace("/work/", f"{work}/").replace("/content/", f"{content}/")
    return ["sh", "-ec", script]


def _psql(env: dict[str, str], sql: str) -> str:
    return subprocess.run(["psql", "-tAqc", sql], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_a_postgres_store_is_dumped_and_restored_by_the_charts_own_commands(
    store: objectstore.ObjectStore, tmp_path: pathlib.Path
) -> None:
    manifests = _medusa_chart(tmp_path)
    cron = next(m for m in manifests if m["kind"] == "CronJob" and m["metadata"]["name"] == "backup")
    dump = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]
    restore = next(m for m in manifests if m["kind"] == "Job" and m["metadata"]["name"] == "restore")
    load = next(c for c in restore["spec"]["template"]["spec"]["initContainers"] if c["name"] == "load")

    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        (folder / "work").mkdir(parents=True)
        (folder / "content").mkdir()
    (old / "content" / "logo.png").write_bytes(b"\x89PNG logo")
    with _postgres() as db:
        _psql(db, "CREATE TABLE product (id serial PRIMARY KEY, title text); "
                  "INSERT INTO product (title) VALUES ('Shirt'), ('Mug'); "
                  "CREATE TABLE \"order\" (id serial PRIMARY KEY, product int REFERENCES product, qty int); "
                  "INSERT INTO \"order\" (product, qty) VALUES (2, 3)")  # fmt: skip
        subprocess.run(_script(dump, old / "work", old / "content"), env=db, check=True, capture_output=True)
        made = _env(store, STORE_ID="old-shop", BACKUP_KIND="manual", WORK_DIR=str(old / "work"),
                    CONTENT_DIR=str(old / "content"))  # fmt: skip
        uploaded = _run("backup", made)
        assert uploaded.returncode == 0, uploaded.stderr
    ident = json.loads(_run("list", made).stdout.splitlines()[0])["id"]
    source = f"old-shop/{ident}"
    load["command"][2] = load["command"][2].replace(FROM, source)

    with _postgres() as db:
        env = _env(store, STORE_ID="new-shop", RESTORE_FROM=source, WORK_DIR=str(new / "work"),
                   CONTENT_DIR=str(new / "content"))  # fmt: skip
        steps = [lambda: _run("fetch", env),
                 lambda: subprocess.run(_script(load, new / "work", new / "content"), env=db, capture_output=True,
                                        text=True, check=False),
                 lambda: _run("extract", env)]  # fmt: skip
        for step in steps:
            result = step()
            assert result.returncode == 0, result.stdout + result.stderr
        assert _psql(db, "SELECT title FROM product ORDER BY id") == "Shirt\nMug"
        assert _psql(db, 'SELECT p.title, o.qty FROM "order" o JOIN product p ON p.id = o.product') == "Mug|3"
        assert (new / "content" / "logo.png").read_bytes() == b"\x89PNG logo"
        assert json.loads((new / "content" / ".storeops-restore").read_text()) == {"from": source, "state": "done"}

        # Again (every sync runs the hook): nothing is downloaded or loaded, the order made since stays.
        _psql(db, 'INSERT INTO "order" (product, qty) VALUES (1, 1)')
        shutil.rmtree(new / "work")
        (new / "work").mkdir()
        for step in steps:
            result = step()
            assert result.returncode == 0, result.stdout + result.stderr
        assert not (new / "work" / "database.sql").exists()
        assert _psql(db, 'SELECT count(*) FROM "order"') == "2"

        # A rollback: this store's own backup, then a change that fails half-way (a table of a forward
        # migration, a file), then its backup restored over it with RESTORE_REPLACE.
        mine = _env(store, STORE_ID="new-shop", BACKUP_KIND="pre-upgrade", WORK_DIR=str(new / "work"),
                    CONTENT_DIR=str(new / "content"))  # fmt: skip
        shutil.rmtree(new / "work")
        (new / "work").mkdir()
        subprocess.run(_script(dump, new / "work", new / "content"), env=db, check=True, capture_output=True)
        assert _run("backup", mine).returncode == 0
        before = f"new-shop/{json.loads(_run('list', mine).stdout.splitlines()[0])['id']}"
        _psql(db, "CREATE TABLE migration_v2 (x int); DELETE FROM \"order\"")
        (new / "content" / "v2-only.png").write_bytes(b"v2")
        rollback = {**env, "RESTORE_FROM": before}
        shutil.rmtree(new / "work")
        (new / "work").mkdir()
        refused = _run("fetch", rollback)
        assert refused.returncode == 3 and "RESTORE_REPLACE" in refused.stderr, refused.stderr
        load_before = copy.deepcopy(load)
        load_before["command"][2] = load_before["command"][2].replace(source, before)
        replace = {**rollback, "RESTORE_REPLACE": "true"}
        for step in (lambda: _run("fetch", replace),
                     lambda: subprocess.run(_script(load_before, new / "work", new / "content"), env=db,
                                            capture_output=True, text=True, check=False),
                     lambda: _run("extract", replace)):  # fmt: skip
            result = step()
            assert result.returncode == 0, result.stdout + result.stderr
        assert _psql(db, 'SELECT count(*) FROM "order"') == "2"
        assert _psql(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'migration_v2'") == "0"
        assert sorted(p.name for p in (new / "content").iterdir()) == [".storeops-restore", "logo.png"]
        assert json.loads((new / "content" / ".storeops-restore").read_text()) == {"from": before, "state": "done"}

    # A store that has data of its own and no marker: the load step refuses (exit 3) and changes nothing.
    other = tmp_path / "other"
    (other / "work").mkdir(parents=True)
    (other / "content").mkdir()
    with _postgres() as db:
        _psql(db, "CREATE TABLE mine (x int); INSERT INTO mine VALUES (42)")
        env = _env(store, STORE_ID="other-shop", RESTORE_FROM=source, WORK_DIR=str(other / "work"),
                   CONTENT_DIR=str(other / "content"))  # fmt: skip
        assert _run("fetch", env).returncode == 0
        refused = subprocess.run(_script(load, other / "work", other / "content"), env=db, capture_output=True,
                                 text=True, check=False)  # fmt: skip
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "refusing" in refused.stdout
        assert _psql(db, "SELECT x FROM mine") == "42"
        assert _psql(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'product'") == "0"
        assert not (other / "content" / ".storeops-restore").exists()
        assert _run("extract", env).returncode == 1, "no files without the database"
