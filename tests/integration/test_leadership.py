"""The elector (``webhook.leadership``) on the real API server: one leader at a time, a released Lease taken at
once, and a leader that loses its Lease told so within the renew deadline."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from harness import stack as harness_stack
from harness.applications import api_client, close
from webhook import leadership
from webhook.settings import LeaseSettings

pytestmark = pytest.mark.controlplane

DURATION, DEADLINE, RETRY = 4, 2, 1


def wait_for(what: str, check: Callable[[], bool], *, timeout: float) -> float:
    """Seconds until ``check()`` held."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - started


class Candidate:
    def __init__(self, api: client.ApiClient, lease: LeaseSettings, holder: str) -> None:
        self.started = threading.Event()
        self.lost = threading.Event()
        self.elector = leadership.Elector(api=api, lease=lease, holder=holder, on_started=self.started.set,
                                          on_lost=self.lost.set)


@pytest.fixture
def lease(kube_apiserver: harness_stack.Stack) -> LeaseSettings:
    namespace = f"lease-{uuid.uuid4().hex[:8]}"
    kube_apiserver.kubectl.run("create", "namespace", namespace)
    return LeaseSettings(namespace=namespace, name="storeops-leader", lease_duration=DURATION,
                         renew_deadline=DEADLINE, retry_period=RETRY)


@pytest.fixture
def coordination(kube_apiserver: harness_stack.Stack) -> Iterator[client.CoordinationV1Api]:
    api = api_client(kube_apiserver.kubeconfig)
    yield client.CoordinationV1Api(api)
    close(api)


def holder(coordination: client.CoordinationV1Api, lease: LeaseSettings) -> str:
    try:
        found = coordination.read_namespaced_lease(lease.name, lease.namespace)
    except client.ApiException:
        return ""
    return str(found.spec.holder_identity or "") if found.spec else ""


def test_one_candidate_leads_and_a_released_lease_is_taken_within_a_retry_period(
        kube_apiserver: harness_stack.Stack, lease: LeaseSettings, coordination: client.CoordinationV1Api) -> None:
    first = Candidate(api_client(kube_apiserver.kubeconfig), lease, "first_1")
    second = Candidate(api_client(kube_apiserver.kubeconfig), lease, "second_2")
    try:
        first.elector.start()
        wait_for("the first candidate leads", first.started.is_set, timeout=10)
        second.elector.start()
        assert holder(coordination, lease) == "first_1"
        time.sleep(DURATION + RETRY)  # a whole lease duration passes: the holder renews, the other waits
        assert not second.started.is_set() and holder(coordination, lease) == "first_1"
        assert first.elector.leading.is_set() and not second.elector.leading.is_set()

        stopping = time.monotonic()
        first.elector.stop()  # releases the Lease (and waits for its election thread to end)
        wait_for("the second takes the released Lease", second.started.is_set, timeout=DURATION + 5)
        taken = time.monotonic() - stopping
        print(f"\nreleased Lease taken after {taken:.2f}s")
        assert taken < DURATION, "a released Lease is not left to expire"
        assert holder(coordination, lease) == "second_2"
        assert not first.lost.is_set() and not second.lost.is_set(), "a release is not a loss"
    finally:
        for candidate in (first, second):
            candidate.elector.stop()
            candidate.elector.close()


def test_a_leader_whose_lease_someone_else_holds_is_told_it_lost_within_the_renew_deadline(
        kube_apiserver: harness_stack.Stack, lease: LeaseSettings, coordination: client.CoordinationV1Api) -> None:
    leader = Candidate(api_client(kube_apiserver.kubeconfig), lease, "leader_1")
    try:
        leader.elector.start()
        wait_for("it leads", leader.started.is_set, timeout=10)
        # Another holder writes the Lease (as a replica that saw it expire would), and keeps renewing it.
        stop = threading.Event()

        def intrude() -> None:
            while not stop.is_set():
                with_conflicts = coordination.read_namespaced_lease(lease.name, lease.namespace)
                with_conflicts.spec.holder_identity = "intruder_9"
                with_conflicts.spec.renew_time = datetime.datetime.now(datetime.UTC)
                try:
                    coordination.replace_namespaced_lease(lease.name, lease.namespace, with_conflicts)
                except client.ApiException as e:
                    if e.status != 409:
                        raise
                    continue
                stop.wait(0.3)

        intruder = threading.Thread(target=intrude, daemon=True)
        intruder.start()
        lost = wait_for("the leader is told it lost", leader.lost.is_set, timeout=DEADLINE + 3 * RETRY + 5)
        stop.set()
        intruder.join()
        print(f"\nleader told of the loss after {lost:.2f}s (renew deadline {DEADLINE}s, retry {RETRY}s)")
        assert lost <= DEADLINE + 2 * RETRY + 1
        assert not leader.elector.leading.is_set()
    finally:
        leader.elector.stop()
        leader.elector.close()
