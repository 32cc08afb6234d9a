"""Reporting: each store transition once, to every sink that wants it, remembered across restarts.

:class:`Reporter` turns assessments into transitions. A transition is a new state, or ``ready``
for a newer change of the store; it is written to the :class:`~webhook.status.ledger.Ledger`
together with the deliveries it owes its durable sinks, in one transaction, and then told to the
live sinks. :class:`Deliverer` works the outbox in a thread: each owed delivery is handed to its
sink, retried with backoff, in order (see :mod:`webhook.status.sinks`).
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from webhook.errors import DeliveryError
from webhook.metrics import Metrics
from webhook.status import lifecycle
from webhook.status.ledger import Delivery, Event, Ledger, Row
from webhook.status.sinks import Sink

__all__ = ["Deliverer", "Reporter"]

log = logging.getLogger(__name__)



@dataclass
class Reporter:
    """Decides what is a transition and records it; thread-safe."""

    ledger: Ledger
    metrics: Metrics
    #: Every sink, durable and live, in the order they are told.
    sinks: Sequence[Sink] = ()

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rows = self.ledger.rows()
        self._changes = self.ledger.changes()
        self.seq = self.ledger.last_seq()

    def reload(self) -> None:
        """Read the stores' states and changes again from the ledger: another process (the leader of several
        replicas) records them, this one answers from them, and takes over from them when it leads."""
        rows, changes, seq = self.ledger.rows(), self.ledger.changes(), self.ledger.last_seq()
        with self._lock:
            self._rows, self._changes, self.seq = rows, changes, seq

    # --- what the rest of storeops asks -----------------------------------------------------------

    def row(self, store_id: str) -> Row | None:
        with self._lock:
            return self._rows.get(store_id)

    def rows(self) -> dict[str, Row]:
        with self._lock:
            return dict(self._rows)

    def states(self) -> dict[str, int]:
        with self._lock:
            counted = Counter(row.state for row in self._rows.values() if row.state != lifecycle.DELETED)
        return {state: counted.get(state, 0) for state in lifecycle.STATES if state not in lifecycle.INTAKE_STATES}

    def change(self, store_id: str) -> str:
        """The commit that last changed the store ('' when no publish was noted)."""
        with self._lock:
            return self._changes.get(store_id, "")

    def expect(self, store_ids: list[str], sha: str, *, now: datetime.datetime) -> None:
        """Note that ``sha`` changed these stores: ``ready`` now needs a revision containing it."""
        self.ledger.expect(store_ids, sha, at=now)
        with self._lock:
            self._changes.update(dict.fromkeys(store_ids, sha))
        log.info("commit %s changed %d store(s): %s", sha[:12], len(store_ids), ", ".join(store_ids[:20]))

    # --- transitions --------------------------------------------------------------------------

    def observe(self, assessment: lifecycle.Assessment, *, now: datetime.datetime) -> Event | None:
        """Record ``assessment`` when it is a transition; returns the event, or None when it is not."""
        store_id, state = assessment.store_id, assessment.state
        with self._lock:
            last = self._rows.get(store_id)
            change = self._changes.get(store_id, "")
            reported_change = change if state == lifecycle.READY else ""
            if last is not None and (last.state, last.change) == (state, reported_change):
                return None
            if last is None and state == lifecycle.DELETED:
                return None  # never reported, gone before we saw it: nothing to tell
            pending = last.pending_since if last is not None else None
            if state in lifecycle.ACTIVE and (last is None or last.state not in lifecycle.ACTIVE):
                pending = pending or now
            if state == lifecycle.READY:
                if pending is not None:
                    self.metrics.observe_ready((now - pending).total_seconds())
                pending = None
            row = Row(store_id, state, reported_change, assessment.message, assessment.revision, assessment.url,
                      now, pending)
            deliveries = [(sink.name, target) for sink in self.sinks if sink.durable
                          for target in dict.fromkeys(sink.targets(assessment))]
            event = self.ledger.record(row, deliveries=deliveries)
            self._rows[store_id] = row
            self.seq = event.seq
        log.info("store %s: %s -> %s%s (revision %s)", store_id, last.state if last else "(new)", state,
                 f": {assessment.message}" if assessment.message else "", assessment.revision[:12] or "-")
        for sink in self.sinks:
            if not sink.durable and sink.targets(assessment):
                try:
                    sink.deliver(event, "")
                except Exception:
                    log.exception("store %s: live sink %s failed on event %d", store_id, sink.name, event.seq)
        return event


@dataclass
class Deliverer:
    """Works the outbox: each owed report is sent, retried with backoff, and given up after ``attempts``."""

    ledger: Ledger
    metrics: Metrics
    #: The durable sinks, found by the name each outbox row keeps.
    sinks: Sequence[Sink] = ()
    attempts: int = 10
    retry_min: float = 1.0
    retry_max: float = 300.0
    wake: threading.Event = field(default_factory=threading.Event)

    def run(self, *, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; sleeps until the next due delivery or a new transition."""
        while not stop.is_set():
            self.wake.clear()
            self.deliver_due()
            next_at = self.ledger.next_due()
            wait = 60.0 if next_at is None else max(0.0, min(60.0, next_at - time.time()))
            if wait > 0:
                self.wake.wait(wait)
            if stop.is_set():
                break

    def deliver_due(self) -> int:
        """One pass over what is due now, oldest first; returns how many were delivered."""
        delivered = 0
        failing: set[tuple[str, str, str]] = set()
        while batch := self.ledger.due(now=time.time()):
            progressed = False
            for delivery in batch:
                key = (delivery.sink, delivery.target, delivery.event.store_id)
                if key in failing:
                    continue  # keep a store's reports in order: after a failure, its later ones wait
                try:
                    self._send(delivery)
                except DeliveryError as e:
                    failing.add(key)
                    self._failed(delivery, e)
                    continue
                self.ledger.delivered(delivery.id)
                self.metrics.count("storeops_status_deliveries_total", sink=delivery.sink, result="ok")
                delivered += 1
                progressed = True
            if not progressed:
                break
        return delivered

    def _send(self, delivery: Delivery) -> None:
        sink = next((s for s in self.sinks if s.name == delivery.sink), None)
        if sink is None:
            raise _NoSink(f"store {delivery.event.store_id}: sink {delivery.sink!r} is no longer configured")
        try:
            sink.deliver(delivery.event, delivery.target)
        except DeliveryError:
            raise
        except Exception as e:  # a client library's own errors: wrap them so they are retried
            raise DeliveryError(f"store {delivery.event.store_id}: {delivery.sink} report failed: {e}") from e

    def _failed(self, delivery: Delivery, error: DeliveryError) -> None:
        attempts = delivery.attempts + 1
        orphaned = isinstance(error, _NoSink)
        dead = orphaned or attempts >= self.attempts
        delay = min(self.retry_max, self.retry_min * 2 ** (attempts - 1)) * random.uniform(0.75, 1.25)
        self.ledger.retry(delivery.id, next_at=time.time() + delay, error=str(error), dead=dead)
        self.metrics.count("storeops_status_deliveries_total", sink=delivery.sink,
                           result="no-sink" if orphaned else "given-up" if dead else "retry")
        if dead:
            log.error("store %s: event %d to %s %s given up after %d attempts: %s", delivery.event.store_id,
                      delivery.event.seq, delivery.sink, delivery.target, attempts, error)
        else:
            log.warning("store %s: event %d to %s %s failed (attempt %d), retry in %.1fs: %s",
                        delivery.event.store_id, delivery.event.seq, delivery.sink, delivery.target, attempts,
                        delay, error)


class _NoSink(DeliveryError):
    """An outbox row for a sink this process does not have: given up at once, not retried."""
