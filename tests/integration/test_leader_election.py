"""Two replicas, one writer: two real ``storeops serve`` processes on one PostgreSQL database, electing their
writer with a Lease on the real API server; the leader is ``kill -9``ed in the middle of a burst of requests.

What is checked: exactly one replica leads, and it is the Lease's holder; the other takes over within the
lease's bound, measured and printed; every request answered 202 lands in Git exactly once; two replicas
asked for the same new id at once give one 202 and one 409; a status callback the dead leader owed (its
receiver refused it) is delivered by the new leader, every transition at least once, each with its own
event id, and none reported twice; a clean stop hands the Lease over at once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from harness import examples
from harness import stack as harness_stack
from harness.processes import free_port
from tests.integration.status import support
from webhook import state
from webhook.status.watching import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.controlplane

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}
LEASE = "storeops-leader"
#: Short, so the test is quick; the defaults are 15 / 10 / 2.
DURATION, RENEW_DEADLINE, RETRY = 6, 4, 1


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 60.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


class Replica:
    """One ``storeops serve`` process: its own port and state dir; the remote, database and Lease are shared."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "STOREOPS_PORT": str(self.port), "STOREOPS_STATE_DIR": str(folder / name)}
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def identity(self) -> str:
        """What the replica calls itself in the Lease (``webhook.leadership.identity``)."""
        assert self.process is not None
        return f"{socket.gethostname()}_{self.process.pid}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "webhook.cli", "-v", "serve"], env=self.env,
                                            stdout=log, stderr=log, cwd=examples.ROOT)

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"replica {self.name} exited:\n{self.log_path.read_text()[-3000:]}"
            return self.readyz().get("status") == "ready"

        wait_for(f"replica {self.name} ready", ready, timeout=60, every=0.1)

    def readyz(self) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=2).json()
            return answer
        except (httpx.TransportError, ValueError):
            return {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def replicas(tmp_path: Path, apiserver: harness_stack.Stack, database_url: str,
             receiver: support.Receiver) -> Iterator[tuple[list[Replica], str, Path]]:
    namespace = support.new_namespace(apiserver)
    config = examples.service_settings(tmp_path / "git", capacity=1000)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STOREOPS_")},
           "PYTHONPATH": str(examples.ROOT), "STOREOPS_REPO": str(config.git.repo),
           "STOREOPS_REMOTE": str(config.git.remote),
           "STOREOPS_API_TOKENS": f"{examples.WRITE_TOKEN},{examples.READ_TOKEN}:read",
           "STOREOPS_RATE": "0", "STOREOPS_BATCH_WINDOW": "0.02", "STOREOPS_RETRY_MIN": "0.05",
           "STOREOPS_DATABASE_URL": database_url, "STOREOPS_KUBECONFIG": str(apiserver.kubeconfig),
           "STOREOPS_ARGOCD_NAMESPACE": namespace, "STOREOPS_LEADER_ELECTION": f"{namespace}/{LEASE}",
           "STOREOPS_LEASE_DURATION": str(DURATION), "STOREOPS_LEASE_RENEW_DEADLINE": str(RENEW_DEADLINE),
           "STOREOPS_LEASE_RETRY_PERIOD": str(RETRY), "STOREOPS_FOLLOWER_REFRESH": "1",
           "STOREOPS_QUEUE_POLL": "0.2", "STOREOPS_WATCH_BACKOFF_MIN": "0.1", "STOREOPS_STATUS_TICK": "0.2",
           "STOREOPS_CALLBACK_URL": receiver.url, "STOREOPS_CALLBACK_SECRET": support.SECRET,
           "STOREOPS_CALLBACK_ALLOW": "127.0.0.1", "STOREOPS_CALLBACK_RETRY_MIN": "0.2",
           "STOREOPS_CALLBACK_RETRY_MAX": "0.5", "STOREOPS_CALLBACK_ATTEMPTS": "100000",
           "STOREOPS_SHUTDOWN_GRACE": "5"}
    started = [Replica(name, env, tmp_path) for name in ("a", "b")]
    try:
        threads = [threading.Thread(target=r.start) for r in started]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(r.alive() for r in started)
        yield started, namespace, Path(str(config.git.remote))
    finally:
        for replica in started:
            replica.stop()
        for replica in started:
            if replica.log_path.exists():
                print(f"--- replica {replica.name} log (tail) ---\n{replica.log_path.read_text()[-4000:]}")


def lease_of(coordination: client.CoordinationV1Api, namespace: str) -> client.V1Lease | None:
    try:
        return coordination.read_namespaced_lease(LEASE, namespace)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def holder(coordination: client.CoordinationV1Api, namespace: str) -> str:
    lease = lease_of(coordination, namespace)
    return (lease.spec.holder_identity or "") if lease is not None and lease.spec is not None else ""


def post_store(url: str, store_id: str, *, key: str | None = None) -> httpx.Response:
    headers = {**WRITE, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(f"{url}/v1/stores", json=examples.store_payload(store_id), headers=headers, timeout=15)


def same_id_at_once(first: Replica, second: Replica, store_id: str) -> list[int]:
    """One new id asked of both replicas at the same moment: the status codes, sorted."""
    barrier = threading.Barrier(2)
    codes: list[int] = []
    lock = threading.Lock()

    def ask(replica: Replica) -> None:
        barrier.wait()
        code = post_store(replica.url, store_id).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=ask, args=(r,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(codes)


def outbox(database_url: str) -> list[tuple[int, int, str, int]]:
    """The callback deliveries still owed: (event number, attempts, store, delivered-or-not) per row."""
    db = state.connect(database_url, "")
    try:
        rows = db.execute("SELECT e.seq, o.attempts, e.store_id, o.dead FROM outbox o JOIN events e ON "
                          "e.seq = o.seq WHERE o.sink = 'callback' ORDER BY e.seq").rows
        return [(int(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]
    finally:
        db.close()


def events(database_url: str, store_id: str) -> list[tuple[str, str]]:
    """Every transition recorded for the store: (event id, status), in order."""
    db = state.connect(database_url, "")
    try:
        rows = db.execute("SELECT seq, state FROM events WHERE store_id = ? ORDER BY seq", (store_id,)).rows
        return [(str(r[0]), str(r[1])) for r in rows]
    finally:
        db.close()


def test_two_replicas_elect_one_writer_and_the_other_takes_over_a_kill_9_mid_burst(
        replicas: tuple[list[Replica], str, Path], apiserver: harness_stack.Stack, database_url: str,
        receiver: support.Receiver, custom: client.CustomObjectsApi) -> None:
    (a, b), namespace, bare = replicas
    api = support.api_client(apiserver.kubeconfig)
    coordination = client.CoordinationV1Api(api)
    try:
        # --- exactly one leader, and it is the Lease's holder ---------------------------------------------------
        wait_for("a leader", lambda: holder(coordination, namespace) in (a.identity, b.identity))
        leader, follower = (a, b) if holder(coordination, namespace) == a.identity else (b, a)
        wait_for("the leader says it leads", lambda: leader.readyz().get("role") == "leader")
        assert follower.readyz().get("role") == "follower"
        assert holder(coordination, namespace) == leader.identity
        print(f"\nleader {leader.name} ({leader.identity}), follower {follower.name} ({follower.identity})")

        # --- one new id asked of both at once: one 202, one 409 -------------------------------------------------
        assert same_id_at_once(a, b, "twin-one") == [202, 409]

        # --- a transition the leader owes a callback for, refused by the receiver -------------------------------
        receiver.fail_next = 10**9
        app = support.application("cb-one", namespace)
        app["status"] = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, app)
        owed = wait_for("the leader tried the callback and was refused", lambda: [
            row for row in outbox(database_url) if row[2] == "cb-one" and row[1] >= 1])
        assert events(database_url, "cb-one") == [(str(owed[0][0]), "ready")]
        assert receiver.all() == []

        # --- a burst of 30 new stores spread over both replicas; the leader is killed in the middle -------------
        seeded_commits = examples.commit_count(bare)
        wanted = [f"burst-{i:02d}" for i in range(30)]
        answered: dict[str, str] = {}
        lock = threading.Lock()
        killed = threading.Event()
        replicas_by_turn = [leader, follower]

        def send(index: int, store_id: str) -> None:
            # A client retries what got no answer on another replica, with the same Idempotency-Key.
            for attempt in range(200):
                target = replicas_by_turn[(index + attempt) % 2]
                try:
                    answer = post_store(target.url, store_id, key=store_id)
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                assert answer.status_code == 202, answer.text
                with lock:
                    answered[store_id] = answer.json()["request_id"]
                return
            raise AssertionError(f"{store_id}: no replica answered")

        def client_loop(offset: int) -> None:
            for i in range(offset, len(wanted), 6):
                send(i, wanted[i])
                if not killed.is_set():
                    time.sleep(0.25)  # a steady stream over a second or more: the kill lands while it comes in

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        wait_for("part of the burst answered and pushed", lambda: len(answered) >= 8
                 and examples.commit_count(bare) > seeded_commits, timeout=30, every=0.01)
        last_renewal = lease_of(coordination, namespace).spec.renew_time  # type: ignore[union-attr]
        leader.kill()
        killed_at = time.monotonic()
        killed.set()
        killed_wall = datetime.datetime.now(datetime.UTC)
        with lock:
            answered_at_kill = len(answered)
        assert 0 < answered_at_kill < len(wanted), f"the kill landed mid-burst ({answered_at_kill} answered)"

        # --- the follower takes over ------------------------------------------------------------------------------
        wait_for("the follower holds the Lease", lambda: holder(coordination, namespace) == follower.identity,
                 timeout=DURATION + 3 * RETRY + 10, every=0.02)
        takeover = time.monotonic() - killed_at
        since_renewal = (killed_wall - last_renewal).total_seconds() + takeover
        print(f"takeover after kill -9: {takeover:.2f}s ({since_renewal:.2f}s after the dead leader's last "
              f"renewal seen before the kill; lease duration {DURATION}s, retry period {RETRY}s)")
        # A follower counts the lease from when it saw the last renewal, and looks every retry period.
        assert takeover <= DURATION + 2 * RETRY + 1.0, f"takeover took {takeover:.2f}s"
        wait_for("the new leader says it leads", lambda: follower.readyz().get("role") == "leader")

        for thread in threads:
            thread.join()
        assert set(answered) == set(wanted)

        # --- every 202 lands in Git exactly once ------------------------------------------------------------------
        def all_committed() -> bool:
            statuses = [httpx.get(f"{follower.url}/v1/requests/{r}", headers=READ, timeout=10).json()["status"]
                        for r in answered.values()]
            assert "rejected" not in statuses
            return all(s == "committed" for s in statuses)

        wait_for("every answered request committed", all_committed, timeout=60, every=0.2)
        in_git = examples.remote_stores(bare)
        assert set(wanted) | {"twin-one"} <= set(in_git)
        added = examples.additions(bare)
        doubled = {path: n for path, n in added.items() if n != 1}
        assert doubled == {}, f"store files added more than once: {doubled}"
        assert all(added.get(f"stores/{store_id}.yaml") == 1 for store_id in [*wanted, "twin-one"])

        # --- the callback the dead leader owed is delivered by the new one, once per transition ------------------
        receiver.fail_next = 0
        wait_for("the owed callback delivered", lambda: receiver.of("cb-one", "ready"), timeout=30)
        support.set_status(custom, namespace, "cb-one", support.argo_status(
            sync="Synced", health="Degraded", health_message="CrashLoopBackOff"))
        wait_for("the next transition delivered", lambda: receiver.of("cb-one", "degraded"), timeout=30)
        wait_for("nothing owed", lambda: not [r for r in outbox(database_url) if r[2] == "cb-one"], timeout=30)
        recorded = events(database_url, "cb-one")
        # The new leader took up the ledger: it did not report `ready` again as a new transition.
        assert [status for _, status in recorded] == ["ready", "degraded"]
        got = receiver.all()
        assert all(r.signature_ok for r in got)
        assert all(r.payload["event_id"] == r.event_id for r in got), "the body carries the header's event id"
        delivered = {(r.event_id, r.payload["store_id"], r.payload["status"]) for r in got}
        assert {(event_id, "cb-one", status) for event_id, status in recorded} <= delivered, "a transition was lost"
        assert len({event_id for event_id, _, _ in delivered}) == len(delivered), \
            "one event id per transition, whichever replica delivered it"

        # --- the killed replica comes back as a follower; the same-id race holds again ---------------------------
        leader.start()
        wait_for("the restarted replica follows", lambda: leader.readyz().get("role") == "follower")
        assert holder(coordination, namespace) == follower.identity
        assert same_id_at_once(leader, follower, "twin-two") == [202, 409]
        wait_for("twin-two in Git", lambda: "twin-two" in examples.remote_stores(bare), timeout=30)
        assert examples.additions(bare).get("stores/twin-two.yaml") == 1

        # --- a clean stop releases the Lease: the other takes over at once, not after the lease duration --------
        stopping_at = time.monotonic()
        # uvicorn ends a clean shutdown by raising the signal it caught again: -SIGTERM, or 0.
        assert follower.terminate() in (0, -signal.SIGTERM)
        assert "released lease" in follower.log_path.read_text()
        wait_for("the restarted replica leads", lambda: holder(coordination, namespace) == leader.identity,
                 timeout=DURATION + 3 * RETRY + 10, every=0.02)
        handover = time.monotonic() - stopping_at
        print(f"handover after a clean stop (SIGTERM): {handover:.2f}s")
        assert handover < DURATION, f"a released Lease was taken only after {handover:.2f}s"
        wait_for("it says it leads", lambda: leader.readyz().get("role") == "leader")
    finally:
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "store-cb-one")
        support.close(api)
