"""Sinks: the places a store's transitions are reported to, all behind one interface.

The reporter holds a list of sinks built once at start-up (``webhook.app`` wires them). There are
two kinds, and each sink says which it is:

* **durable** (``durable = True``; the callback URL, GitHub's commit status and comment): for each
  transition the sink names its targets, and one outbox row per target is written in the same
  SQLite transaction that records the transition. The deliverer then calls ``deliver`` for each
  row, retrying with backoff, in order per store and sink, until it succeeds or gives up after the
  configured attempts. Delivery is at least once: a crash between sending and deleting the row
  sends it again, so receivers de-duplicate by the event's number.
* **live** (``durable = False``; the metrics, waking the deliverer): ``deliver`` is called in the
  reporter's thread right after the transition is recorded, once, with target ``""``. It must be
  quick and must not fail the reporter (errors are logged). Nothing is kept for them: a follower
  that missed a transition reads it from the ledger (SSE resumes from ``Last-Event-ID``).

Outbox rows whose sink is no longer configured (say GitHub was turned off while reports were
owed) are not retried: the deliverer marks them given up at once, with a log line and the
``storeops_status_deliveries_total{result="no-sink"}`` count; turning the sink back on does not
revive them.

A new sink is one file with a class that has these members, and one line in ``webhook.app``'s
list; ``tests/integration/status/test_sinks.py`` has a test-only sink wired that way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from webhook.metrics import Metrics
from webhook.status import lifecycle
from webhook.status.ledger import Event
from webhook.status.lifecycle import Assessment

# What a sink in another part of the service needs (webhook.github.deploys): this module is its interface.
__all__ = ["Assessment", "Event", "MetricsSink", "Sink", "WakeSink", "lifecycle"]


class Sink(Protocol):
    #: Kept with each owed delivery in the outbox: it must not change between releases.
    name: str
    durable: bool

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        """Where the transition to ``assessment`` goes (durable sinks: one outbox row each; ``[]`` for none).

        The assessment carries the Application's annotations (the store's own callback URL, say).
        """
        ...

    def deliver(self, event: Event, target: str) -> None:
        """Send ``event`` to ``target``; raise ``webhook.errors.DeliveryError`` to have it retried."""
        ...


class MetricsSink:
    """Counts transitions by state (live)."""

    name = "metrics"
    durable = False

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        return [""]

    def deliver(self, event: Event, target: str) -> None:
        self.metrics.count("storeops_status_transitions_total", state=event.state)


class WakeSink:
    """Wakes the threads that wait for the next transition, the deliverer among them (live).

    SSE streams need no waking: each follows the reporter's latest event number and reads what it
    has not sent from the ledger.
    """

    name = "wake"
    durable = False

    def __init__(self, *wakes: threading.Event) -> None:
        self.wakes = list(wakes)

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        return [""]

    def deliver(self, event: Event, target: str) -> None:
        for wake in self.wakes:
            wake.set()
