"""The status reader's errors: one root under the service's, one subclass per failure."""

from __future__ import annotations

from webhook.errors import WebhookError

__all__ = ["DeliveryError", "RefreshError", "StatusError", "WatchError"]


class StatusError(WebhookError):
    """Root of every error the status reader raises on purpose."""


class WatchError(StatusError):
    """Listing or watching Applications failed in a way a retry may fix."""


class DeliveryError(StatusError):
    """A report (callback POST, GitHub status) was not accepted; it is retried with backoff."""


class RefreshError(StatusError):
    """Argo CD could not be asked to refresh an Application."""
