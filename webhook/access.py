"""What every endpoint checks before its own work, said once: who calls, how often, what it sends.

An endpoint declares its access with :func:`endpoint` and receives a :class:`Call`::

    @access.endpoint(access.WRITE, media=(JSON,), body=True)
    async def create_store(request: Request, call: access.Call) -> Response: ...

The checks run in one order, so the answers stay the same everywhere:

* ``READ`` / ``WRITE``: a bearer token (401 without or unknown, 403 for a read token on a write
  endpoint), then the caller's rate (429), the media type (415), the body within its limit (413);
* ``SIGNED``: the body within its limit (413) first, since the signature covers it, then the
  endpoint's ``verify`` (401/403, or 404 when that webhook is off), the rate per address (429),
  and the media type (415);
* ``PUBLIC``: the rate per address (429), the media type, the body.

Who a caller is comes from :class:`Gate`, which the app keeps in ``app.state.gate``: the bearer
tokens today; named, scoped tokens and signed-in sessions plug in there as further ways to
authenticate, and every endpoint gets them at once.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from webhook import auth, signin
from webhook import csrf as csrf_module
from webhook.errors import BadRequest, Forbidden, NotReady, TooLarge, Unauthenticated, UnsupportedMediaType
from webhook.settings import Token

__all__ = ["PUBLIC", "READ", "SIGNED", "WRITE", "Call", "Caller", "Gate", "endpoint", "parse_json", "read_body"]

PUBLIC = "public"
READ = "read"
WRITE = "write"
SIGNED = "signed"

#: Checks a signed delivery's body; returns the caller's name (for the rate limit) or raises a 4xx.
Verify = Callable[[Request, bytes], str]
Handler = Callable[[Request, "Call"], Awaitable[Response]]


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``client`` is a stable, non-secret name (rate limits, idempotency keys, logs)."""

    client: str
    write: bool = False
    #: For an owner-scoped token: the owner's email; the caller reaches only that owner's stores.
    owner: str = ""


@dataclass(frozen=True)
class Call:
    caller: Caller
    #: The media type the request declared ('' when the endpoint takes none).
    media: str = ""
    body: bytes = b""


@dataclass
class Gate:
    tokens: Sequence[Token]
    limiter: auth.RateLimiter
    max_body_bytes: int
    #: Proxies whose ``X-Forwarded-For`` names the client (see :func:`client_address`).
    trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
    #: Signs the forms' CSRF tokens (``webhook.csrf``); kept in the service's database.
    csrf_secret: str = ""
    public_url: str = ""
    #: Signed-in people's sessions (``webhook.signin``), when sign-in is set up.
    sessions: signin.Sessions | None = None

    def authenticate(self, request: Request, *, write: bool) -> Caller:
        """The caller a request's credentials name: a bearer token, else a session (401/403 otherwise)."""
        key = request.cookies.get(signin.COOKIE)
        if self.sessions is not None and key and not request.headers.get("authorization"):
            return self._session(request, key, write=write)
        if not self.tokens:
            raise NotReady("no API tokens are configured")
        token = auth.bearer(header=request.headers.get("authorization"), tokens=self.tokens, write=write)
        return Caller(client=auth.client_of(token), write=token.write, owner=token.owner)

    def _session(self, request: Request, key: str, *, write: bool) -> Caller:
        assert self.sessions is not None
        session = self.sessions.get(key)
        if session is None:
            raise Unauthenticated("the session has ended; sign in again at /signin")
        if request.method not in ("GET", "HEAD"):
            csrf_module.same_site(request, public_url=self.public_url)  # a cookie travels with cross-site posts
        if session.role == signin.NOBODY:
            if write:
                raise Forbidden("signed in without a verified email: nothing to change")
            # An owner nobody is: such a session sees no store.
            return Caller(client=session.name, write=False, owner="(no verified email)")
        if session.role == signin.VIEWER:
            if write:
                raise Forbidden("signed in read-only (STOREOPS_VIEWERS): nothing to change")
            return Caller(client=session.name, write=False)
        return Caller(client=session.name, write=True, owner=session.email if session.role == signin.OWNER else "")


Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def client_address(peer: str, forwarded: Sequence[str], trusted: Networks) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Behind trusted proxies it is the right-most ``X-Forwarded-For`` hop that is not itself a
    trusted proxy (each proxy appends the address it saw; the ones before it are the client's to
    write, so they count for nothing). A client that is not a trusted proxy cannot choose its
    address by sending the header.
    """
    if not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(host: str, trusted: Networks) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def address(request: Request) -> str:
    gate: Gate | None = getattr(request.app.state, "gate", None)
    peer = request.client.host if request.client else "unknown"
    trusted = gate.trusted_proxies if gate is not None else ()
    return "addr:" + client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The raw body, refusing (413) past ``limit`` bytes without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """A JSON body, or 400 that says why not: not UTF-8, not JSON, nested too deeply, a number too long
    to read (Python refuses integers past 4,300 digits), or NaN/Infinity (not JSON)."""
    try:
        return json.loads(body, parse_constant=_not_a_number)
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise BadRequest("the body nests too deeply") from None
    except ValueError as e:
        raise BadRequest(f"the body cannot be read: {e}") from None


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def media_type(request: Request, allowed: Sequence[str]) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in allowed:
        raise UnsupportedMediaType(f"Content-Type must be {' or '.join(allowed)}, not {media or '(none)'}")
    return media


def endpoint(access: str, *, media: Sequence[str] = (), body: bool = False, verify: Verify | None = None,
             rate_key: str = "", limit: Callable[[Request], int] | None = None,
             csrf: bool = False) -> Callable[[Handler], Any]:
    """Wrap ``handler(request, call)`` in the checks ``access`` asks for (see the module docstring).

    ``rate_key`` prefixes the address for ``PUBLIC`` and ``SIGNED`` callers; ``limit`` overrides the
    body limit (a webhook with its own); ``csrf`` checks a form post's token (403, ``webhook.csrf``)
    once the body is read.
    """
    if access == SIGNED and verify is None:
        raise ValueError("a SIGNED endpoint needs verify")

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def checked(request: Request) -> Response:
            gate: Gate = request.app.state.gate
            cap = limit(request) if limit is not None else gate.max_body_bytes
            data = b""
            declared = ""
            if access == SIGNED:
                assert verify is not None
                data = await read_body(request, limit=cap)
                caller = Caller(client=f"{rate_key}{verify(request, data)}")
            elif access in (READ, WRITE):
                caller = gate.authenticate(request, write=access == WRITE)
            else:
                caller = Caller(client=f"{rate_key}{address(request)}")
            gate.limiter.take(caller.client)
            if media:
                declared = media_type(request, media)
            if body and access != SIGNED:
                data = await read_body(request, limit=cap)
            if csrf:
                submitted = urllib.parse.parse_qs(data.decode("utf-8", "replace")).get(csrf_module.FIELD, [""])[-1]
                csrf_module.verify(request, submitted, gate.csrf_secret, public_url=gate.public_url)
            return await handler(request, Call(caller=caller, media=declared, body=data))

        return checked

    return wrap
