"""A store's admin credentials, revealed once, to its owner only.

The credentials are made inside the cluster by the store's chart (the ``store-credentials`` Secret
in the store's namespace) and never enter Git. The owner gets them through a link: the owner asks
for one (``POST /v1/stores/{id}/credentials/link``, or the console's button), and opening it
(``GET /v1/stores/{id}/credentials/{link}``) needs the owner's own authentication as well: an
owner-scoped token or the owner's sign-in. A link works once and for ``STOREOPS_CREDENTIALS_LINK_TTL``
seconds; once the credentials were shown, no new link is made (the owner already has them) until the
password is changed. A link that expired unused may be replaced by a new one, and asking again
replaces an unused link.

Changing the password (``POST /v1/stores/{id}/credentials/rotate``, ``storeops rotate-password``)
raises the store entry's ``adminPasswordRotation``; the chart's rotation Job sets a new password in
the shop and in the Secret together and marks the Secret with that count
(``storeops.io/admin-password-rotation``). Links count per rotation: the new password can be shown
once, and only after the Secret reached the entry's count (before that the answer is 503: the shop
may not have it yet).

Links are kept in the service's database as hashes, so they hold across restarts and a used one
stays used. The password is read from the Kubernetes API at the moment it is shown (the status
reader's cluster access; the chart grants it ``get`` on that one Secret) and is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from generator import constants
from webhook import state
from webhook.errors import Conflict, Forbidden, NotFound, NotReady, Rejected

__all__ = [
    "ROTATION_ANNOTATION", "SECRET_NAME", "Gone", "Link", "Links", "admin_url", "read_password", "read_publishable_key",
    "ready_details", "rotation_of",
]  # fmt: skip

#: The Secret the charts' credentials Job makes in each store namespace (``credentials.secretName``).
SECRET_NAME = "store-credentials"
#: The one key of it that is shown; database passwords and salts stay in the cluster.
PASSWORD_KEY = "admin-password"
#: The Medusa chart's bootstrap puts the store's publishable API key here.
PUBLISHABLE_KEY = "publishable-key"
#: How many times the password was changed, on the Secret (set by the charts' rotation Job).
ROTATION_ANNOTATION = "storeops.io/admin-password-rotation"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credential_links (link TEXT PRIMARY KEY, store_id TEXT NOT NULL, owner TEXT NOT NULL,
                                             created REAL NOT NULL, expires REAL NOT NULL, used REAL,
                                             rotation INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS credential_links_store ON credential_links (store_id);
"""


class Gone(Rejected):
    """410: the link was used already, or expired."""

    status = 410


@dataclass(frozen=True)
class Link:
    token: str
    expires: float


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Links:
    """Credential links in the service's database (``<state dir>/service.sqlite3``, or PostgreSQL)."""

    def __init__(self, path: state.Location, *, ttl: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.clock = clock
        self._db = state.connect(path, _SCHEMA)
        if "rotation" not in self._db.columns("credential_links"):  # a database from before password rotation
            self._db.execute("ALTER TABLE credential_links ADD COLUMN rotation INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def state(self, store_id: str, rotation: int = 0) -> str:
        """``revealed``, ``link issued`` (unused, not expired) or ``not revealed``, for the password of
        ``rotation`` (the store entry's ``adminPasswordRotation``)."""
        now = self.clock()
        rows = self._db.execute("SELECT expires, used, rotation FROM credential_links WHERE store_id = ?",
                                (store_id,)).rows
        if any(used is not None and shown >= rotation for _, used, shown in rows):
            return "revealed"
        return "link issued" if any(used is None and expires > now for expires, used, _ in rows) else "not revealed"

    def issue(self, store_id: str, owner: str, rotation: int = 0) -> Link:
        """A new link for the store's owner; an unused one is replaced. Refused once the password of
        ``rotation`` was shown."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        with self._db.transaction(f"credentials:{store_id}") as db:
            if db.execute("SELECT 1 FROM credential_links WHERE store_id = ? AND used IS NOT NULL "
                          "AND rotation >= ?", (store_id, rotation)).one():
                raise Conflict(f"the credentials of {store_id!r} were shown already; they are not shown twice "
                               f"(change the password to get a new one shown)")
            db.execute("DELETE FROM credential_links WHERE store_id = ? AND used IS NULL", (store_id,))
            db.execute("INSERT INTO credential_links VALUES (?, ?, ?, ?, ?, NULL, ?)",
                       (_hash(token), store_id, owner.casefold(), now, now + self.ttl, rotation))
        return Link(token=token, expires=now + self.ttl)

    def redeem(self, store_id: str, token: str, *, owner: str, read: Callable[[], tuple[str, int]],
               rotation: int = 0) -> str:
        """Use the link once, as ``owner``: ``read()`` (the password and the Secret's rotation count) while
        the link is held; a failing read, or a Secret not at ``rotation`` yet (503), leaves the link unused.
        404 unknown, 403 another owner, 410 used or expired."""
        now = self.clock()
        with self._db.transaction(f"credentials:{store_id}") as db:
            row = db.execute("SELECT owner, expires, used FROM credential_links WHERE link = ? "
                             "AND store_id = ?", (_hash(token), store_id)).one()
            if row is None:
                raise NotFound(f"no such credentials link for {store_id!r}")
            if row[0] != owner.casefold():
                raise Forbidden("this link is for the store's owner, signed in as themselves")
            if row[2] is not None:
                raise Gone("this link was used already: the credentials are shown once")
            if row[1] <= now:
                raise Gone("this link has expired: ask for a new one")
            password, have = read()
            if have < rotation:
                raise NotReady(f"the admin password of {store_id!r} is being changed: ask for the credentials "
                               f"again once the store is ready")
            db.execute("UPDATE credential_links SET used = ?, rotation = ? WHERE link = ?",
                       (now, rotation, _hash(token)))
        return password


def rotation_of(entry: object) -> int:
    """How many times the store's admin password was changed: its entry's ``adminPasswordRotation``."""
    value = entry.get("adminPasswordRotation", 0) if isinstance(entry, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def admin_url(engine: str, storefront: object) -> str | None:
    """Where a store's admin signs in, from its storefront URL: WordPress' /wp-admin/, Medusa's /app."""
    if not storefront:
        return None
    return str(storefront).rstrip("/") + ("/wp-admin/" if engine == "woocommerce" else "/app")


def read_publishable_key(api: client.ApiClient, store_id: str) -> str | None:
    """A Medusa store's publishable API key from its credentials Secret (not secret: every storefront
    sends it), None while the bootstrap has not put it there."""
    namespace = constants.NAMESPACE_PREFIX + store_id
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(SECRET_NAME, namespace)
    except ApiException:
        return None
    value = (secret.data or {}).get(PUBLISHABLE_KEY)
    return base64.b64decode(value).decode() if value else None


def ready_details(
    *, store_id: str, engine: str, url: str, public_url: str, api: client.ApiClient | None
) -> dict[str, object]:
    """What the ready report tells a store's owner besides its URL: where the admin signs in, how to
    get the admin credentials (a one-time link for the owner alone: never the credentials themselves),
    and a Medusa store's publishable API key."""
    details: dict[str, object] = {
        "admin_url": admin_url(engine, url),
        "credentials": {
            "link": f"{public_url}/v1/stores/{store_id}/credentials/link",
            "how": "POST it with the owner's token, or use the store's page in the console: the answer is "
            "a link that shows the admin login once, to the owner",
        },
    }
    if engine == "medusa" and api is not None:
        key = read_publishable_key(api, store_id)
        if key:
            details["publishable_key"] = key
    return details


def read_password(api: client.ApiClient, store_id: str) -> tuple[str, int]:
    """The admin password from the store's credentials Secret (read now, never kept), and how many times
    it was changed."""
    namespace = constants.NAMESPACE_PREFIX + store_id
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(SECRET_NAME, namespace)
    except ApiException as e:
        if e.status == 404:
            raise NotReady(f"the store's credentials are not made yet (no Secret {SECRET_NAME} in {namespace})"
                           ) from None
        raise NotReady(f"the credentials cannot be read now: the Kubernetes API answered {e.status}") from None
    value = (secret.data or {}).get(PASSWORD_KEY)
    if not value:
        raise NotReady(f"the store's credentials are not made yet (no {PASSWORD_KEY} in {SECRET_NAME})")
    count = ((secret.metadata.annotations if secret.metadata else None) or {}).get(ROTATION_ANNOTATION, "0")
    return base64.b64decode(value).decode(), int(count) if count.isdigit() else 0
