"""The service's parts, built once from settings and held by the app (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.intake import queueing
from webhook.intake.admission import Intake
from webhook.intake.writer import Writer
from webhook.metrics import Metrics
from webhook.repository import Repository
from webhook.settings import ServiceSettings, Token, resolve_tokens


@dataclass
class Service:
    settings: ServiceSettings
    tokens: tuple[Token, ...]
    queue: queueing.Queue
    intake: Intake
    writer: Writer
    metrics: Metrics

    def close(self) -> None:
        self.queue.close()


def build(config: ServiceSettings, *, repository: Repository) -> Service:
    """Open the queue and wire the parts; the writer starts with the app (see ``app.lifespan``)."""
    queue = queueing.Queue(path=config.queue_path)
    intake = Intake(queue=queue, mass_delete_share=config.git.mass_delete_share,
                    mass_delete_window=config.mass_delete_window)
    metrics = Metrics()
    writer = Writer(repository=repository, intake=intake, metrics=metrics,
                    batch_max=config.batch_max, batch_window=config.batch_window, retry_min=config.retry_min,
                    retry_max=config.retry_max, review_branch_prefix=config.review_branch_prefix)
    return Service(settings=config, tokens=resolve_tokens(config), queue=queue, intake=intake,
                   writer=writer, metrics=metrics)
