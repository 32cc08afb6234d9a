"""The service's settings: one frozen object built once from ``STOREOPS_*`` environment variables.

The generator's :class:`~generator.settings.Settings` (repository, remote, branch, state dir) is
embedded as ``git``; the rest is what only the intake service needs. With nothing set it runs on
the example repository and a local bare remote created on first start.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator import environment
from generator.settings import Settings
from webhook.errors import SettingsError

#: Default mapping of a form service's field names to store fields (dotted for nested fields).
DEFAULT_FORM_FIELDS: dict[str, str] = {
    "id": "id", "name": "name", "engine": "engine", "plan": "plan", "cluster": "cluster",
    "owner_name": "owner.name", "owner_email": "owner.email", "owner_github": "owner.github",
    "domain": "domain",
}

TOKEN_FILE = "api-token"
QUEUE_FILE = "intake.sqlite3"


@dataclass(frozen=True)
class Token:
    """An API bearer token and whether it may change stores (``write``) or only read."""

    value: str
    write: bool = True


@dataclass(frozen=True)
class ServiceSettings:
    git: Settings = field(default_factory=Settings)
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer tokens; empty means one write token kept in ``<state_dir>/api-token`` (made on first start).
    tokens: tuple[Token, ...] = ()
    #: Shared secret of the form-service webhook; empty turns the webhook off (403).
    form_secret: str = ""
    form_signature_header: str = "X-Storeops-Signature"
    form_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_FORM_FIELDS))
    #: Whether ``GET /`` serves the request form (put it behind the organisation's sign-in proxy).
    form_page: bool = True
    #: Requests per second each client (token or address) may make, with this burst.
    rate: float = 20.0
    burst: int = 40
    max_body_bytes: int = 64 * 1024
    #: Most requests one commit carries; 1 makes the writer commit and push per request.
    batch_max: int = 10_000
    #: How long the writer lets requests gather after the first one wakes it.
    batch_window: float = 0.05
    retry_min: float = 0.5
    retry_max: float = 30.0
    review_branch_prefix: str = "storeops/request-"
    public_url: str = ""

    @property
    def queue_path(self) -> Path:
        return self.git.state_dir / QUEUE_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        flag = functools.partial(environment.flag, env, error=SettingsError)
        integer = functools.partial(environment.integer, env, error=SettingsError)
        number = functools.partial(environment.number, env, error=SettingsError)
        d = cls()
        git = Settings.from_env(env)
        # Absolute paths: the service outlives its cwd's meaning, and git runs in other directories
        # (the generator seeds the default remote from inside a staging clone).
        git = replace(git, repo=git.repo.resolve(), state_dir=git.state_dir.resolve())
        return cls(
            git=git,
            host=env.get("STOREOPS_HOST", d.host),
            port=integer("STOREOPS_PORT", d.port, low=0),
            tokens=_tokens(env.get("STOREOPS_API_TOKENS", "")),
            form_secret=env.get("STOREOPS_FORM_SECRET", d.form_secret),
            form_signature_header=env.get("STOREOPS_FORM_SIGNATURE_HEADER", d.form_signature_header),
            form_fields=_mapping(env, "STOREOPS_FORM_FIELDS", d.form_fields),
            form_page=flag("STOREOPS_FORM_PAGE", d.form_page),
            rate=number("STOREOPS_RATE", d.rate, low=0),
            burst=integer("STOREOPS_BURST", d.burst, low=1),
            max_body_bytes=integer("STOREOPS_MAX_BODY_BYTES", d.max_body_bytes, low=1),
            batch_max=integer("STOREOPS_BATCH_MAX", d.batch_max, low=1),
            batch_window=number("STOREOPS_BATCH_WINDOW", d.batch_window, low=0),
            retry_min=number("STOREOPS_RETRY_MIN", d.retry_min, low=0),
            retry_max=number("STOREOPS_RETRY_MAX", d.retry_max, low=0),
            review_branch_prefix=env.get("STOREOPS_REVIEW_BRANCH_PREFIX", d.review_branch_prefix),
            public_url=env.get("STOREOPS_PUBLIC_URL", d.public_url).rstrip("/"),
        )


def resolve_tokens(settings: ServiceSettings) -> tuple[Token, ...]:
    """The configured tokens, or the one kept in the state dir (created, mode 0600, on first use)."""
    if settings.tokens:
        return settings.tokens
    path = settings.git.state_dir / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return (Token(path.read_text().strip(), write=True),)


def _tokens(raw: str) -> tuple[Token, ...]:
    """``tok1,tok2:read`` -> a write token and a read-only one."""
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        value, _, scope = item.partition(":")
        if scope not in ("", "write", "read"):
            raise SettingsError(f"STOREOPS_API_TOKENS has a token with scope {scope!r}. Use read or write.")
        out.append(Token(value, write=scope != "read"))
    return tuple(out)


def _mapping(env: Mapping[str, str], key: str, default: Mapping[str, str]) -> Mapping[str, str]:
    raw = env.get(key)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SettingsError(f"{key} has value {raw[:40]!r}. Not JSON ({e.msg}).") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SettingsError(f"{key} has value {raw[:40]!r}. Must map form field names to store fields.")
    return value
