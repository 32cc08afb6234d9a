"""storeops service: store requests in, store entries in Git, status out.

``storeops serve`` runs :func:`create_app` under uvicorn. Requests are checked with the generator's
schema and fleet rules, stored in a SQLite queue before they are answered, and landed in Git by one
writer that puts everything pending into one commit and one push.
"""

from __future__ import annotations

from webhook.app import create_app
from webhook.errors import Rejected, SettingsError, WebhookError
from webhook.repository import LocalPullRequests, Repository
from webhook.settings import ServiceSettings, Token
from webhook.types import PullRequests, Review

__all__ = [
    "LocalPullRequests",
    "PullRequests",
    "Rejected",
    "Repository",
    "Review",
    "ServiceSettings",
    "SettingsError",
    "Token",
    "WebhookError",
    "create_app",
]
