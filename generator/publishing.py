"""Publishing: render on top of the remote's branch, commit, push; retry when the remote moved.

``publish`` works in a clone that storeops owns (``Settings.workdir``). Each attempt starts from
the remote's branch, applies the caller's edit (the intake service writes store entries there),
renders, and pushes without force. A rejected push means someone else landed first: the attempt
is thrown away and redone on top of their commit. Nothing is committed when nothing changed.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from generator import constants, operations, planning
from generator.errors import GitError, PushConflict, PushRefused
from generator.settings import Settings

log = logging.getLogger(__name__)

#: Folders copied from the example repository when storeops seeds a new local remote.
SEED_FOLDERS = (constants.STORES_DIR, constants.CLUSTERS_DIR, constants.TEMPLATES_DIR, constants.ARGOCD_DIR,
                constants.RENDERED_DIR, "generator/schemas")

#: An edit applied to the work tree before rendering; returns the repo-relative paths it touched.
Edit = Callable[[Path], list[str]]

#: What git prints when someone else's push landed first: fetch, re-render on top, try again. The
#: server-side ones come as "[remote rejected] ... (reason)"; any other reason is a refusal.
_RACED_ON_SERVER = ("cannot lock ref", "failed to update ref", "stale info", "incorrect old value")
_RACED = ("[rejected]", "non-fast-forward", "fetch first", *_RACED_ON_SERVER)


@dataclass(frozen=True)
class Published:
    sha: str
    changes: planning.ChangeSet
    committed: bool
    attempts: int
    edited: tuple[str, ...] = ()


#: Left in the state directory when it seeds its default remote: from then on the remote must be there.
SEEDED_MARKER = "remote.seeded"


def remote_url(settings: Settings) -> str:
    """The remote to publish to, seeding the default local bare repository in a new state directory.

    A state directory that seeded its remote once never seeds it again: if the remote is gone, the
    commits it held (accepted requests among them) are gone with it, and seeding a fresh copy of the
    examples would hide that. That is an error to fix by hand (restore the remote, or start over with
    an empty state directory).
    """
    if settings.remote:
        return settings.remote
    bare = settings.default_remote
    marker = settings.state_dir / SEEDED_MARKER
    if not (bare / "HEAD").exists():
        if marker.exists():
            raise GitError(f"the local remote {bare} is missing, but this state directory "
                           f"({settings.state_dir}) made it on {marker.read_text().strip()}: its commits are lost. "
                           "Restore it from a backup, or empty the state directory to start a new one")
        seed_remote(bare, settings.repo, settings.branch)
        marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S %Z") + "\n")
    return str(bare.resolve())


def seed_remote(bare: Path, source: Path, branch: str) -> None:
    """Create a bare repository holding the data folders of ``source`` on ``branch``."""
    log.info("creating local remote %s from %s", bare, source)
    bare.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="remote-", dir=bare.parent)).resolve()
    try:
        git.Repo.init(staging / "repo.git", bare=True, initial_branch=branch)
        clone = git.Repo.init(staging / "seed", initial_branch=branch)
        for folder in SEED_FOLDERS:
            if (source / folder).is_dir():
                shutil.copytree(source / folder, staging / "seed" / folder, symlinks=True)
        clone.git.add("-A")
        clone.git.commit("-q", "--allow-empty", "-m", f"Seed the GitOps repository from {source.resolve().name}",
                         env=_identity_env(constants.COMMIT_AUTHOR_NAME, constants.COMMIT_AUTHOR_EMAIL))
        clone.git.push(str(staging / "repo.git"), f"HEAD:refs/heads/{branch}")
        (staging / "repo.git").rename(bare)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _identity_env(name: str, email: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def open_workdir(settings: Settings, url: str) -> git.Repo:
    """The storeops-owned clone of ``url``, created on first use."""
    workdir = settings.workdir
    env = settings.git_environment
    try:
        if (workdir / ".git").is_dir():
            repo = git.Repo(workdir)
            if repo.remotes.origin.url != url:
                # Also drops credentials an older setting left in the clone's configuration.
                repo.remotes.origin.set_url(url)
        else:
            workdir.parent.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.clone_from(url, workdir, no_checkout=False, env=env)
    except git.GitCommandError as e:
        raise GitError(f"cannot clone {url} into {workdir}: {_stderr(e)}") from e
    repo.git.update_environment(**env)
    return repo


def _stderr(e: git.GitCommandError) -> str:
    return " ".join(str(e.stderr).split()) or str(e)


def _refusal(stdout: str, stderr: str) -> str:
    """Why the remote refused a push: its ``remote:`` lines (a hook's words) and git's reason."""
    # GitPython quotes git's stderr ("  stderr: 'remote: ..."), so a hook's line is found, not prefixed.
    said = [line.split("remote:", 1)[1].strip(" '") for line in stderr.splitlines() if "remote:" in line]
    reasons = [line.split("(", 1)[-1].rstrip(")") for line in f"{stdout}\n{stderr}".splitlines()
               if "[remote rejected]" in line]
    return "; ".join(dict.fromkeys([*(s for s in said if s), *reasons])) or "no reason given"


def file_at(settings: Settings, revision: str, path: str) -> str | None:
    """``path`` as it was at ``revision`` of the remote's history (fetched into the storeops clone);
    None when the file was not there then. Raises GitError for a revision the remote does not have."""
    repo = open_workdir(settings, remote_url(settings))
    try:
        repo.git.fetch("origin", "--prune")
        repo.git.cat_file("-e", f"{revision}^{{commit}}")
    except git.GitCommandError as e:
        raise GitError(f"no commit {revision!r} in the remote's history: {_stderr(e)}") from e
    try:
        return str(repo.git.show(f"{revision}:{path}"))
    except git.GitCommandError:
        return None


def last_file(settings: Settings, path: str) -> str | None:
    """``path`` as it last was on the remote's branch: as it is now, or, once removed, as it was just
    before the commit that removed it; None when the branch never had it."""
    repo = open_workdir(settings, remote_url(settings))
    branch = f"origin/{settings.branch}"
    try:
        repo.git.fetch("origin", "--prune")
        last = str(repo.git.log("-1", "--format=%H", branch, "--", path)).strip()
    except git.GitCommandError as e:
        raise GitError(f"cannot read the history of {path}: {_stderr(e)}") from e
    if not last:
        return None
    for revision in (last, f"{last}^"):
        try:
            return str(repo.git.show(f"{revision}:{path}"))
        except git.GitCommandError:
            continue
    return None


def sync(repo: git.Repo, branch: str) -> str:
    """Make the work tree exactly the remote's ``branch``; return its commit (or '' when empty)."""
    try:
        repo.git.fetch("origin", "--prune")
    except git.GitCommandError as e:
        raise GitError(f"cannot fetch from {repo.remotes.origin.url}: {_stderr(e)}") from e
    ref = f"origin/{branch}"
    try:
        sha: str = repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
    except git.GitCommandError:
        sha = ""
    try:
        if sha:
            # -f: a publish cut short (kill -9) can leave files the branch has untracked in the work tree,
            # and a plain checkout refuses to overwrite them.
            repo.git.checkout("-f", "-B", branch, ref)
            repo.git.reset("--hard", ref)
        repo.git.clean("-ffdx")
    except git.GitCommandError as e:
        raise GitError(f"cannot check out {ref} in {repo.working_tree_dir}: {_stderr(e)}") from e
    return sha


def publish(settings: Settings, *, allow_mass_delete: bool = False, edit: Edit | None = None,
            message_extra: str = "", render: bool = True) -> Published:
    """Render the remote's inputs (plus ``edit``), commit and push; see the module docstring.

    With ``render=False`` only the edit is committed (a request branch whose ``rendered/`` the
    publish after its merge fills in); the inputs are still checked.
    """
    url = remote_url(settings)
    repo = open_workdir(settings, url)
    root = Path(repo.working_tree_dir or settings.workdir)
    identity = _identity_env(settings.author_name, settings.author_email)
    for attempt in range(1, settings.push_attempts + 1):
        base = sync(repo, settings.branch)
        edited = edit(root) if edit else []
        report = operations.render(root, repo_url=settings.repo_url, allow_mass_delete=allow_mass_delete,
                                   share=settings.mass_delete_share, write=render)
        paths = sorted(set(edited) | (set(report.changes.files.paths) if render else set()))
        if paths:
            repo.git.add("-A", "--", *paths)
        if not paths or not repo.git.diff("--cached", "--name-only"):
            log.info("nothing to publish; %s is at %s", settings.branch, base[:12] or "(empty)")
            return Published(base, report.changes, False, attempt, tuple(edited))
        # Only a rendering commit carries the trailer: the service ignores pushes of its own renders.
        message = planning.commit_message(report.changes, base or "(none)", extra=message_extra) if render \
            else message_extra.strip() + "\n"
        repo.git.commit("-q", "-m", message, env=identity)
        sha = repo.head.commit.hexsha
        try:
            repo.git.push("--porcelain", "origin", f"HEAD:refs/heads/{settings.branch}")
        except git.GitCommandError as e:
            output = f"{e.stdout} {e.stderr}"
            if "[remote rejected]" in output and not any(marker in output for marker in _RACED_ON_SERVER):
                # A server-side hook or a protected branch said no: retrying will not change its mind.
                raise PushRefused(f"{url} refused the push of {sha[:12]} to {settings.branch}: "
                                  f"{_refusal(str(e.stdout), str(e.stderr))}") from e
            if not any(marker in output for marker in _RACED):
                raise GitError(f"cannot push to {url}: {_stderr(e)}") from e
            delay = min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random())
            log.info("push of %s rejected (attempt %d/%d); re-rendering on top in %.2fs",
                     sha[:12], attempt, settings.push_attempts, delay)
            time.sleep(delay)
            continue
        log.info("published %s to %s: %s", sha[:12], url, report.changes.summary())
        return Published(sha, report.changes, True, attempt, tuple(edited))
    raise PushConflict(f"{url} kept moving; gave up after {settings.push_attempts} attempts")
