"""Status sinks: a new sink is one class and one line of wiring (here, a test-only sink in a list).

``ListSink`` below is the worked example of docs/architecture.md: durable, so each transition it
wants is owed to it through the outbox, retried when it fails, delivered at least once and in order.
Against a real kube-apiserver, beside the callback sink with a real receiver.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from pathlib import Path

from kubernetes import client

from harness import stack as harness_stack
from tests.integration.status import support
from tests.integration.status.test_reader import READY, create, expect, settings
from webhook.errors import DeliveryError
from webhook.status import lifecycle
from webhook.status import reader as statusreader
from webhook.status.callbacks import CallbackSink
from webhook.status.ledger import Event, Ledger, Row


class ListSink:
    """Keeps ``ready`` and ``failed`` transitions in a list; fails the first ``failures`` deliveries."""

    name = "list"
    durable = True

    def __init__(self, *, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[str, str, int]] = []

    def targets(self, assessment: lifecycle.Assessment) -> Sequence[str]:
        return ["the-list"] if assessment.state in (lifecycle.READY, lifecycle.FAILED) else []

    def deliver(self, event: Event, target: str) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError(f"store {event.store_id}: the list is not taking reports yet")
        self.received.append((event.store_id, event.state, event.seq))


def test_a_new_sink_gets_what_it_asks_for_once_even_after_failures(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    config = settings(tmp_path, namespace, receiver)
    sink = ListSink(failures=2)
    reader = statusreader.build(config, api=support.api_client(apiserver.kubeconfig),
                                sinks=[CallbackSink.from_settings(config), sink])
    stop = threading.Event()
    reader.start(stop=stop)
    try:
        create(custom, namespace, "listed")
        support.set_status(custom, namespace, "listed", READY)
        expect(receiver, "listed", ["rendered", "ready"])
        support.wait_until("the list sink has the ready report", lambda: bool(sink.received))
        assert reader.ledger.pending() == 0
    finally:
        stop.set()
        reader.join()
        reader.close()
    assert [(store, state) for store, state, _ in sink.received] == [("listed", "ready")]
    assert reader.metrics.value("storeops_status_deliveries_total", sink="list", result="retry") == 2
    assert reader.metrics.value("storeops_status_transitions_total", state="ready") == 1


def test_reports_owed_to_a_sink_no_longer_configured_are_given_up_at_once(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, receiver: support.Receiver) -> None:
    config = settings(tmp_path, namespace, receiver, callback_url="")
    ledger = Ledger(config.ledger)
    ledger.record(Row("gone", lifecycle.READY, "", "", "", "", datetime.datetime.now(datetime.UTC), None),
                  deliveries=[("list", "the-list")])
    ledger.close()
    reader = statusreader.build(config, api=support.api_client(apiserver.kubeconfig), sinks=[])
    try:
        assert reader.ledger.pending() == 1
        assert reader.deliverer.deliver_due() == 0
        assert reader.ledger.pending() == 0
        assert reader.metrics.value("storeops_status_deliveries_total", sink="list", result="no-sink") == 1
    finally:
        reader.close()
