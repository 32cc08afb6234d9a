"""The status reader's settings: one frozen object built once from ``STOREOPS_*`` environment variables.

Kept apart from :mod:`webhook.settings` (the intake service's) so either can change alone; the
service holds both. With no ``STOREOPS_KUBECONFIG`` and not running in a Pod, the reader is off.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from generator import constants, environment
from generator.settings import Settings
from webhook.errors import SettingsError

__all__ = ["DEFAULT_SELECTOR", "StatusSettings"]

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
    #: SQLite file remembering what was reported (and what is still to deliver).
    ledger: Path = Path()
    #: The clone storeops publishes from; answers "does revision R contain commit C?".
    workdir: Path = Path()
    #: Where every store's status changes are POSTed ('' for none; per-store URLs come from annotations).
    callback_url: str = ""
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
            ledger=Path(env.get("STOREOPS_STATUS_DB") or git.state_dir / LEDGER_FILE),
            workdir=Path(env.get("STOREOPS_STATUS_WORKDIR") or git.workdir),
            callback_url=env.get("STOREOPS_CALLBACK_URL", d.callback_url),
            callback_secret=env.get("STOREOPS_CALLBACK_SECRET", d.callback_secret),
            callback_token=env.get("STOREOPS_CALLBACK_TOKEN", d.callback_token),
            signature_header=env.get("STOREOPS_CALLBACK_SIGNATURE_HEADER", d.signature_header),
            token_header=env.get("STOREOPS_CALLBACK_TOKEN_HEADER", d.token_header),
            callback_timeout=number("STOREOPS_CALLBACK_TIMEOUT", d.callback_timeout, low=0.1),
            callback_attempts=integer("STOREOPS_CALLBACK_ATTEMPTS", d.callback_attempts, low=1),
            retry_min=number("STOREOPS_CALLBACK_RETRY_MIN", d.retry_min, low=0),
            retry_max=number("STOREOPS_CALLBACK_RETRY_MAX", d.retry_max, low=0),
        )
