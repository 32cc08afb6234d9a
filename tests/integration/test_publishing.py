"""publish against real bare Git remotes: commits built from data, no empty commits, no force."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from generator import constants, publishing
from generator.errors import GitError, MassDeleteRefused, PushRefused
from generator.settings import Settings
from tests.conftest import git

STORE = """\
# yaml-language-server: $schema=../generator/schemas/store.schema.json
id: {id}
name: Shop {id}
engine: woocommerce
plan: small
cluster: local
owner:
  name: Pat
  email: pat@example.com
"""


def settings_for(tmp_path: Path, remote: Path | str, name: str = "a") -> Settings:
    return Settings(remote=str(remote), state_dir=tmp_path / f"state-{name}", push_attempts=20)


def remote_file(remote: Path, path: str) -> str:
    return git(remote, "show", f"main:{path}")


def add_store_edit(store_id: str) -> publishing.Edit:
    def edit(root: Path) -> list[str]:
        (root / f"stores/{store_id}.yaml").write_text(STORE.format(id=store_id))
        return [f"stores/{store_id}.yaml"]
    return edit


def test_nothing_to_publish_makes_no_commit(tmp_path: Path, bare_remote: Path) -> None:
    head = git(bare_remote, "rev-parse", "main")
    result = publishing.publish(settings_for(tmp_path, bare_remote))
    assert not result.committed
    assert result.sha == head == git(bare_remote, "rev-parse", "main")


def test_publish_renders_what_a_person_pushed(tmp_path: Path, example_repo: Path, bare_remote: Path) -> None:
    # A person merges a new store entry without rendering.
    (example_repo / "stores/pages.yaml").write_text(STORE.format(id="pages"))
    (example_repo / "stores/coffee-lab.yaml").unlink()
    git(example_repo, "add", "-A")
    git(example_repo, "commit", "-qm", "Add pages, remove coffee-lab")
    git(example_repo, "push", "-q", str(bare_remote), "main")
    merged = git(bare_remote, "rev-parse", "main")

    result = publishing.publish(settings_for(tmp_path, bare_remote))
    assert result.committed
    assert git(bare_remote, "rev-parse", "main") == result.sha
    assert git(bare_remote, "rev-parse", "main~1") == merged
    message = git(bare_remote, "log", "-1", "--format=%B", "main")
    assert message.splitlines()[0] == "Render stores: add pages; remove coffee-lab"
    assert "Added: pages" in message and "Removed: coffee-lab" in message
    assert f"{constants.COMMIT_TRAILER}: {merged}" in message
    assert "store-pages" in remote_file(bare_remote, "rendered/local/apps/pages.yaml")
    files = git(bare_remote, "show", "--no-renames", "--name-only", "--format=", "main").splitlines()
    assert sorted(files) == ["rendered/local/apps/pages.yaml", "rendered/local/values/pages.yaml",
                             "rendered/prod/apps/coffee-lab.yaml", "rendered/prod/values/coffee-lab.yaml"]
    # Publishing again finds nothing to do.
    again = publishing.publish(settings_for(tmp_path, bare_remote))
    assert not again.committed and again.sha == result.sha


def test_edit_and_render_land_in_one_commit(tmp_path: Path, bare_remote: Path) -> None:
    result = publishing.publish(settings_for(tmp_path, bare_remote), edit=add_store_edit("shop1"))
    assert result.committed and result.edited == ("stores/shop1.yaml",)
    files = git(bare_remote, "show", "--no-renames", "--name-only", "--format=", "main").splitlines()
    assert sorted(files) == ["rendered/local/apps/shop1.yaml", "rendered/local/values/shop1.yaml",
                             "stores/shop1.yaml"]


def test_two_clones_publishing_at_once_both_land_without_force(tmp_path: Path, bare_remote: Path) -> None:
    git(bare_remote, "config", "receive.denyNonFastForwards", "true")
    base = git(bare_remote, "rev-parse", "main")
    ids = [f"{side}{i}" for i in range(3) for side in ("left", "right")]
    barrier = threading.Barrier(2)
    results: dict[str, publishing.Published] = {}
    failures: list[BaseException] = []

    def worker(side: str) -> None:
        try:
            for store_id in ids:
                if store_id.startswith(side):
                    barrier.wait(timeout=60)
                    results[store_id] = publishing.publish(settings_for(tmp_path, bare_remote, side),
                                                           edit=add_store_edit(store_id))
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(side,)) for side in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not failures, failures
    assert all(r.committed for r in results.values())
    history = git(bare_remote, "rev-list", "--first-parent", f"{base}..main").splitlines()
    assert len(history) == len(ids)
    assert git(bare_remote, "rev-list", "--merges", f"{base}..main") == ""
    assert {r.sha for r in results.values()} == set(history)
    for store_id in ids:
        assert f"store-{store_id}" in remote_file(bare_remote, f"rendered/local/apps/{store_id}.yaml")
    # At least one side had to re-render on top of the other.
    assert max(r.attempts for r in results.values()) >= 2, [r.attempts for r in results.values()]


def test_default_remote_is_seeded_from_the_repository(tmp_path: Path, example_repo: Path) -> None:
    settings = Settings(repo=example_repo, state_dir=tmp_path / "state")
    result = publishing.publish(settings, edit=add_store_edit("seeded"))
    remote = tmp_path / "state" / "remote.git"
    assert result.committed
    assert git(remote, "rev-parse", "main") == result.sha
    assert "store-seeded" in remote_file(remote, "rendered/local/apps/seeded.yaml")
    assert remote_file(remote, "stores/bookworm.yaml") == (example_repo / "stores/bookworm.yaml").read_text().strip()


def test_publish_refuses_mass_delete(tmp_path: Path, bare_remote: Path) -> None:
    def remove_all(root: Path) -> list[str]:
        removed = []
        for entry in sorted((root / "stores").glob("*.yaml")):
            entry.unlink()
            removed.append(f"stores/{entry.name}")
        return removed

    head = git(bare_remote, "rev-parse", "main")
    with pytest.raises(MassDeleteRefused):
        publishing.publish(settings_for(tmp_path, bare_remote), edit=remove_all)
    assert git(bare_remote, "rev-parse", "main") == head
    result = publishing.publish(settings_for(tmp_path, bare_remote), edit=remove_all, allow_mass_delete=True)
    assert result.committed and sorted(result.changes.removed) == ["acme-outdoor", "bookworm", "coffee-lab",
                                                                   "nordic-knits"]


def test_unreachable_remote_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="cannot clone"):
        publishing.publish(settings_for(tmp_path, tmp_path / "missing.git"))


def test_default_remote_with_a_relative_state_dir(tmp_path: Path, example_repo: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(repo=example_repo, state_dir=Path(".storeops"))
    result = publishing.publish(settings, edit=add_store_edit("relative"))
    assert result.committed
    assert git(tmp_path / ".storeops/remote.git", "rev-parse", "main") == result.sha


def test_a_push_refused_by_a_server_side_hook_says_so_once(tmp_path: Path, bare_remote: Path) -> None:
    hook = bare_remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen for the audit' >&2\nexit 1\n")
    hook.chmod(0o755)
    attempts = settings_for(tmp_path, bare_remote)
    head = git(bare_remote, "rev-parse", "main")
    with pytest.raises(PushRefused) as refused:
        publishing.publish(attempts, edit=add_store_edit("frozen"))
    message = str(refused.value)
    assert "refused the push" in message and "main is frozen for the audit" in message
    assert "pre-receive hook declined" in message and "kept moving" not in message
    assert git(bare_remote, "rev-parse", "main") == head


def test_a_lost_default_remote_is_an_error_not_a_fresh_seed(tmp_path: Path, example_repo: Path) -> None:
    settings = Settings(repo=example_repo, state_dir=tmp_path / "state")
    first = publishing.publish(settings, edit=add_store_edit("kept"))
    assert first.committed
    shutil.rmtree(settings.default_remote)
    with pytest.raises(GitError, match="is missing, but this state directory"):
        publishing.publish(settings, edit=add_store_edit("after-loss"))
    assert not settings.default_remote.exists()


def test_a_clone_left_with_untracked_files_the_branch_has_syncs_to_the_branch(tmp_path: Path,
                                                                             bare_remote: Path) -> None:
    """A publish cut short by kill -9 after it wrote files, in a clone behind a push that added them since."""
    behind = settings_for(tmp_path, bare_remote, "behind")
    publishing.publish(behind)  # the clone exists, at the remote's branch as it is now
    ahead = settings_for(tmp_path, bare_remote, "ahead")
    publishing.publish(ahead, edit=add_store_edit("left"))
    (behind.workdir / "stores/left.yaml").write_text("half-written by a process that died\n")
    repo = publishing.open_workdir(behind, publishing.remote_url(behind))
    sha = publishing.sync(repo, behind.branch)
    assert sha == git(bare_remote, "rev-parse", "main").strip()
    assert (behind.workdir / "stores/left.yaml").read_text() == STORE.format(id="left")
