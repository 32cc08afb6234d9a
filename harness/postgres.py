"""A throwaway PostgreSQL cluster of Debian's binaries on a free loopback port, for tests.

``initdb`` refuses to run as root: as root the cluster is made and run as ``nobody``, in a folder
under the system's temp dir (not pytest's ``tmp_path``, which ``nobody`` cannot enter). The cluster is
stopped and its folder removed on exit, whatever happened.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import glob
import os
import pathlib
import secrets
import shutil
import subprocess
import tempfile
import urllib.parse

from harness import processes

__all__ = ["Cluster", "bin_dir", "cluster"]


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A running cluster: its superuser's libpq settings (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``)."""

    env: dict[str, str]
    bin_dir: pathlib.Path
    folder: pathlib.Path

    def url(self, database: str = "postgres") -> str:
        password = urllib.parse.quote(self.env["PGPASSWORD"], safe="")
        return (f"postgresql://{self.env['PGUSER']}:{password}@{self.env['PGHOST']}:{self.env['PGPORT']}/"
                f"{database}")

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` with psql (stops on the first error); its unaligned, tuples-only output."""
        done = subprocess.run([str(self.bin_dir / "psql"), "-X", "-tAq", "-v", "ON_ERROR_STOP=1", "-d", database,
                               "-c", sql], env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def bin_dir() -> pathlib.Path | None:
    """The newest of Debian's PostgreSQL server binary folders (``/usr/lib/postgresql/<major>/bin``), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(pathlib.Path(p).parent.name))
    return pathlib.Path(found[-1]) if found else None


@contextlib.contextmanager
def cluster(*, prefix: str = "storeops-pg-", user: str = "storeops", host: str = "127.0.0.1",
            clients: str = "") -> collections.abc.Iterator[Cluster]:
    """Start a cluster with superuser ``user`` (password authentication) on ``host``; stop it on exit.

    clients: a network (CIDR) besides loopback allowed to connect, e.g. the node's pods when ``host`` is the
    node's bridge gateway."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL's server binaries (Debian's postgresql) are not installed")
    folder = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        folder.chmod(0o777)
        run_as = ["runuser", "-u", "nobody", "--"]
    port, password = str(processes.free_port()), secrets.token_urlsafe(16)
    (folder / "pw").write_text(password)
    (folder / "pw").chmod(0o644)
    data = folder / "data"
    try:
        subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
                        f"--pwfile={folder / 'pw'}"], check=True, capture_output=True)  # fmt: skip
        if clients:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {clients} scram-sha-256\n")
        # fsync off: a throwaway cluster; what the tests check is the service's transactions, not the disk's.
        options = (f"-c listen_addresses={host} -c port={port} -c unix_socket_directories={folder} "
                   f"-c fsync=off -c max_connections=200")
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "start", "-l",
                        str(folder / "pg.log")], check=True, capture_output=True)  # fmt: skip
        yield Cluster(env={"PGHOST": host, "PGPORT": port, "PGUSER": user, "PGPASSWORD": password},
                      bin_dir=binaries, folder=folder)
    finally:
        if data.is_dir():
            subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
