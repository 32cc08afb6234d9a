"""The status reader over HTTP (a real uvicorn server in a thread) and ``storeops status``, against the real
API server: a store's status, its transitions as Server-Sent Events (with resume), the fleet, metrics."""

from __future__ import annotations

import collections.abc
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client
from starlette.applications import Starlette

from generator import cli
from harness import processes
from harness import stack as harness_stack
from tests.integration.status import support
from webhook import access
from webhook import app as webhook_app
from webhook.auth import RateLimiter
from webhook.settings import StatusSettings, Token
from webhook.status import command as statuscommand
from webhook.status import reader as statusreader
from webhook.status import routes as statusroutes
from webhook.status.watching import GROUP, PLURAL, VERSION

TOKEN = "read-token-for-status-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OWNER_TOKEN = "ann-owner-token"
ANN = "ann@owned.example"


@pytest.fixture
def config(tmp_path: Path, namespace: str) -> StatusSettings:
    return StatusSettings(namespace=namespace, ledger=tmp_path / "status.sqlite3", workdir=tmp_path / "no-clone",
                          backoff_min=0.1, tick=0.1)


@pytest.fixture
def served(apiserver: harness_stack.Stack, config: StatusSettings) -> collections.abc.Iterator[
        tuple[str, statusreader.StatusReader]]:
    """The status routes served by uvicorn in a thread, with a running reader."""
    reader = statusreader.build(config, api=support.api_client(apiserver.kubeconfig))
    stop = threading.Event()
    reader.start(stop=stop)
    app = Starlette(routes=statusroutes.ROUTES, exception_handlers=webhook_app.EXCEPTION_HANDLERS)
    app.state.status_reader = reader
    app.state.gate = access.Gate(tokens=(Token(TOKEN, write=False), Token(OWNER_TOKEN, name="ann", owner=ANN)),
                                 limiter=RateLimiter(rate=0, burst=1), max_body_bytes=1024)
    # What the intake would answer: ann owns "owned", nobody here owns anything else.
    app.state.owner_of = lambda store_id: ANN if store_id == "owned" else "someone@else.example"
    port = processes.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    support.wait_until("uvicorn to start", lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}", reader
    finally:
        stop.set()
        server.should_exit = True
        thread.join(10)
        reader.join()
        reader.close()


def create(custom: client.CustomObjectsApi, namespace: str, store_id: str, status: dict[str, Any] | None) -> None:
    body = support.application(store_id, namespace)
    if status is not None:
        body["status"] = status
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


READY = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded")


def read_events(url: str, frames: list[dict[str, Any]], *, headers: dict[str, str]) -> None:
    """Collect SSE frames (id + parsed data) until the server ends the stream."""
    with httpx.Client(timeout=httpx.Timeout(5.0, read=60.0)) as http, \
            http.stream("GET", url, headers={**AUTH, **headers}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith("id: "):
                frame["id"] = int(line[4:])
            elif line.startswith("data: "):
                frame["data"] = json.loads(line[6:])
            elif not line and "data" in frame:
                frames.append(frame)
                frame = {}


def test_status_and_fleet_need_a_token_and_answer_from_the_reader(
        served: tuple[str, statusreader.StatusReader], custom: client.CustomObjectsApi, namespace: str) -> None:
    base, reader = served
    create(custom, namespace, "web1", READY)
    support.wait_until("web1 ready", lambda: (reader.reporter.row("web1") or None) is not None)
    assert httpx.get(f"{base}/v1/stores/web1/status").status_code == 401
    assert httpx.get(f"{base}/v1/stores/web1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = httpx.get(f"{base}/v1/stores/web1/status", headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["store_id"], body["status"], body["url"]) == ("web1", "ready", "http://web1.stores.localtest.me")
    assert body["error"] is None
    missing = httpx.get(f"{base}/v1/stores/nope/status", headers=AUTH)
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]
    fleet = httpx.get(f"{base}/v1/status", headers=AUTH).json()
    assert fleet["counts"]["ready"] == 1
    assert [s["store_id"] for s in fleet["stores"]] == ["web1"]
    metrics = httpx.get(f"{base}/metrics/status").text
    assert 'storeops_stores{state="ready"} 1' in metrics
    assert 'storeops_status_transitions_total{state="ready"} 1' in metrics
    assert "storeops_store_time_to_ready_seconds_count" in metrics


def test_an_owner_token_sees_the_status_of_its_owners_stores_only(
        served: tuple[str, statusreader.StatusReader], custom: client.CustomObjectsApi, namespace: str) -> None:
    base, reader = served
    owner = {"Authorization": f"Bearer {OWNER_TOKEN}"}
    for store_id in ("owned", "foreign"):
        create(custom, namespace, store_id, READY)
    support.wait_until("both reported", lambda: reader.reporter.row("owned") is not None
                       and reader.reporter.row("foreign") is not None)
    assert httpx.get(f"{base}/v1/stores/owned/status", headers=owner).status_code == 200
    assert httpx.get(f"{base}/v1/stores/foreign/status", headers=owner).status_code == 404
    assert httpx.get(f"{base}/v1/stores/foreign/events", headers=owner).status_code == 404
    fleet = httpx.get(f"{base}/v1/status", headers=owner).json()
    assert [s["store_id"] for s in fleet["stores"]] == ["owned"] and fleet["counts"] == {"ready": 1}
    everything = httpx.get(f"{base}/v1/status", headers=AUTH).json()["stores"]
    assert {s["store_id"] for s in everything} >= {"owned", "foreign"}
    # One stream for a page of stores: the owner's only, whatever it asks for.
    for headers, expected in ((owner, {"owned"}), (AUTH, {"owned", "foreign"})):
        with httpx.stream("GET", f"{base}/v1/events?stores=owned,foreign", headers=headers, timeout=10) as stream:
            got: set[str] = set()
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    got.add(json.loads(line.removeprefix("data: "))["store_id"])
                if got == expected or len(got) > len(expected):
                    break
        assert got == expected


def test_events_stream_each_transition_and_resume_after_the_last_event_id(
        served: tuple[str, statusreader.StatusReader], custom: client.CustomObjectsApi, namespace: str) -> None:
    base, reader = served
    create(custom, namespace, "web2", support.argo_status(sync="OutOfSync", health="Missing"))
    support.wait_until("web2 syncing", lambda: reader.reporter.row("web2") is not None)
    frames: list[dict[str, Any]] = []
    listener = threading.Thread(target=read_events, args=(f"{base}/v1/stores/web2/events", frames),
                                kwargs={"headers": {}}, daemon=True)
    listener.start()
    support.wait_until("the current state first", lambda: len(frames) == 1)
    assert frames[0]["data"]["status"] == "syncing"
    support.set_status(custom, namespace, "web2", READY)
    support.wait_until("ready streamed", lambda: len(frames) == 2)
    support.set_status(custom, namespace, "web2", support.argo_status(
        sync="Synced", health="Healthy", conditions=[{"type": "SyncError", "message": "hook failed"}]))
    support.wait_until("failed streamed", lambda: len(frames) == 3)
    assert [f["data"]["status"] for f in frames] == ["syncing", "ready", "failed"]
    assert frames[1]["data"]["url"] == "http://web2.stores.localtest.me"
    assert frames[2]["data"]["error"] == "SyncError: hook failed"
    assert frames[1]["id"] < frames[2]["id"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "store-web2")
    listener.join(20)
    assert not listener.is_alive(), "the stream ends once the store is deleted"
    assert frames[-1]["data"]["status"] == "deleted"

    resumed: list[dict[str, Any]] = []
    read_events(f"{base}/v1/stores/web2/events", resumed, headers={"Last-Event-ID": str(frames[1]["id"])})
    assert [f["data"]["status"] for f in resumed] == ["failed", "deleted"]


def test_storeops_status_prints_the_fleet_as_a_table(
        apiserver: harness_stack.Stack, custom: client.CustomObjectsApi, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    create(custom, namespace, "tab1", READY)
    create(custom, namespace, "tab2", support.argo_status(
        sync="Synced", health="Healthy", conditions=[{"type": "ComparisonError", "message": "chart not found"}]))
    create(custom, namespace, "tab3", None)
    monkeypatch.setenv("STOREOPS_KUBECONFIG", str(apiserver.kubeconfig))
    monkeypatch.setenv("STOREOPS_ARGOCD_NAMESPACE", namespace)
    monkeypatch.setenv("STOREOPS_STATUS_DB", str(tmp_path / "none.sqlite3"))
    monkeypatch.setenv("STOREOPS_STATE_DIR", str(tmp_path / "state"))
    parser = cli.build_parser(statuscommand.add_commands)
    began = time.monotonic()
    assert cli.run(parser, ["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert time.monotonic() - began < 30
    assert lines[0].split() == ["STORE", "STATUS", "REVISION", "SINCE", "URL", "/", "MESSAGE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(rows) == ["tab1", "tab2", "tab3"]
    assert rows["tab1"].split()[1:3] == ["ready", "rrrrrrrrrrrr"]
    assert rows["tab1"].endswith("http://tab1.stores.localtest.me")
    assert "failed" in rows["tab2"] and rows["tab2"].endswith("ComparisonError: chart not found")
    assert rows["tab3"].split()[1] == "rendered"
    assert lines[-1] == "3 stores: 1 rendered, 1 ready, 1 failed"

    assert cli.run(parser, ["status", "--json", "--state", "failed"]) == 0
    assert [r["store"] for r in json.loads(capsys.readouterr().out)] == ["tab2"]


def test_storeops_status_without_a_cluster_or_ledger_says_what_to_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("STOREOPS_KUBECONFIG", "KUBERNETES_SERVICE_HOST", "STOREOPS_IN_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STOREOPS_STATUS_DB", str(tmp_path / "absent.sqlite3"))
    assert cli.run(cli.build_parser(statuscommand.add_commands), ["status"]) == 1
    assert "set STOREOPS_KUBECONFIG" in capsys.readouterr().err
