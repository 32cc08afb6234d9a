"""schemathesis against ``/openapi.json`` of a real ``storeops`` app served by uvicorn on 127.0.0.1, its status
reader on the real API server.

Every operation the document lists (the API, the webhooks, the pages) gets generated requests,
valid and not. Two properties: no answer is a 5xx, and a request answered with an error writes
nothing (no queued request, no commit). A second test keeps the document honest: every route the
app serves is in it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from harness import examples
from harness import stack as harness_stack
from harness.processes import free_port
from tests.integration.status import support
from webhook import app, openapi
from webhook.settings import ServiceSettings, StatusSettings

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}


class Served:
    def __init__(self, base: str, config: ServiceSettings) -> None:
        self.base = base
        self.config = config

    def queued(self) -> int:
        with sqlite3.connect(f"file:{self.config.queue_path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def head(self) -> str:
        return examples.git(Path(self.config.git.remote), "rev-parse", "main").strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, apiserver: harness_stack.Stack) -> Iterator[Served]:
    """The whole service: intake, and the status reader on the real API server (so nothing is "off")."""
    work = tmp_path_factory.mktemp("fuzz")
    config = examples.service_settings(work, capacity=500, rate=0)
    namespace = support.new_namespace(apiserver)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace,
                            ledger=work / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1, tick=0.1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.create_app(config, status=status), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.1)
    yield Served(base, config)
    server.should_exit = True
    thread.join(15)


#: Generated requests per operation (hypothesis examples); the suite's budget, not a timed target.
EXAMPLES = 25


def test_no_5xx_and_no_write_for_invalid_input(served: Served) -> None:
    api = schemathesis.openapi.from_url(f"{served.base}/openapi.json")
    tried: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        # The events stream would never end: it is followed in its own tests, not fuzzed here.
        if operation.path in ("/v1/stores/{store_id}/events", "/v1/events"):
            continue
        tried.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            before, head = served.queued(), served.head()
            response = case.call(headers=WRITE, timeout=10)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                assert (served.queued(), served.head()) == (before, head), \
                    f"{case.method} {case.path} answered {response.status_code} but wrote"

        call()
    assert len(tried) >= 15, tried


def test_every_route_is_in_the_document() -> None:
    paths = openapi.document()["paths"]
    for route in app.ROUTES:
        path = getattr(route, "path", "")
        methods = {m.lower() for m in (getattr(route, "methods", None) or ())} - {"head"}
        assert path in paths, f"{path} is served but not in /openapi.json"
        assert methods <= set(paths[path]), f"{path}: {methods - set(paths[path])} not in /openapi.json"
