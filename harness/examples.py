"""Example data for tests, benchmarks and the demo: copies of the example repository, service settings
and reading the remote.

Everything here is real: a copy of the example data, a bare Git remote on disk, the real app.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import yaml

from generator import constants, operations, publishing
from generator.settings import Settings
from webhook.settings import ServiceSettings, Token

ROOT = Path(__file__).resolve().parent.parent
WRITE_TOKEN = "test-write-token"
READ_TOKEN = "test-read-token"
FORM_SECRET = "test-form-secret"


def example_repo(target: Path, *, capacity: int | None = None, per_owner: int | None = None,
                 local_extra: str = "") -> Path:
    """A copy of the example inputs at ``target``; ``capacity`` raises the local cluster's store limit,
    ``per_owner`` sets its ``storesPerOwner``, ``local_extra`` is added to its profile (YAML).

    The local profile's ``backups`` are left out unless ``local_extra`` sets them: a service under test
    without a cluster cannot take the final backup a delete on such a cluster waits for."""
    for folder in (constants.STORES_DIR, constants.CLUSTERS_DIR, constants.TEMPLATES_DIR, constants.RENDERED_DIR,
                   "generator/schemas"):
        shutil.copytree(ROOT / folder, target / folder, symlinks=True)
    if capacity is not None:
        profile = target / constants.CLUSTERS_DIR / "local.yaml"
        text = profile.read_text()
        text = text.replace("  stores: 20\n", f"  stores: {capacity}\n")
        text = text.replace('  cpu: "40"\n', f'  cpu: "{capacity * 4}"\n')
        text = text.replace("  memory: 80Gi\n", f"  memory: {capacity * 8}Gi\n")
        profile.write_text(text)
    if per_owner is not None:
        profile = target / constants.CLUSTERS_DIR / "local.yaml"
        text = profile.read_text()
        assert "  stores: " in text and "storesPerOwner" not in text
        profile.write_text(text.replace("  stores: ", f"  storesPerOwner: {per_owner}\n  stores: ", 1))
    profile = target / constants.CLUSTERS_DIR / "local.yaml"
    before = profile.read_text()
    profile.write_text(with_profile_keys(without_profile_keys(before, "backups"), local_extra))
    if profile.read_text() != before:
        # The copied rendered/ files follow the profile, so a first publish changes no store but a test's.
        operations.render(target, allow_mass_delete=True)
    return target


def with_profile_keys(profile: str, extra: str) -> str:
    """``profile`` (a cluster profile's YAML) with the top-level keys of ``extra`` set to what ``extra`` says:
    their blocks removed (:func:`without_profile_keys`), then ``extra`` appended."""
    keys = [line.split(":", 1)[0] for line in extra.splitlines() if line and not line[0].isspace()
            and not line.startswith("#")]
    return without_profile_keys(profile, *keys) + extra


def without_profile_keys(profile: str, *keys: str) -> str:
    """``profile`` (a cluster profile's YAML) without the top-level ``keys``: their blocks, with the comment
    lines just above them."""
    kept: list[str] = []
    dropping = False
    for line in profile.splitlines(keepends=True):
        top = bool(line.strip()) and not line[0].isspace()
        if top and not line.startswith("#"):
            dropping = line.split(":", 1)[0] in keys
            if dropping:
                while kept and kept[-1].startswith("#"):
                    kept.pop()
        if not dropping:
            kept.append(line)
    return "".join(kept)


def service_settings(tmp: Path, *, capacity: int | None = None, per_owner: int | None = None,
                     local_extra: str = "", **overrides: object) -> ServiceSettings:
    """Settings for a service on a fresh copy of the example data and its own local bare remote."""
    repo = example_repo(tmp / "repo", capacity=capacity, per_owner=per_owner, local_extra=local_extra)
    bare = tmp / "remote.git"
    publishing.seed_remote(bare, repo, "main")
    git = Settings(repo=repo, state_dir=tmp / "state", remote=str(bare))
    base = ServiceSettings(git=git, tokens=(Token(WRITE_TOKEN), Token(READ_TOKEN, write=False)),
                           form_secret=FORM_SECRET, batch_window=0.01, retry_min=0.05, retry_max=0.5)
    return replace(base, **overrides)  # type: ignore[arg-type]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def remote_stores(bare: Path, branch: str = "main") -> dict[str, dict[str, object]]:
    """The store entries on ``branch`` of the bare remote, by id."""
    out: dict[str, dict[str, object]] = {}
    # One commit for the listing and the reads: the branch may move in between (a store deleted meanwhile).
    commit = git(bare, "rev-parse", "--verify", f"{branch}^{{commit}}").strip()
    listing = git(bare, "ls-tree", "--name-only", commit, f"{constants.STORES_DIR}/")
    for path in listing.split():
        if path.endswith(constants.ENTRY_SUFFIX):
            data = yaml.safe_load(git(bare, "show", f"{commit}:{path}"))
            out[data["id"]] = data
    return out


def additions(bare: Path, branch: str = "main") -> dict[str, int]:
    """How many commits on ``branch`` added each store file (exactly once means never doubled)."""
    log = git(bare, "log", "--format=", "--name-only", "--diff-filter=A", branch, "--", f"{constants.STORES_DIR}/")
    counts: dict[str, int] = {}
    for path in log.split():
        counts[path] = counts.get(path, 0) + 1
    return counts


def commit_count(bare: Path, branch: str = "main") -> int:
    return int(git(bare, "rev-list", "--count", branch).strip())


def store_payload(store_id: str, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {"id": store_id, "name": f"Store {store_id}", "engine": "woocommerce",
                               "plan": "small", "cluster": "local",
                               "owner": {"name": "Test Owner", "email": f"owner@{store_id}.example"}}
    data.update(extra)
    return data
