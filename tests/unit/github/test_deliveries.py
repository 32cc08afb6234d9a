"""The delivery log: one row per X-GitHub-Delivery, kept across restarts, payload until done."""

from __future__ import annotations

from collections.abc import Callable

from webhook.github import deliveries
from webhook.state import Location


def test_a_delivery_is_recorded_once_even_after_a_restart(state_at: Callable[[str], Location]) -> None:
    path = state_at("d.sqlite3")
    log = deliveries.Deliveries(path=path)
    assert log.record(delivery_id="abc", event="push", action="", payload=b"{}") is True
    assert log.record(delivery_id="abc", event="push", action="", payload=b"{}") is False
    log.close()
    reopened = deliveries.Deliveries(path=path)
    assert reopened.record(delivery_id="abc", event="push", action="", payload=b"{}") is False
    assert reopened.record(delivery_id="def", event="push", action="", payload=b"{}") is True
    reopened.close()


def test_pending_work_survives_a_restart_and_finishing_drops_the_payload(state_at: Callable[[str], Location]) -> None:
    path = state_at("d.sqlite3")
    log = deliveries.Deliveries(path=path)
    log.record(delivery_id="one", event="pull_request", action="opened", payload=b'{"n": 1}')
    log.record(delivery_id="two", event="issues", action="opened", payload=b'{"n": 2}')
    log.close()
    log = deliveries.Deliveries(path=path)
    assert [(d.id, d.payload) for d in log.pending()] == [("one", b'{"n": 1}'), ("two", b'{"n": 2}')]
    log.finish("one", status=deliveries.DONE, outcome="validated")
    assert [d.id for d in log.pending()] == ["two"]
    done = log.get("one")
    assert done is not None and (done.status, done.payload, done.outcome) == ("done", b"", "validated")
    assert log.record(delivery_id="one", event="pull_request", action="opened", payload=b"{}") is False
    log.close()


def test_retries_count_attempts_and_old_finished_rows_are_forgotten(state_at: Callable[[str], Location]) -> None:
    log = deliveries.Deliveries(path=state_at("d.sqlite3"))
    log.record(delivery_id="x", event="push", action="", payload=b"{}")
    assert log.retry_later("x", outcome="remote down") == 1
    assert log.retry_later("x", outcome="remote down") == 2
    assert [d.id for d in log.pending()] == ["x"]
    assert log.forget(older_than=0) == 0  # pending rows are never forgotten
    log.finish("x", status=deliveries.FAILED, outcome="gave up")
    assert log.forget(older_than=-1) == 1
    assert log.get("x") is None
    log.close()


def test_a_delivery_is_worked_by_one_process_at_a_time_and_taken_over_after_its_lease(
        state_at: Callable[[str], Location]) -> None:
    one, two = (deliveries.Deliveries(path=state_at("d.sqlite3")) for _ in range(2))
    try:
        for n in range(3):
            one.record(delivery_id=f"d{n}", event="push", action="", payload=b"{}")
        assert [d.id for d in one.claim(limit=2)] == ["d0", "d1"]
        assert [d.id for d in two.claim()] == ["d2"]  # the other process gets what is left
        assert two.claim() == []
        two.retry_later("d2", outcome="remote down")  # put back: anyone may take it again
        assert [d.id for d in one.claim()] == ["d2"]
        one.finish("d0", status=deliveries.DONE, outcome="ok")
        assert two.claim() == []  # d1 and d2 are held by the first process's lease
        assert [d.id for d in one.pending()] == ["d1", "d2"]
    finally:
        one.close()
        two.close()


def test_a_claim_that_ran_out_is_taken_over(state_at: Callable[[str], Location]) -> None:
    one, two = (deliveries.Deliveries(path=state_at("d.sqlite3")) for _ in range(2))
    try:
        one.record(delivery_id="x", event="push", action="", payload=b"{}")
        assert [d.id for d in one.claim(lease=-1)] == ["x"]  # a lease already over: as if its holder died
        assert [d.id for d in two.claim()] == ["x"]
        assert one.claim() == []
    finally:
        one.close()
        two.close()
