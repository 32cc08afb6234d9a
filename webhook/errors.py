"""The service's errors: one root (under the generator's, so the CLI prints them in one line)."""

from __future__ import annotations

from collections.abc import Iterable

from generator.errors import Problem, StoreopsError


class WebhookError(StoreopsError):
    """Root of every error the intake service raises on purpose."""


class SettingsError(WebhookError):
    """A ``STOREOPS_*`` setting of the service has a value it cannot use."""


class Rejected(WebhookError):
    """A request the service answers with a 4xx; ``problems`` name the fields that are wrong."""

    status = 400

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        self.message = message
        self.problems = sorted(problems)
        super().__init__(message)


class BadRequest(Rejected):
    """The body cannot be read at all (not JSON, not UTF-8)."""


class Invalid(Rejected):
    """The request breaks the store schema or a cross-entry rule (422)."""

    status = 422


class Conflict(Rejected):
    """The store id or domain is taken in Git or among queued requests (409)."""

    status = 409


class NotFound(Rejected):
    status = 404


class Unauthenticated(Rejected):
    status = 401


class Forbidden(Rejected):
    status = 403


class TooLarge(Rejected):
    status = 413


class UnsupportedMediaType(Rejected):
    status = 415


class RateLimited(Rejected):
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class NotReady(WebhookError):
    """The service has not loaded the Git state yet (or lost its queue); answered with 503."""


class StatusError(WebhookError):
    """Root of every error the status reader raises on purpose."""


class WatchError(StatusError):
    """Listing or watching Applications failed in a way a retry may fix."""


class DeliveryError(StatusError):
    """A report (callback POST, GitHub status) was not accepted; it is retried with backoff."""


class RefreshError(StatusError):
    """Argo CD could not be asked to refresh an Application."""


class ApiError(WebhookError):
    """A call to the service's API from a command (``storeops rollout``) failed or was refused."""
