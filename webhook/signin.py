"""Sign-in with OpenID Connect, with any issuer (Dex, Keycloak, Okta, Google, ...), and its sessions.

``GET /signin`` sends the browser to the provider (authorization code flow, PKCE S256, state and
nonce kept in the service's database); ``GET /signin/callback`` exchanges the code, checks the ID
token (signature from the provider's JWKS, issuer, audience, expiry, nonce), reads the userinfo,
and opens a session: a random id in an HttpOnly, SameSite=Lax cookie, the session itself in the
database (so it holds across restarts and replicas). Roles:

* *operator*: the email is in ``STOREOPS_OPERATORS`` (and verified): every store, fleet actions;
* *viewer*: the email is in ``STOREOPS_VIEWERS`` (and verified): reads every store and the fleet,
  changes nothing;
* *owner*: a verified email: the stores whose entries name that email as owner;
* a signed-in person without a verified email reads nothing and changes nothing.

``access.Gate`` takes a session where it takes a bearer token, so every endpoint serves both.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import secrets
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webhook import csrf, state
from webhook.errors import BadRequest, NotFound, Unauthenticated

__all__ = ["COOKIE", "Provider", "Session", "Sessions"]

log = logging.getLogger(__name__)

COOKIE = "storeops_session"
OPERATOR = "operator"
OWNER = "owner"
VIEWER = "viewer"
NOBODY = "signed-in"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS signins (state TEXT PRIMARY KEY, nonce TEXT NOT NULL, verifier TEXT NOT NULL,
                                    back TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, subject TEXT NOT NULL, email TEXT NOT NULL,
                                     role TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class Session:
    subject: str
    email: str
    role: str

    @property
    def name(self) -> str:
        """How the audit trail names the person: the provider's subject, never the email."""
        return "user:" + self.subject


class Sessions:
    """Sign-in states and sessions in the service's database (``<state dir>/service.sqlite3``, or PostgreSQL)."""

    def __init__(self, path: state.Location, *, lifetime: float = 12 * 3600.0) -> None:
        self.lifetime = lifetime
        self._db = state.connect(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def begin(self, *, back: str) -> tuple[str, str, str]:
        """A new sign-in: its state, nonce and PKCE verifier (kept ten minutes)."""
        state, nonce, verifier = (secrets.token_urlsafe(24) for _ in range(3))
        now = time.time()
        with self._db.transaction() as db:
            db.execute("DELETE FROM signins WHERE created < ?", (now - 600,))
            db.execute("INSERT INTO signins VALUES (?, ?, ?, ?, ?)", (state, nonce, verifier, back, now))
        return state, nonce, verifier

    def take(self, state: str) -> tuple[str, str, str] | None:
        """The nonce, verifier and return path of a sign-in, once (by whichever process gets it first)."""
        row = self._db.execute("DELETE FROM signins WHERE state = ? RETURNING nonce, verifier, back, created",
                               (state,)).one()
        if row is None or row[3] < time.time() - 600:
            return None
        return str(row[0]), str(row[1]), str(row[2])

    def open(self, session: Session) -> str:
        key = secrets.token_urlsafe(32)
        now = time.time()
        self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                         (_hash(key), session.subject, session.email, session.role, now, now + self.lifetime))
        return key

    def get(self, key: str) -> Session | None:
        row = self._db.execute("SELECT subject, email, role, expires FROM sessions WHERE id = ?",
                               (_hash(key),)).one()
        if row is None or row[3] < time.time():
            return None
        return Session(str(row[0]), str(row[1]), str(row[2]))

    def end(self, key: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE id = ?", (_hash(key),))


def _hash(key: str) -> str:
    # Only a hash of the cookie is kept: the database alone does not let anyone in.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass
class Provider:
    """An OpenID Connect issuer and this service's client at it."""

    issuer: str
    client_id: str
    client_secret: str
    operators: Sequence[str] = ()
    viewers: Sequence[str] = ()
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self._config: dict[str, Any] | None = None
        self._keys: jwt.PyJWKClient | None = None

    def config(self) -> dict[str, Any]:
        if self._config is None:
            answer = httpx.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=self.timeout)
            answer.raise_for_status()
            self._config = dict(answer.json())
            self._keys = jwt.PyJWKClient(str(self._config["jwks_uri"]), timeout=int(self.timeout))
        return self._config

    def authorize_url(self, *, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
            "scope": "openid email profile", "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        return f"{self.config()['authorization_endpoint']}?{query}"

    def finish(self, *, code: str, redirect_uri: str, nonce: str, verifier: str) -> Session:
        """Exchange the code; check the ID token; read the userinfo; the person's session."""
        config = self.config()
        tokens = httpx.post(config["token_endpoint"], auth=(self.client_id, self.client_secret), timeout=self.timeout,
                            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                  "code_verifier": verifier})
        if tokens.status_code != 200:
            raise Unauthenticated(f"the provider did not exchange the sign-in code ({tokens.status_code})")
        body = tokens.json()
        assert self._keys is not None
        try:
            key = self._keys.get_signing_key_from_jwt(body["id_token"])
            claims = jwt.decode(body["id_token"], key.key, algorithms=["RS256", "ES256", "PS256"],
                                audience=self.client_id, issuer=config["issuer"])
        except (jwt.PyJWTError, KeyError) as e:
            raise Unauthenticated(f"the provider's ID token does not hold: {e}") from None
        if claims.get("nonce") != nonce:
            raise Unauthenticated("the ID token is not for this sign-in (nonce)")
        info = httpx.get(config["userinfo_endpoint"], timeout=self.timeout,
                         headers={"Authorization": f"Bearer {body['access_token']}"})
        profile = info.json() if info.status_code == 200 else {}
        if profile.get("sub") not in (None, claims["sub"]):
            raise Unauthenticated("the userinfo is for someone else")
        email = str(profile.get("email") or claims.get("email") or "")
        verified = bool(profile.get("email_verified", claims.get("email_verified", False)))
        role = NOBODY
        if email and verified:
            role = OWNER
            if email.casefold() in {v.casefold() for v in self.viewers}:
                role = VIEWER
            if email.casefold() in {o.casefold() for o in self.operators}:
                role = OPERATOR  # a person in both lists may change things
        return Session(subject=str(claims["sub"]), email=email if verified else "", role=role)


def redirect_uri(request: Request, public_url: str) -> str:
    return (public_url or str(request.base_url).rstrip("/")) + "/signin/callback"


def start(request: Request, provider: Provider, sessions: Sessions, *, public_url: str) -> Response:
    back = request.query_params.get("next", "/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/"  # only a path of this service: never a redirect to another site
    state, nonce, verifier = sessions.begin(back=back)
    return RedirectResponse(provider.authorize_url(redirect_uri=redirect_uri(request, public_url), state=state,
                                                   nonce=nonce, verifier=verifier), status_code=303)


def callback(request: Request, provider: Provider, sessions: Sessions, *, public_url: str) -> Response:
    begun = sessions.take(request.query_params.get("state", ""))
    code = request.query_params.get("code", "")
    if begun is None or not code:
        raise BadRequest("this sign-in has expired or was not started here; sign in again")
    nonce, verifier, back = begun
    session = provider.finish(code=code, redirect_uri=redirect_uri(request, public_url), nonce=nonce,
                              verifier=verifier)
    key = sessions.open(session)
    log.info("signed in %s as %s", session.name, session.role)
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="lax", secure=public_url.startswith("https://"),
                        path="/", max_age=int(sessions.lifetime))
    return response


def _setup(request: Request) -> tuple[Provider, Sessions, str]:
    found = getattr(request.app.state, "signin", None)
    if found is None:
        raise NotFound("sign-in is off: set STOREOPS_OIDC_ISSUER, _CLIENT_ID and _CLIENT_SECRET")
    provider, sessions, public_url = found
    return provider, sessions, public_url


async def signin_route(request: Request) -> Response:
    provider, sessions, public_url = _setup(request)
    return await anyio.to_thread.run_sync(lambda: start(request, provider, sessions, public_url=public_url))


async def callback_route(request: Request) -> Response:
    provider, sessions, public_url = _setup(request)
    return await anyio.to_thread.run_sync(lambda: callback(request, provider, sessions, public_url=public_url))


async def signout_route(request: Request) -> Response:
    _, sessions, public_url = _setup(request)
    csrf.same_site(request, public_url=public_url)
    key = request.cookies.get(COOKIE)
    if key:
        sessions.end(key)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
