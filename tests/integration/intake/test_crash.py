"""Exactly once across kill -9: a real ``storeops serve`` process, SIGKILLed mid-burst and restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from generator import publishing
from harness import examples
from webhook.intake import queueing, writer
from webhook.intake.admission import body_hash

HEADERS = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, tmp: Path) -> None:
        settings = examples.service_settings(tmp, capacity=1000)
        self.bare = Path(settings.git.remote)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "STOREOPS_REPO": str(settings.git.repo), "STOREOPS_REMOTE": str(self.bare),
                    "STOREOPS_STATE_DIR": str(settings.git.state_dir), "STOREOPS_PORT": str(self.port),
                    "STOREOPS_API_TOKENS": f"{examples.WRITE_TOKEN},{examples.READ_TOKEN}:read",
                    "STOREOPS_RATE": "0", "STOREOPS_BATCH_WINDOW": "0.02", "STOREOPS_RETRY_MIN": "0.05"}
        self.log = open(tmp / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "webhook.cli", "serve"], env=self.env,
                                        stdout=self.log, stderr=self.log, cwd=examples.ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "storeops serve exited"
            time.sleep(0.1)
        raise AssertionError("storeops serve did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    running.start()
    yield running
    running.stop()


def send(client: httpx.Client, url: str, store_id: str) -> str | None:
    """POST one store request with its id as the Idempotency-Key; the request id on a 2xx, else None."""
    try:
        answer = client.post(f"{url}/v1/stores", json=examples.store_payload(store_id),
                             headers={**HEADERS, "Idempotency-Key": store_id}, timeout=10)
    except httpx.TransportError:
        return None
    assert answer.status_code == 202, answer.text
    request_id: str = answer.json()["request_id"]
    return request_id


def test_sigkill_mid_burst_loses_nothing_and_doubles_nothing(server: Server) -> None:
    seeded = set(examples.remote_stores(server.bare))
    wanted = [f"burst-{i:03d}" for i in range(300)]
    ledger: dict[str, str] = {}
    lock = threading.Lock()

    def client_loop(ids: list[str]) -> None:
        with httpx.Client() as client:
            for store_id in ids:
                request_id = send(client, server.url, store_id)
                if request_id is not None:
                    with lock:
                        ledger[store_id] = request_id

    threads = [threading.Thread(target=client_loop, args=(wanted[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    # Kill once part of the burst is answered and the writer has pushed at least once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(ledger) < 60 or examples.commit_count(server.bare) < 2):
        time.sleep(0.01)
    server.kill()
    for thread in threads:
        thread.join()
    answered_before = dict(ledger)
    assert 0 < len(answered_before) < len(wanted), "the kill landed mid-burst"

    server.start()
    with httpx.Client() as client:
        # Clients retry what got no answer, with the same Idempotency-Key.
        for store_id in wanted:
            if store_id not in ledger:
                request_id = send(client, server.url, store_id)
                assert request_id is not None
                ledger[store_id] = request_id
        # A retry of an answered request returns the first answer.
        some = next(iter(answered_before))
        assert send(client, server.url, some) == answered_before[some]

        def all_committed() -> bool:
            statuses = [client.get(f"{server.url}/v1/requests/{r}", headers=HEADERS).json()["status"]
                        for r in ledger.values()]
            assert "rejected" not in statuses
            return all(s == "committed" for s in statuses)

        deadline = time.monotonic() + 60
        while not all_committed():
            assert time.monotonic() < deadline, "requests did not land"
            time.sleep(0.2)

    in_git = set(examples.remote_stores(server.bare)) - seeded
    assert in_git == set(ledger) == set(wanted)
    added = examples.additions(server.bare)
    assert all(added[f"stores/{i}.yaml"] == 1 for i in wanted), "a store was added more than once"


def test_a_request_pushed_before_a_crash_is_marked_not_applied_again(tmp_path: Path) -> None:
    """The crash window between a successful push and marking the rows done."""
    settings = examples.service_settings(tmp_path)
    queue = queueing.Queue(path=settings.queue_path)
    content = "# yaml-language-server: $schema=../generator/schemas/store.schema.json\n" \
              "id: landed\nname: Landed\nengine: medusa\nplan: small\ncluster: local\n" \
              "owner:\n  name: A\n  email: a@example.com\nstate: active\n"
    request = queue.add(queueing.Request(id="r-1", store_id="landed", action=queueing.CREATE, content=content,
                                         cluster="local", review=False, source="api", client="c",
                                         idempotency_key=None, body_hash=body_hash(b"x")))
    outcomes = writer.Outcomes()
    published = publishing.publish(
        settings.git, edit=lambda root: writer.apply_requests(root, [request], outcomes, reviewed=False))
    assert published.committed and outcomes.landed == ["r-1"]
    queue.close()  # "crash": pushed, never marked
    commits = examples.commit_count(Path(settings.git.remote))

    from starlette.testclient import TestClient

    from webhook import app

    with TestClient(app.create_app(settings)) as client:
        deadline = time.monotonic() + 20
        while client.get("/v1/requests/r-1", headers=HEADERS).json()["status"] != "committed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/v1/requests/r-1", headers=HEADERS).json()["commit"] == published.sha
    assert examples.commit_count(Path(settings.git.remote)) == commits
    assert examples.additions(Path(settings.git.remote))["stores/landed.yaml"] == 1
