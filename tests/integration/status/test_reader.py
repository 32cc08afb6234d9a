"""The status reader against a real kube-apiserver + etcd: every transition reported once, to a real
callback receiver, across a 410 Gone, a silent connection, an API server restart and a reader restart."""

from __future__ import annotations

import collections.abc
import contextlib
import threading
from pathlib import Path
from typing import Any

from kubernetes import client

from harness import stack as harness_stack
from tests.integration.status import support
from webhook.settings import StatusSettings
from webhook.status import lifecycle
from webhook.status import reader as statusreader
from webhook.status.watching import GROUP, PLURAL, VERSION


def settings(tmp_path: Path, namespace: str, receiver: support.Receiver, **overrides: Any) -> StatusSettings:
    values: dict[str, Any] = {
        "namespace": namespace, "ledger": tmp_path / "status.sqlite3", "workdir": tmp_path / "no-clone",
        "callback_url": receiver.url, "callback_secret": support.SECRET, "callback_token": support.TOKEN,
        # The receivers listen on loopback, which callbacks may reach only when the operator allows it.
        "callback_allow": "127.0.0.0/8",
        "watch_timeout": 30, "read_timeout": 40.0, "backoff_min": 0.1, "backoff_max": 1.0, "retry_min": 0.1,
        "retry_max": 0.5, "tick": 0.1, "stuck_after": 600.0,
    }
    return StatusSettings(**(values | overrides))


@contextlib.contextmanager
def running(config: StatusSettings, kubeconfig: Path, *, host: str = "") -> collections.abc.Iterator[
        statusreader.StatusReader]:
    api = support.api_client(kubeconfig)
    if host:
        api.configuration.host = host
    reader = statusreader.build(config, api=api)
    stop = threading.Event()
    reader.start(stop=stop)
    try:
        yield reader
    finally:
        stop.set()
        reader.join()
        reader.close()


def create(custom: client.CustomObjectsApi, namespace: str, store_id: str, *,
           status: dict[str, Any] | None = None, finalizer: bool = False) -> None:
    body = support.application(store_id, namespace)
    if status is not None:
        body["status"] = status  # no status subresource: status is written like any other field
    if finalizer:
        body["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def delete(custom: client.CustomObjectsApi, namespace: str, store_id: str) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, f"store-{store_id}")


def expect(receiver: support.Receiver, store_id: str, states: list[str], *, timeout: float = 30.0) -> None:
    """Wait until the store's reports are exactly ``states`` (failing at once on an unexpected one)."""

    def reached() -> bool:
        got = receiver.statuses(store_id)
        assert got == states[: len(got)], f"store {store_id}: reported {got}, expected {states}"
        return len(got) == len(states)

    support.wait_until(f"store {store_id} reports {states} (got {receiver.statuses(store_id)})", reached,
                       timeout=timeout)


READY = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded")


def test_every_transition_is_reported_once_signed_to_the_callback(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    sid = "alpha"
    steps: list[tuple[str, collections.abc.Callable[[], object]]] = [
        ("rendered", lambda: create(custom, namespace, sid, finalizer=True)),
        ("syncing", lambda: support.set_status(custom, namespace, sid, support.argo_status(
            sync="OutOfSync", health="Missing", phase="Running"))),
        ("syncing", lambda: support.set_status(custom, namespace, sid, support.argo_status(
            sync="Synced", health="Progressing", phase="Succeeded", health_message="Waiting for rollout"))),
        ("ready", lambda: support.set_status(custom, namespace, sid, READY)),
        ("failed", lambda: support.set_status(custom, namespace, sid, support.argo_status(
            sync="Synced", health="Healthy", phase="Succeeded",
            conditions=[{"type": "ComparisonError", "message": "values file not found"}]))),
        ("ready", lambda: support.set_status(custom, namespace, sid, READY)),
        ("degraded", lambda: support.set_status(custom, namespace, sid, support.argo_status(
            sync="Synced", health="Degraded", phase="Succeeded", health_message="CrashLoopBackOff"))),
        ("ready", lambda: support.set_status(custom, namespace, sid, READY)),
        ("deleting", lambda: delete(custom, namespace, sid)),
        ("deleted", lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, f"store-{sid}", {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json")),
    ]
    expected: list[str] = []
    with running(settings(tmp_path, namespace, receiver), apiserver.kubeconfig) as reader:
        for state, act in steps:
            act()
            if not expected or expected[-1] != state:
                expected.append(state)
            expect(receiver, sid, expected)
        # The receiver has the last report a moment before the deliverer records it as delivered.
        support.wait_until("every delivery recorded", lambda: reader.ledger.pending() == 0, timeout=10)

    reports = receiver.all()
    assert [r.payload["status"] for r in reports] == [
        "rendered", "syncing", "ready", "failed", "ready", "degraded", "ready", "deleting", "deleted"]
    assert all(r.signature_ok for r in reports), "every callback carries a valid HMAC-SHA256 signature"
    assert all(r.token == support.TOKEN for r in reports)
    assert len({r.event_id for r in reports}) == len(reports)
    assert all(r.payload["event_id"] == r.event_id for r in reports), "the payload carries the header's event id"
    assert all(set(r.payload) == {"event_id", "store_id", "status", "url", "error", "revision", "at"} for r in reports)
    by_status = {r.payload["status"]: r.payload for r in reports}
    assert by_status["ready"]["url"] == "http://alpha.stores.localtest.me"
    assert by_status["ready"]["revision"] == "r" * 40
    assert by_status["failed"]["error"] == "ComparisonError: values file not found"
    assert by_status["failed"]["url"] is None
    assert by_status["degraded"]["error"] == "CrashLoopBackOff"


def test_a_silent_watch_and_410_gone_miss_no_transition(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    for sid in ("beta", "gamma"):
        create(custom, namespace, sid, status=READY)
    proxy = support.TcpProxy(apiserver.ports["apiserver"])
    config = settings(tmp_path, namespace, receiver, watch_timeout=300, read_timeout=3.0)
    try:
        with running(config, apiserver.kubeconfig, host=f"https://127.0.0.1:{proxy.port}") as reader:
            expect(receiver, "beta", ["ready"])
            expect(receiver, "gamma", ["ready"])
            proxy.silence()  # the watch's connection goes quiet; nothing tells the reader
            support.set_status(custom, namespace, "gamma", support.argo_status(
                sync="Synced", health="Healthy", conditions=[{"type": "SyncError", "message": "hook failed"}]))
            delete(custom, namespace, "beta")
            create(custom, namespace, "delta", status=READY)
            compacted = apiserver.compact_etcd()  # the reader's resourceVersion is now history: 410 Gone
            assert compacted > 0
            expect(receiver, "gamma", ["ready", "failed"], timeout=40)
            expect(receiver, "beta", ["ready", "deleted"])
            expect(receiver, "delta", ["ready"])
            assert reader.metrics.value("storeops_status_watch_restarts_total", reason="gone") >= 1
            assert reader.metrics.value("storeops_status_relists_total") >= 2
    finally:
        proxy.close()


def test_an_api_server_restart_misses_no_transition(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    sid = "epsilon"
    with running(settings(tmp_path, namespace, receiver), apiserver.kubeconfig) as reader:
        create(custom, namespace, sid)
        expect(receiver, sid, ["rendered"])
        support.set_status(custom, namespace, sid, support.argo_status(sync="OutOfSync", health="Missing"))
        expect(receiver, sid, ["rendered", "syncing"])
        support.set_status(custom, namespace, sid, READY)
        apiserver.restart_apiserver()  # right after the change: its event may or may not have gone out
        support.set_status(custom, namespace, sid, support.argo_status(
            sync="Synced", health="Healthy", conditions=[{"type": "InvalidSpecError", "message": "bad project"}]))
        expect(receiver, sid, ["rendered", "syncing", "ready", "failed"], timeout=60)
        assert reader.metrics.value("storeops_status_watch_restarts_total", reason="error") >= 1


def test_a_restarted_reader_reports_nothing_twice_and_what_changed_meanwhile_once(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    for sid in ("a1", "b1", "c1"):
        create(custom, namespace, sid, status=READY)
    create(custom, namespace, "s1", status=support.argo_status(sync="OutOfSync", health="Missing"))
    config = settings(tmp_path, namespace, receiver)
    with running(config, apiserver.kubeconfig):
        for sid in ("a1", "b1", "c1"):
            expect(receiver, sid, ["ready"])
        expect(receiver, "s1", ["syncing"])
    before = len(receiver.all())
    support.set_status(custom, namespace, "b1", support.argo_status(
        sync="Synced", health="Healthy", conditions=[{"type": "ComparisonError", "message": "chart missing"}]))
    delete(custom, namespace, "c1")
    create(custom, namespace, "d1", status=READY)
    with running(config, apiserver.kubeconfig) as reader:
        expect(receiver, "b1", ["ready", "failed"])
        expect(receiver, "c1", ["ready", "deleted"])
        expect(receiver, "d1", ["ready"])
        support.set_status(custom, namespace, "s1", READY)
        expect(receiver, "s1", ["syncing", "ready"])
        assert reader.reporter.row("a1") is not None
    after = receiver.all()[before:]
    assert sorted((r.payload["store_id"], r.payload["status"]) for r in after) == [
        ("b1", "failed"), ("c1", "deleted"), ("d1", "ready"), ("s1", "ready")]
    assert receiver.statuses("a1") == ["ready"]


def test_a_failing_receiver_gets_each_report_once_after_retries_even_across_a_restart(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    config = settings(tmp_path, namespace, receiver)
    receiver.fail_next = 10_000
    with running(config, apiserver.kubeconfig) as reader:
        create(custom, namespace, "zeta", status=READY)
        support.wait_until("a delivery attempt to fail",
                           lambda: reader.metrics.value("storeops_status_deliveries_total", sink="callback",
                                                        result="retry") >= 2)
        assert reader.ledger.pending() == 1
    receiver.fail_next = 1
    with running(config, apiserver.kubeconfig) as reader:
        expect(receiver, "zeta", ["ready"])
        support.wait_until("the outbox to empty", lambda: reader.ledger.pending() == 0)
    assert [r.payload["status"] for r in receiver.all()] == ["ready"]


def test_a_store_progressing_too_long_is_reported_stuck_with_argo_cds_message(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    status = support.argo_status(sync="Synced", health="Progressing", health_message="0 of 1 replicas available")
    status["health"].pop("lastTransitionTime")  # older Argo CD: the reader's own first sighting counts
    with running(settings(tmp_path, namespace, receiver, stuck_after=1.0), apiserver.kubeconfig):
        create(custom, namespace, "eta", status=status)
        expect(receiver, "eta", ["syncing", "stuck"])
        support.set_status(custom, namespace, "eta", READY)
        expect(receiver, "eta", ["syncing", "stuck", "ready"])
    stuck = next(r.payload for r in receiver.all() if r.payload["status"] == lifecycle.STUCK)
    assert stuck["error"].startswith("Progressing for ")
    assert stuck["error"].endswith(": 0 of 1 replicas available")


def test_a_store_with_its_own_callback_url_gets_its_reports_there_and_at_the_global_one(
        tmp_path: Path, apiserver: harness_stack.Stack, namespace: str, custom: client.CustomObjectsApi,
        receiver: support.Receiver) -> None:
    own = support.Receiver()
    try:
        body = support.application("theta", namespace, callback_url=own.url)
        body["status"] = READY
        with running(settings(tmp_path, namespace, receiver), apiserver.kubeconfig):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            create(custom, namespace, "iota", status=READY)
            expect(own, "theta", ["ready"])
            expect(receiver, "theta", ["ready"])
            expect(receiver, "iota", ["ready"])
        assert [r.payload["store_id"] for r in own.all()] == ["theta"], "only its own store reports there"
        assert own.all()[0].signature_ok
    finally:
        own.close()
