"""Settings: one frozen object built once from ``STOREOPS_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from generator import environment, remotes
from generator.errors import ConfigError


def _default_state_dir() -> Path:
    return Path(".storeops")


@dataclass(frozen=True)
class Settings:
    """What the generator needs to know beyond the repository's own files.

    ``repo`` is the checkout holding ``stores/``, ``clusters/`` and ``templates/`` (the embedded
    example data when nothing is set). ``remote`` is where ``publish`` pushes; empty means a local
    bare repository under ``state_dir`` that is seeded from ``repo`` on first use. A remote given
    with credentials in it loses them here: they move to ``credentials``, which git gets through a
    credential helper (see :mod:`generator.remotes`), so no URL storeops keeps or shows holds them.
    """

    repo: Path = field(default_factory=lambda: Path("."))
    remote: str = ""
    branch: str = "main"
    state_dir: Path = field(default_factory=_default_state_dir)
    #: Overrides every cluster profile's ``argocd.repoURL`` (tests point Argo CD at a local remote).
    repo_url: str = ""
    #: Largest share of existing stores one run may remove without ``--allow-mass-delete``.
    mass_delete_share: float = 0.25
    push_attempts: int = 5
    author_name: str = "storeops"
    author_email: str = "storeops@localhost"
    #: The remote's user name and token (``STOREOPS_GIT_TOKEN``), or the ones its URL carried.
    credentials: remotes.Credentials | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        clean, carried = remotes.split(self.remote)
        if clean != self.remote:
            object.__setattr__(self, "remote", clean)
            if self.credentials is None:
                object.__setattr__(self, "credentials", carried)

    @property
    def git_environment(self) -> dict[str, str]:
        """What every git process that talks to the remote runs with."""
        return remotes.git_environment(self.credentials)

    @property
    def workdir(self) -> Path:
        """The clone that ``publish`` commits in; storeops owns it and may reset it."""
        return self.state_dir / "work"

    @property
    def default_remote(self) -> Path:
        return self.state_dir / "remote.git"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            repo=Path(env.get("STOREOPS_REPO", str(defaults.repo))),
            remote=env.get("STOREOPS_REMOTE", defaults.remote),
            branch=env.get("STOREOPS_BRANCH", defaults.branch),
            state_dir=Path(env.get("STOREOPS_STATE_DIR", str(defaults.state_dir))),
            repo_url=env.get("STOREOPS_REPO_URL", defaults.repo_url),
            mass_delete_share=environment.number(env, "STOREOPS_MASS_DELETE_SHARE", defaults.mass_delete_share,
                                                 low=0, high=1),
            push_attempts=environment.integer(env, "STOREOPS_PUSH_ATTEMPTS", defaults.push_attempts, low=1),
            author_name=env.get("STOREOPS_GIT_AUTHOR_NAME", defaults.author_name),
            author_email=env.get("STOREOPS_GIT_AUTHOR_EMAIL", defaults.author_email),
            credentials=_credentials(env),
        )


def _credentials(env: Mapping[str, str]) -> remotes.Credentials | None:
    """``STOREOPS_GIT_TOKEN`` or the file ``STOREOPS_GIT_TOKEN_FILE`` names, with ``STOREOPS_GIT_USERNAME``."""
    token = env.get("STOREOPS_GIT_TOKEN", "")
    token_file = env.get("STOREOPS_GIT_TOKEN_FILE", "")
    if token and token_file:
        raise ConfigError("STOREOPS_GIT_TOKEN and STOREOPS_GIT_TOKEN_FILE are both set. Set one.")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"STOREOPS_GIT_TOKEN_FILE has value {token_file!r}. Cannot read it: "
                              f"{e.strerror}.") from None
        if not token:
            raise ConfigError(f"STOREOPS_GIT_TOKEN_FILE has value {token_file!r}. The file is empty.")
    if not token:
        return None
    return remotes.Credentials(env.get("STOREOPS_GIT_USERNAME") or remotes.DEFAULT_USERNAME, token)
