"""Shared fixtures: example repositories on disk and the control plane from harness/."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import postgres
from webhook.state import Location

pytest_plugins = ["tests.controlplane"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What a GitOps repository holds: the data folders of this one.
DATA_FOLDERS = ("stores", "clusters", "templates", "argocd", "rendered", "generator/schemas")


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True,
                            env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
                                 "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test",
                                 "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(cwd)})
    return result.stdout.strip()


def copy_example(target: Path, *, with_git: bool = True) -> Path:
    """A copy of the example data folders at ``target``, committed on ``main`` when ``with_git``."""
    target.mkdir(parents=True, exist_ok=True)
    for folder in DATA_FOLDERS:
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(REPO_ROOT / folder, target / folder, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
    if with_git:
        git(target, "init", "-q", "-b", "main")
        git(target, "add", "-A")
        git(target, "commit", "-qm", "example")
    return target


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A git checkout holding the example stores, clusters, plans, charts and rendered output."""
    return copy_example(tmp_path / "repo")


@pytest.fixture
def bare_remote(tmp_path: Path, example_repo: Path) -> Path:
    """A bare repository whose main branch is the example repository."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(example_repo, "push", "-q", str(bare), "main:main")
    return bare


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """With STOREOPS_NO_SKIPS=1 (CI sets it), a skipped test fails with its reason: CI runs every test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("STOREOPS_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, and STOREOPS_NO_SKIPS=1 forbids skips here: {reason}"
    return None


# --- the service's state on PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """One throwaway PostgreSQL cluster (Debian's binaries) for the session; each test takes a database."""
    if postgres.bin_dir() is None:
        pytest.skip("PostgreSQL's server binaries (Debian's postgresql) are not installed")
    with postgres.cluster(prefix="storeops-state-pg-") as pg:
        yield pg


@pytest.fixture
def database_url(postgres_cluster: postgres.Cluster) -> str:
    """A new, empty PostgreSQL database: what ``STOREOPS_DATABASE_URL`` would name."""
    return postgres_cluster.create_database("state_" + secrets.token_hex(6))


@pytest.fixture(params=["sqlite", "postgresql"])
def state_at(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Location]:
    """Where a state module keeps its tables, on each backend: ``state_at("service.sqlite3")`` is that file
    under ``tmp_path``, or one fresh PostgreSQL database (the same for every name, as in the service)."""
    if request.param == "sqlite":
        return lambda name: tmp_path / name
    url = str(request.getfixturevalue("database_url"))
    return lambda name: url
