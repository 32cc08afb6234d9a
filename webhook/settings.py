"""The service's settings: frozen objects built once from ``STOREOPS_*`` environment variables.

:class:`ServiceSettings` is the intake service's: the generator's :class:`~generator.settings.Settings`
(repository, remote, branch, state dir) embedded as ``git``, and what only the service needs. With
nothing set it runs on the example repository and a local bare remote created on first start.
:class:`StatusSettings` is the status reader's: with no ``STOREOPS_KUBECONFIG`` and not running in
a Pod, the reader is off. GitHub's settings live with its client (``webhook.github.client``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator import constants, destinations, documents, environment, validation
from generator.errors import Problem
from generator.settings import Settings
from webhook import state
from webhook.errors import SettingsError

#: Default mapping of a form service's field names to store fields (dotted for nested fields).
DEFAULT_FORM_FIELDS: dict[str, str] = {
    "id": "id", "name": "name", "engine": "engine", "plan": "plan", "cluster": "cluster",
    "owner_name": "owner.name", "owner_email": "owner.email", "owner_github": "owner.github",
    "domain": "domain",
}

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
TOKENS_SCHEMA = "tokens.schema.json"
QUEUE_FILE = "intake.sqlite3"
#: Rate-limit buckets and the service's own secrets (``webhook.state``).
STATE_FILE = "service.sqlite3"


@dataclass(frozen=True)
class Token:
    """An API bearer token: its name, and whether it may change stores (``write``) or only read.

    An owner-scoped token (``owner`` set) reads and changes only the stores of that owner. A token
    from the tokens file is known by its SHA-256 (``digest``) alone.
    """

    value: str = ""
    write: bool = True
    name: str = ""
    owner: str = ""
    digest: str = field(default="", repr=False)

    @property
    def scope(self) -> str:
        return "owner" if self.owner else "write" if self.write else "read"

    def matches(self, given: str) -> bool:
        """Constant-time: whether ``given`` is this token."""
        if self.digest:
            return hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), self.digest)
        return bool(self.value) and hmac.compare_digest(self.value.encode(), given.encode())


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease is and its timing (seconds, whole: the Lease keeps its duration as an integer)."""

    namespace: str
    name: str
    #: How long a Lease not renewed stays taken: the longest a dead leader's work waits for a successor.
    lease_duration: int = 15
    #: How long a leader keeps trying to renew before it gives up (and exits).
    renew_deadline: int = 10
    #: How often candidates try to take the Lease, and the leader renews it.
    retry_period: int = 2

    def __post_init__(self) -> None:
        # The client checks these with sys.exit; here they are a setting's error, before anything starts.
        if self.retry_period < 1:
            raise SettingsError(f"STOREOPS_LEASE_RETRY_PERIOD has value {self.retry_period}. Must be 1 or more.")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise SettingsError(f"STOREOPS_LEASE_RENEW_DEADLINE has value {self.renew_deadline}. Must be more than "
                                f"1.2 x STOREOPS_LEASE_RETRY_PERIOD ({self.retry_period}).")
        if self.lease_duration <= self.renew_deadline:
            raise SettingsError(f"STOREOPS_LEASE_DURATION has value {self.lease_duration}. Must be more than "
                                f"STOREOPS_LEASE_RENEW_DEADLINE ({self.renew_deadline}).")


def parse_lease(raw: str) -> tuple[str, str]:
    """``namespace/name`` of ``STOREOPS_LEADER_ELECTION``."""
    namespace, _, name = raw.strip().partition("/")
    label = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    if not re.fullmatch(label, namespace) or not re.fullmatch(rf"{label}(\.{label})*", name):
        raise SettingsError(f"STOREOPS_LEADER_ELECTION has value {raw!r}. Not namespace/lease-name "
                            f"(e.g. storeops/storeops-leader).")
    return namespace, name


@dataclass(frozen=True)
class ServiceSettings:
    git: Settings = field(default_factory=Settings)
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bearer tokens (``STOREOPS_TOKENS_FILE``, or the older ``STOREOPS_API_TOKENS``); empty means one
    #: write token named ``local`` kept in ``<state_dir>/api-token`` (made on first start).
    tokens: tuple[Token, ...] = ()
    #: Shared secret of the form-service webhook; empty turns the webhook off (403).
    form_secret: str = ""
    form_signature_header: str = "X-Storeops-Signature"
    form_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_FORM_FIELDS))
    #: The form mapping file (``webhook.intake.mappings``): form services' forms and their fields.
    form_mapping: str = ""
    #: Where a delivery carries its (signed) submission time, dotted; '' to not check it.
    form_submitted_at: str = ""
    #: How old a delivery's submission time may be, in seconds (a replay window).
    form_max_age: float = 86400.0
    #: Whether ``GET /`` serves the request form; None: only when listening on a loopback address
    #: (the form has no sign-in of its own: put it behind the organisation's sign-in proxy).
    form_page: bool | None = None
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
    #: Seconds between asking the review backend (Git, or GitHub) where every open review stands.
    review_poll_interval: float = 60.0
    public_url: str = ""
    #: Seconds ``storeops serve`` lets open requests finish after SIGTERM before it cancels them.
    shutdown_grace: int = 10
    #: Deletions are counted per cluster over this many seconds against STOREOPS_MASS_DELETE_SHARE.
    mass_delete_window: float = 3600.0
    #: Proxies (networks) whose X-Forwarded-For is believed; from anyone else the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    #: Sign-in with OpenID Connect: the issuer ('' turns sign-in off), this service's client, and the
    #: verified emails that sign in as operators, and those that sign in read-only (every store, no change).
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    operators: tuple[str, ...] = ()
    #: Seconds a link to a store's admin credentials works (once) after the owner asks for it.
    credentials_link_ttl: float = 3600.0
    viewers: tuple[str, ...] = ()
    #: How often running rollouts look at their wave (seconds), and how long a wave may take to be ready
    #: when the rollout does not say.
    rollout_poll: float = 2.0
    rollout_timeout: float = 1800.0
    #: Seconds between the backup keeper's passes (keys into new store namespaces, expired backups out),
    #: and the service's own way to a cluster's backup endpoint where it is not the Pods' (cluster -> URL).
    backup_interval: float = 15.0
    backup_endpoints: Mapping[str, str] = field(default_factory=dict)
    #: Seconds a delete waits for the store's final backup before it answers 503 (ask again).
    final_backup_wait: float = 120.0
    #: ``postgresql://user:password@host:5432/db``: every piece of state the service keeps lives there (for
    #: several replicas); '' keeps it in SQLite files in the state dir.
    database_url: str = field(default="", repr=False)
    #: ``namespace/name`` of the Lease replicas elect their one writer with ('' for one replica, no election;
    #: see ``webhook.leadership``), and its timing in whole seconds.
    leader_election: str = ""
    lease_duration: int = 15
    lease_renew_deadline: int = 10
    lease_retry_period: int = 2
    #: How often a replica that is not the leader reads the Git remote and the status ledger again (seconds).
    follower_refresh: float = 10.0
    #: With leader election: how often the leader's writer looks for requests other replicas queued (seconds).
    queue_poll: float = 1.0

    @property
    def queue_path(self) -> Path:
        return self.git.state_dir / QUEUE_FILE

    @property
    def queue_location(self) -> state.Location:
        """Where the intake queue is: the PostgreSQL database, or its SQLite file."""
        return state.location(self.queue_path, self.database_url)

    @property
    def state_location(self) -> state.Location:
        """Where rate-limit buckets, secrets, credential links, sessions and rollouts are."""
        return state.location(self.state_path, self.database_url)

    @property
    def form_page_on(self) -> bool:
        if self.form_page is not None:
            return self.form_page
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def state_path(self) -> Path:
        return self.git.state_dir / STATE_FILE

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
            tokens=_token_settings(env),
            form_secret=env.get("STOREOPS_FORM_SECRET", d.form_secret),
            form_signature_header=env.get("STOREOPS_FORM_SIGNATURE_HEADER", d.form_signature_header),
            form_fields=_mapping(env, "STOREOPS_FORM_FIELDS", d.form_fields),
            form_submitted_at=env.get("STOREOPS_FORM_SUBMITTED_AT", d.form_submitted_at),
            form_mapping=env.get("STOREOPS_FORM_MAPPING", d.form_mapping),
            form_max_age=number("STOREOPS_FORM_MAX_AGE", d.form_max_age, low=1),
            form_page=flag("STOREOPS_FORM_PAGE", True) if "STOREOPS_FORM_PAGE" in env else None,
            rate=number("STOREOPS_RATE", d.rate, low=0),
            burst=integer("STOREOPS_BURST", d.burst, low=1),
            max_body_bytes=integer("STOREOPS_MAX_BODY_BYTES", d.max_body_bytes, low=1),
            batch_max=integer("STOREOPS_BATCH_MAX", d.batch_max, low=1),
            batch_window=number("STOREOPS_BATCH_WINDOW", d.batch_window, low=0),
            retry_min=number("STOREOPS_RETRY_MIN", d.retry_min, low=0),
            retry_max=number("STOREOPS_RETRY_MAX", d.retry_max, low=0),
            review_branch_prefix=env.get("STOREOPS_REVIEW_BRANCH_PREFIX", d.review_branch_prefix),
            review_poll_interval=number("STOREOPS_REVIEW_POLL_INTERVAL", d.review_poll_interval, low=1),
            public_url=env.get("STOREOPS_PUBLIC_URL", d.public_url).rstrip("/"),
            shutdown_grace=integer("STOREOPS_SHUTDOWN_GRACE", d.shutdown_grace, low=0),
            mass_delete_window=number("STOREOPS_MASS_DELETE_WINDOW", d.mass_delete_window, low=0),
            credentials_link_ttl=number("STOREOPS_CREDENTIALS_LINK_TTL", d.credentials_link_ttl, low=1),
            trusted_proxies=_networks(env, "STOREOPS_TRUSTED_PROXIES"),
            oidc_issuer=env.get("STOREOPS_OIDC_ISSUER", ""),
            oidc_client_id=env.get("STOREOPS_OIDC_CLIENT_ID", ""),
            oidc_client_secret=env.get("STOREOPS_OIDC_CLIENT_SECRET", ""),
            operators=tuple(e.strip() for e in env.get("STOREOPS_OPERATORS", "").split(",") if e.strip()),
            viewers=tuple(e.strip() for e in env.get("STOREOPS_VIEWERS", "").split(",") if e.strip()),
            rollout_poll=number("STOREOPS_ROLLOUT_POLL", d.rollout_poll, low=0.01),
            rollout_timeout=number("STOREOPS_ROLLOUT_TIMEOUT", d.rollout_timeout, low=1),
            backup_interval=number("STOREOPS_BACKUP_INTERVAL", d.backup_interval, low=0.1),
            backup_endpoints=_backup_endpoints(env),
            final_backup_wait=number("STOREOPS_FINAL_BACKUP_WAIT", d.final_backup_wait, low=0),
            database_url=database_url(env),
            leader_election=_leader_election(env),
            lease_duration=integer("STOREOPS_LEASE_DURATION", d.lease_duration, low=1),
            lease_renew_deadline=integer("STOREOPS_LEASE_RENEW_DEADLINE", d.lease_renew_deadline, low=1),
            lease_retry_period=integer("STOREOPS_LEASE_RETRY_PERIOD", d.lease_retry_period, low=1),
            follower_refresh=number("STOREOPS_FOLLOWER_REFRESH", d.follower_refresh, low=0.1),
            queue_poll=number("STOREOPS_QUEUE_POLL", d.queue_poll, low=0.05),
        ).checked()

    def checked(self) -> ServiceSettings:
        """These settings, or a SettingsError naming what does not go together."""
        if self.leader_election:
            self.lease  # noqa: B018 - checks the timing
            if not self.database_url:
                raise SettingsError(f"STOREOPS_LEADER_ELECTION has value {self.leader_election!r}, but "
                                    "STOREOPS_DATABASE_URL is not set. Replicas share their queue and ledger in "
                                    "PostgreSQL; set it.")
        return self

    @property
    def lease(self) -> LeaseSettings | None:
        """The Lease of the election, or None when there is none (one replica)."""
        if not self.leader_election:
            return None
        namespace, name = parse_lease(self.leader_election)
        return LeaseSettings(namespace=namespace, name=name, lease_duration=self.lease_duration,
                             renew_deadline=self.lease_renew_deadline, retry_period=self.lease_retry_period)


def _leader_election(env: Mapping[str, str]) -> str:
    raw = env.get("STOREOPS_LEADER_ELECTION", "").strip()
    if raw:
        parse_lease(raw)
    return raw


def database_url(env: Mapping[str, str]) -> str:
    """``STOREOPS_DATABASE_URL``: '' or a PostgreSQL URL."""
    url = env.get("STOREOPS_DATABASE_URL", "").strip()
    if url and not state.is_postgres(url):
        raise SettingsError(f"STOREOPS_DATABASE_URL has value {state.redacted(url)!r}. Not a PostgreSQL URL "
                            f"(postgresql://user:password@host:5432/database).")
    return url


def _backup_endpoints(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in env.get("STOREOPS_BACKUP_ENDPOINTS", "").split(","))):
        name, _, url = part.partition("=")
        if not name or not re.fullmatch(r"https?://[^\s/?#]+/?", url):
            raise SettingsError(f"STOREOPS_BACKUP_ENDPOINTS: {part!r} is not cluster=http(s)://host[:port]")
        out[name] = url
    return out


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
    return (Token(path.read_text().strip(), write=True, name="local"),)


def _tokens(raw: str) -> tuple[Token, ...]:
    """``tok1,tok2:read`` -> a write token and a read-only one, named ``api-token-1``, ``api-token-2``."""
    out: list[Token] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        value, _, scope = item.partition(":")
        if scope not in ("", "write", "read"):
            raise SettingsError(f"STOREOPS_API_TOKENS has a token with scope {scope!r}. Use read or write.")
        out.append(Token(value, write=scope != "read", name=f"api-token-{len(out) + 1}"))
    return tuple(out)


def _token_settings(env: Mapping[str, str]) -> tuple[Token, ...]:
    path = env.get("STOREOPS_TOKENS_FILE", "")
    if path and env.get("STOREOPS_API_TOKENS"):
        raise SettingsError("STOREOPS_TOKENS_FILE and STOREOPS_API_TOKENS are both set. Set one.")
    if not path:
        found = _tokens(env.get("STOREOPS_API_TOKENS", ""))
        if found:
            log.warning("STOREOPS_API_TOKENS is deprecated and goes in the next release: name and scope each "
                        "token in STOREOPS_TOKENS_FILE (storeops token NAME makes one)")
        return found
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise SettingsError(f"STOREOPS_TOKENS_FILE has value {path!r}. Cannot read it: {e.strerror}.") from None
    tokens, problems = parse_tokens(text, path)
    if problems:
        raise SettingsError("STOREOPS_TOKENS_FILE: the tokens file has problems:\n" +
                            "\n".join(f"  {p}" for p in problems))
    return tokens


def parse_tokens(text: str | bytes, path: str) -> tuple[tuple[Token, ...], list[Problem]]:
    """The tokens of a tokens file, or every problem in it, by line."""
    try:
        doc = documents.parse(text, path)
    except documents.ParseFailed as e:
        return (), [e.problem]
    problems = validation.schema_problems(doc, TOKENS_SCHEMA)
    if problems:
        return (), problems
    tokens: list[Token] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc.data["tokens"]):
        for key, what in (("name", "name"), ("sha256", "token")):
            if raw[key] in seen:
                problems.append(Problem(path, doc.line_of(("tokens", i, key)), f"tokens[{i}].{key}",
                                        f"this {what} is already in the file"))
            seen.add(raw[key])
        tokens.append(Token(name=raw["name"], write=raw["scope"] != "read", owner=raw.get("owner", ""),
                            digest=raw["sha256"]))
    return (tuple(tokens), problems) if not problems else ((), problems)


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


#: The store Applications the generator renders, and nothing else in the namespace.
DEFAULT_SELECTOR = (f"{constants.LABEL_PART_OF}={constants.PART_OF},"
                    f"{constants.LABEL_COMPONENT}=store")
#: The root Applications (one per cluster) that create the store Applications.
ROOT_SELECTOR = f"{constants.LABEL_PART_OF}={constants.PART_OF},{constants.LABEL_COMPONENT}=root"
LEDGER_FILE = "status.sqlite3"


@dataclass(frozen=True)
class StatusSettings:
    #: Path of a kubeconfig; '' uses the Pod's service account when in a cluster, else the reader is off.
    kubeconfig: str = ""
    in_cluster: bool = False
    namespace: str = "argocd"
    selector: str = DEFAULT_SELECTOR
    root_selector: str = ROOT_SELECTOR
    #: Server-side lifetime of one watch request; the reader then re-watches from where it was.
    watch_timeout: int = 300
    #: Client-side read timeout: a watch silent for this long is dropped and re-made (0: watch_timeout + 30).
    read_timeout: float = 0.0
    page_size: int = 500
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    #: Progressing for longer than this (seconds) is reported as ``stuck``.
    stuck_after: float = 900.0
    #: How often time-based states (stuck) are re-assessed from memory; no API request.
    tick: float = 5.0
    #: SQLite file remembering what was reported (and what is still to deliver), or the PostgreSQL URL.
    ledger: Path | str = field(default=Path(), repr=False)
    #: The clone storeops publishes from; answers "does revision R contain commit C?".
    workdir: Path = Path()
    #: Where every store's status changes are POSTed ('' for none; per-store URLs come from annotations).
    callback_url: str = ""
    #: Hosts and networks callbacks may reach although they are internal (e.g. ``10.0.0.0/8,hooks.corp``).
    callback_allow: str = ""
    callback_secret: str = ""
    callback_token: str = ""
    signature_header: str = "X-Storeops-Signature-256"
    token_header: str = "X-Storeops-Token"
    callback_timeout: float = 10.0
    #: Deliveries are retried with backoff up to this many attempts, then given up (logged).
    callback_attempts: int = 10
    retry_min: float = 1.0
    retry_max: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster

    @property
    def effective_read_timeout(self) -> float:
        return self.read_timeout or float(self.watch_timeout + 30)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StatusSettings:
        env = os.environ if environ is None else environ
        flag = functools.partial(environment.flag, env, error=SettingsError)
        integer = functools.partial(environment.integer, env, error=SettingsError)
        number = functools.partial(environment.number, env, error=SettingsError)
        git = Settings.from_env(env)
        d = cls()
        return cls(
            kubeconfig=env.get("STOREOPS_KUBECONFIG", d.kubeconfig),
            in_cluster=flag("STOREOPS_IN_CLUSTER", "KUBERNETES_SERVICE_HOST" in env),
            namespace=env.get("STOREOPS_ARGOCD_NAMESPACE", d.namespace),
            selector=env.get("STOREOPS_STATUS_SELECTOR", d.selector),
            root_selector=env.get("STOREOPS_ROOT_SELECTOR", d.root_selector),
            watch_timeout=integer("STOREOPS_WATCH_TIMEOUT", d.watch_timeout, low=1),
            read_timeout=number("STOREOPS_WATCH_READ_TIMEOUT", d.read_timeout, low=0),
            page_size=integer("STOREOPS_WATCH_PAGE_SIZE", d.page_size, low=1),
            backoff_min=number("STOREOPS_WATCH_BACKOFF_MIN", d.backoff_min, low=0),
            backoff_max=number("STOREOPS_WATCH_BACKOFF_MAX", d.backoff_max, low=0),
            stuck_after=number("STOREOPS_STUCK_AFTER", d.stuck_after, low=0),
            tick=number("STOREOPS_STATUS_TICK", d.tick, low=0.01),
            ledger=state.location(Path(env.get("STOREOPS_STATUS_DB") or git.state_dir / LEDGER_FILE),
                                  database_url(env)),
            workdir=Path(env.get("STOREOPS_STATUS_WORKDIR") or git.workdir),
            callback_url=env.get("STOREOPS_CALLBACK_URL", d.callback_url),
            callback_allow=_allow_list(env.get("STOREOPS_CALLBACK_ALLOW", d.callback_allow)),
            callback_secret=env.get("STOREOPS_CALLBACK_SECRET", d.callback_secret),
            callback_token=env.get("STOREOPS_CALLBACK_TOKEN", d.callback_token),
            signature_header=env.get("STOREOPS_CALLBACK_SIGNATURE_HEADER", d.signature_header),
            token_header=env.get("STOREOPS_CALLBACK_TOKEN_HEADER", d.token_header),
            callback_timeout=number("STOREOPS_CALLBACK_TIMEOUT", d.callback_timeout, low=0.1),
            callback_attempts=integer("STOREOPS_CALLBACK_ATTEMPTS", d.callback_attempts, low=1),
            retry_min=number("STOREOPS_CALLBACK_RETRY_MIN", d.retry_min, low=0),
            retry_max=number("STOREOPS_CALLBACK_RETRY_MAX", d.retry_max, low=0),
        )


def check_election(service: ServiceSettings, status: StatusSettings | None) -> None:
    """Leader election holds its Lease through the status reader's Kubernetes API: refuse it without one."""
    if service.leader_election and (status is None or not status.enabled):
        raise SettingsError(f"STOREOPS_LEADER_ELECTION has value {service.leader_election!r}, but there is no "
                            "Kubernetes API to hold the Lease: set STOREOPS_KUBECONFIG or run in a cluster.")


def _allow_list(raw: str) -> str:
    try:
        destinations.Allowed.parse(raw)
    except ValueError as e:
        raise SettingsError(f"STOREOPS_CALLBACK_ALLOW has value {raw!r}. {e}.") from None
    return raw


def _networks(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = env.get(key, "")
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(f"{key} has value {raw!r}. {item!r} is not a network such as 10.0.0.0/8.") from None
    return items
