"""The service's parts, built once from settings and held by the app (no module-level state)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from webhook.intake import mappings, queueing
from webhook.intake.admission import Intake
from webhook.intake.writer import Writer
from webhook.metrics import Metrics
from webhook.repository import Repository
from webhook.settings import ServiceSettings, Token, resolve_tokens

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: ServiceSettings
    tokens: tuple[Token, ...]
    queue: queueing.Queue
    intake: Intake
    writer: Writer
    metrics: Metrics
    #: The form services' forms by name (``STOREOPS_FORM_MAPPING``), checked at start-up.
    forms: Mapping[str, mappings.Form] = field(default_factory=dict)

    def close(self) -> None:
        self.queue.close()


def build(config: ServiceSettings, *, repository: Repository) -> Service:
    """Open the queue and wire the parts; the writer starts with the app (see ``app.lifespan``)."""
    queue = queueing.Queue(path=config.queue_location)
    intake = Intake(queue=queue, mass_delete_share=config.git.mass_delete_share,
                    mass_delete_window=config.mass_delete_window)
    metrics = Metrics()
    writer = Writer(repository=repository, intake=intake, metrics=metrics,
                    batch_max=config.batch_max, batch_window=config.batch_window, retry_min=config.retry_min,
                    retry_max=config.retry_max, review_branch_prefix=config.review_branch_prefix,
                    review_interval=config.review_poll_interval,
                    # Replicas queue requests this writer is not woken for: it looks for them.
                    queue_poll=config.queue_poll if config.leader_election else None)
    # A review backend that reports a review's end by itself (GitHub's events) reaches the writer here.
    repository.on_reviewed = writer.note_reviewed
    forms = mappings.load(config.form_mapping)
    if config.form_secret:
        log.warning("the form webhook POST /v1/webhooks/form with STOREOPS_FORM_SECRET/_FIELDS is deprecated and "
                    "goes in the next release: declare the form in STOREOPS_FORM_MAPPING (provider hmac) and use "
                    "POST /v1/webhooks/forms/<name>")
    return Service(settings=config, tokens=resolve_tokens(config), queue=queue, intake=intake,
                   writer=writer, metrics=metrics, forms=forms)
