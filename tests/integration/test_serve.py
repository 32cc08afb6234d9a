"""``storeops serve`` with nothing configured: the example data and a local bare remote made on first start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness import examples
from tests.integration.intake.test_crash import free_port
from webhook.settings import QUEUE_FILE, TOKEN_FILE


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    repo = examples.example_repo(tmp_path / "checkout")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOREOPS_")}
    env["STOREOPS_PORT"] = str(port)  # only so that parallel runs do not collide on 8080
    env["PYTHONPATH"] = str(examples.ROOT)
    server = subprocess.Popen([sys.executable, "-m", "webhook.cli", "serve"], cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        state = repo / ".storeops"
        assert (state / "remote.git" / "HEAD").is_file()
        assert (state / QUEUE_FILE).is_file()
        token = (state / TOKEN_FILE).read_text().strip()
        answer = httpx.post(f"{url}/v1/stores", json=examples.store_payload("default-shop"),
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202
        deadline = time.monotonic() + 20
        while "default-shop" not in examples.remote_stores(state / "remote.git"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)
    # A clean stop: uvicorn re-raises SIGTERM after its graceful shutdown; a startup failure exits 3.
    assert server.returncode in (0, -signal.SIGTERM)
