"""Cross-site request forgery: every form the service serves carries a token only its own pages know.

A signed double-submit token. The page that shows a form sets the cookie ``storeops_csrf``
(``<nonce>.<HMAC of the nonce>``, HttpOnly, SameSite=Strict) and puts the same value in the form's
hidden ``csrf_token`` field. A post is accepted only when the field equals the cookie, the cookie
carries the service's signature, and the browser does not say the post came from another site
(``Sec-Fetch-Site: cross-site``, or an ``Origin`` that is not the service's own). A page on another
site can make a browser post, but cannot read the cookie or the field. The secret is kept in the
service's database (``webhook.state``), shared by every replica. Any form, the console's included,
is protected by declaring the endpoint with ``access.endpoint(..., csrf=True)`` and rendering
``field(token)`` inside it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from html import escape

from starlette.requests import Request
from starlette.responses import Response

from webhook.errors import Forbidden

__all__ = ["COOKIE", "FIELD", "field", "issue", "same_site", "set_cookie", "verify"]

COOKIE = "storeops_csrf"
FIELD = "csrf_token"


def _sign(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()[:32]


def _valid(secret: str, token: str) -> bool:
    nonce, _, signature = token.partition(".")
    return bool(nonce) and hmac.compare_digest(_sign(secret, nonce), signature)


def issue(request: Request, secret: str) -> str:
    """The token for a page: the request's own when it is valid, else a new one."""
    current = request.cookies.get(COOKIE, "")
    if current and _valid(secret, current):
        return current
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_sign(secret, nonce)}"


def set_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")


def field(token: str) -> str:
    """The hidden input a form carries."""
    return f'<input type="hidden" name="{FIELD}" value="{escape(token)}">'


def same_site(request: Request, *, public_url: str = "") -> None:
    """Raise Forbidden (403) when the browser says the request came from another site."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise Forbidden("the request was sent from another site")
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin not in _own_origins(request, public_url):
        raise Forbidden(f"the request was sent from {origin}, not from this service")


def verify(request: Request, submitted: str, secret: str, *, public_url: str = "") -> None:
    """Raise Forbidden (403) unless the post came from the service's own page in this browser."""
    same_site(request, public_url=public_url)
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie, submitted) or not _valid(secret, cookie):
        raise Forbidden("the form's security token is missing or expired; reload the page and send it again")


def _own_origins(request: Request, public_url: str) -> set[str]:
    own = {f"{request.url.scheme}://{request.url.netloc}"}
    if public_url:
        parts = urllib.parse.urlsplit(public_url)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return own
