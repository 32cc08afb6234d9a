"""The service's parts, built once from settings and held by the app (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from generator import publishing
from webhook.auth import RateLimiter
from webhook.intake import queueing
from webhook.intake.admission import Intake
from webhook.intake.reviews import LocalReviews, Reviews
from webhook.intake.writer import Writer
from webhook.metrics import Metrics
from webhook.settings import ServiceSettings, Token, resolve_tokens


@dataclass
class Service:
    settings: ServiceSettings
    tokens: tuple[Token, ...]
    queue: queueing.Queue
    intake: Intake
    writer: Writer
    metrics: Metrics
    limiter: RateLimiter

    def close(self) -> None:
        self.queue.close()


def build(config: ServiceSettings, *, reviews: Reviews | None = None,
          on_published: Callable[[publishing.Published], object] | None = None) -> Service:
    """Open the queue and wire the parts; the writer starts with the app (see ``app.lifespan``)."""
    queue = queueing.Queue(path=config.queue_path)
    intake = Intake(queue=queue, mass_delete_share=config.git.mass_delete_share)
    metrics = Metrics()
    if reviews is None:
        config.git.state_dir.mkdir(parents=True, exist_ok=True)
        reviews = LocalReviews(remote=publishing.remote_url(config.git),
                               index=config.git.state_dir / "reviews.json")
    writer = Writer(git=config.git, intake=intake, reviews=reviews, metrics=metrics,
                    batch_max=config.batch_max, batch_window=config.batch_window, retry_min=config.retry_min,
                    retry_max=config.retry_max, review_branch_prefix=config.review_branch_prefix,
                    on_published=on_published)
    return Service(settings=config, tokens=resolve_tokens(config), queue=queue, intake=intake,
                   writer=writer, metrics=metrics, limiter=RateLimiter(rate=config.rate, burst=config.burst))
