"""The Medusa store application (templates/medusa/app), for real, on 127.0.0.1.

What the image does, step by step: `npm ci` of the committed lockfile (cached outside the repository,
keyed by the lockfile), `medusa build` without a database (as in `docker build`, admin dashboard
included), then from `.medusa/server` as the chart runs it: `medusa db:migrate` against a fresh
PostgreSQL, the bootstrap twice (the second run must change nothing), `medusa start`, and a customer's
order through the Store API with the publishable key the bootstrap made, which the admin then finds
through the Admin API with the e-mail and password it was created with. Timings and the server's
memory are printed (`pytest -s`). Telemetry is off; nothing but `npm ci` leaves 127.0.0.1.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import postgres, processes, versions
from harness.images import medusa
from tests import medusa_checkout
from tests.medusa_checkout import ok as _ok

MINIMUM_NODE = medusa.MINIMUM_NODE

# Tables whose row counts may change when nothing in the store does: none so far. A second bootstrap
# run is compared table by table.
VOLATILE_TABLES: frozenset[str] = frozenset()


def _tool(name: str, *extra_dirs: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    found = shutil.which(name, path=search)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def _node_version(node: str) -> tuple[int, int]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.strip().lstrip("v").split(".")[:2]
    return int(major), int(minor)


class Timings:
    """Wall-clock seconds per step, printed in the order they ran."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.notes: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str) -> collections.abc.Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = time.monotonic() - started

    def report(self) -> str:
        parts = [f"{name} {seconds:.1f}s" for name, seconds in self.steps.items()]
        return "medusa app timings: " + ", ".join(parts) + "".join(f"; {note}" for note in self.notes)


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, timeout: float) -> str:
    """Run argv to completion with its output in `log`; fail the test with the log's tail."""
    with log.open("wb") as out:
        try:
            done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(argv)} timed out after {timeout:.0f}s; last lines of {log}:\n{processes.tail(log)}")
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}; last lines of {log}:\n{processes.tail(log)}")
    return log.read_text(errors="replace")


# --- npm ci, cached by lockfile ---------------------------------------------------------------------


def _node_modules(npm: str, timings: Timings) -> Path:
    """node_modules of the committed lockfile: `npm ci` once into the cache, reused while the lock is
    (the same folder the harness's image build uses)."""
    cache = versions.cache_dir() / "npm" / f"medusa-{medusa.lock_key()}"
    if (cache / ".complete").exists():
        timings.notes.append(f"npm ci cached in {cache}")
        return medusa.node_modules(npm)
    with timings.step("npm ci"):
        return medusa.node_modules(npm)


# --- PostgreSQL and Redis on 127.0.0.1 ----------------------------------------------------------------


@contextlib.contextmanager
def _postgres() -> collections.abc.Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster (Debian's binaries) on a free port; yields libpq settings."""
    if postgres.bin_dir() is None:
        pytest.skip("initdb is not installed")
    with postgres.cluster(prefix="storeops-medusa-pg-", user="medusa") as pg:
        yield dict(pg.env)


@contextlib.contextmanager
def _redis(log_dir: Path) -> collections.abc.Iterator[str]:
    server = _tool("redis-server")
    port = processes.free_port()
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = processes.spawn("redis", argv, log_dir=log_dir, tie_to_parent=True)
    try:
        processes.wait_until("redis", lambda: _accepts(port), timeout=30, process=process)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.stop()


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _psql(pg: dict[str, str], sql: str, *, database: str = "medusa") -> str:
    done = subprocess.run(["psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
                          env={**os.environ, **pg}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


ROW_COUNTS = """
SELECT table_name || ' ' || (xpath('/row/c/text()',
         query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text
FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name
"""


def _row_counts(pg: dict[str, str]) -> dict[str, int]:
    counts = dict(line.rsplit(" ", 1) for line in _psql(pg, ROW_COUNTS).splitlines() if line)
    return {table: int(count) for table, count in counts.items() if table not in VOLATILE_TABLES}


# --- the server -----------------------------------------------------------------------------------------


def _group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in the process group, in MiB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=5).text.strip() == "OK"


def _place_order(url: str, key: str, region_id: str) -> str:
    """A customer's checkout through the Store API; returns the order's id."""
    with httpx.Client(base_url=url, headers={"x-publishable-api-key": key}, timeout=60) as store:
        return medusa_checkout.place_order(store, region_id, "buyer@example.test")


def _admin_orders(url: str, email: str, password: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=60) as admin:
        wrong = admin.post("/auth/user/emailpass", json={"email": email, "password": password + "x"})
        assert wrong.status_code == 401, wrong.text
        token = _ok(admin.post("/auth/user/emailpass", json={"email": email, "password": password}))["token"]
        listed = admin.get("/admin/orders", params={"fields": "id,email,total,status"},
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        orders = _ok(listed)["orders"]
        assert isinstance(orders, list)
        return orders


# --- the test -----------------------------------------------------------------------------------------


def test_medusa_store_builds_bootstraps_once_and_takes_an_order(tmp_path: Path) -> None:
    node, npm = _tool("node"), _tool("npm")
    if _node_version(node) < MINIMUM_NODE:
        pytest.skip(f"Medusa 2 needs Node.js >= {'.'.join(map(str, MINIMUM_NODE))}")
    _tool("psql")
    timings = Timings()
    try:
        _build_bootstrap_and_order(tmp_path, npm, timings)
    finally:
        print(timings.report(), flush=True)


def _build_bootstrap_and_order(tmp_path: Path, npm: str, timings: Timings) -> None:
    modules = _node_modules(npm, timings)
    logs = tmp_path / "logs"
    logs.mkdir()
    project = medusa.copy_project(tmp_path / "app", modules)
    home = tmp_path / "home"
    home.mkdir()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "MEDUSA_DISABLE_TELEMETRY": "1",
                "MEDUSA_ADMIN_DISABLED": "false"}  # fmt: skip
    cli = str(modules / ".bin" / "medusa")

    # As `docker build` runs it: no database, no Redis, no secrets.
    with timings.step("build (with admin)"):
        _run([cli, "build"], cwd=project, env=base_env, log=logs / "build.log", timeout=1200)
    server_dir = project / ".medusa" / "server"
    assert (server_dir / "public" / "admin" / "index.html").is_file()
    assert (server_dir / "src" / "scripts" / "bootstrap.js").is_file()
    (server_dir / "node_modules").symlink_to(modules, target_is_directory=True)

    with _postgres() as pg, _redis(logs) as redis_url:
        _psql(pg, "CREATE DATABASE medusa", database="postgres")
        port = processes.free_port()
        url = f"http://127.0.0.1:{port}"
        admin_email, admin_password = "owner@example.test", secrets.token_urlsafe(32)
        env = {
            **base_env,
            # What the chart's store.medusaEnv sets, pointed at 127.0.0.1.
            "DATABASE_URL": f"postgres://medusa:{pg['PGPASSWORD']}@127.0.0.1:{pg['PGPORT']}/medusa?sslmode=disable",
            "REDIS_URL": redis_url,
            "JWT_SECRET": secrets.token_urlsafe(32),
            "COOKIE_SECRET": secrets.token_urlsafe(32),
            "NODE_ENV": "production",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "MEDUSA_BACKEND_URL": url,
            "STORE_CORS": url,
            "ADMIN_CORS": url,
            "AUTH_CORS": url,
        }
        with timings.step("migrate"):
            _run([cli, "db:migrate"], cwd=server_dir, env=env, log=logs / "migrate.log", timeout=900)

        output = tmp_path / "bootstrap.json"
        bootstrap_env = {**env, "ADMIN_EMAIL": admin_email, "ADMIN_PASSWORD": admin_password,
                         "STORE_NAME": "Test Shop", "STORE_BOOTSTRAP_OUTPUT": str(output)}  # fmt: skip
        bootstrap = [cli, "exec", "./src/scripts/bootstrap.js"]
        with timings.step("bootstrap"):
            first_log = _run(bootstrap, cwd=server_dir, env=bootstrap_env, log=logs / "bootstrap-1.log", timeout=600)
        first = json.loads(output.read_text())
        assert admin_password not in first_log
        assert {"admin user", "tax regions us"} <= set(first["changes"]), first["changes"]
        assert first["publishable_key"].startswith("pk_")
        counts = _row_counts(pg)
        for table in ("region", "product", "api_key", "user", "shipping_option", "stock_location", "fulfillment_set"):
            assert counts[table] == 1, f"{table}: {counts[table]} rows"

        with timings.step("bootstrap again"):
            _run(bootstrap, cwd=server_dir, env=bootstrap_env, log=logs / "bootstrap-2.log", timeout=600)
        second = json.loads(output.read_text())
        assert second["changes"] == []
        assert {k: v for k, v in second.items() if k != "changes"} == {k: v for k, v in first.items() if k != "changes"}
        assert _row_counts(pg) == counts

        server = processes.spawn("medusa", [cli, "start"], log_dir=logs, env=env, cwd=server_dir, tie_to_parent=True)
        try:
            with timings.step("server start"):
                processes.wait_until("Medusa's /health", lambda: _healthy(url), timeout=600, interval=1, process=server)
            timings.notes.append(f"server RSS after start {_group_rss_mib(server.pid):.0f} MiB")

            # The Store API wants the publishable key.
            assert httpx.get(f"{url}/store/products", timeout=30).status_code == 400
            with timings.step("order"):
                order_id = _place_order(url, first["publishable_key"], first["region_id"])
                orders = _admin_orders(url, admin_email, admin_password)
            timings.notes.append(f"server RSS after the order {_group_rss_mib(server.pid):.0f} MiB")
            found = [o for o in orders if o["id"] == order_id]
            assert found and found[0]["email"] == "buyer@example.test" and found[0]["total"] == 25, orders
            dashboard = httpx.get(f"{url}/app", timeout=30)
            assert dashboard.status_code == 200 and "<html" in dashboard.text.lower()


            # The rotation Job's engine step: a new password for the admin, through the auth module.
            new_password = secrets.token_urlsafe(32)
            password_file = tmp_path / "new-password"
            password_file.write_text(new_password)
            rotate_env = {**env, "ADMIN_EMAIL": admin_email, "NEW_ADMIN_PASSWORD_FILE": str(password_file)}
            set_password = [cli, "exec", "./src/scripts/set-admin-password.js"]
            with timings.step("set admin password"):
                changed = _run(set_password, cwd=server_dir, env=rotate_env, log=logs / "password-1.log", timeout=600)
            assert f"the password of {admin_email} was changed" in changed and new_password not in changed
            assert order_id in {o["id"] for o in _admin_orders(url, admin_email, new_password)}
            with httpx.Client(base_url=url, timeout=60) as admin:
                old = admin.post("/auth/user/emailpass", json={"email": admin_email, "password": admin_password})
                assert old.status_code == 401, old.text
            again = _run(set_password, cwd=server_dir, env=rotate_env, log=logs / "password-2.log", timeout=600)
            assert "has the new password already" in again
            nobody = _run(set_password, cwd=server_dir, env={**rotate_env, "ADMIN_EMAIL": "nobody@example.test"},
                          log=logs / "password-3.log", timeout=600)  # fmt: skip
            assert "the bootstrap makes it" in nobody
        finally:
            server.stop(timeout=30)
