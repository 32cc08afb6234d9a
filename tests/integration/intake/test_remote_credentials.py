"""A Git remote that needs a token: it works, and the token shows nowhere.

The remote is real smart HTTP (``git http-backend``) refusing every request without the token.
What is checked for the token: every answer of the service, every log record, error messages,
the clone's configuration on disk, and the command line's output.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from generator import publishing, remotes
from generator.settings import Settings
from harness import examples
from tests import githttp
from tests.integration.intake.test_api import READ, WRITE, wait_for
from webhook import app

TOKEN = "ghs_s3cr3tT0kenValue42"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[githttp.Server]:
    with githttp.serve(tmp_path, username="x-access-token", token=TOKEN) as running:
        yield running


def no_token_in(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text, text


def test_a_token_in_the_remote_url_is_used_by_git_and_shown_nowhere(
        tmp_path: Path, server: githttp.Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = examples.service_settings(tmp_path)
    url = f"{server.url}/remote.git"
    settings = replace(settings, git=replace(settings.git, remote=url.replace("://", f"://x-access-token:{TOKEN}@")))
    assert settings.git.remote == url and settings.git.credentials is not None
    no_token_in(repr(settings), repr(settings.git))
    with TestClient(app.create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        created = client.post("/v1/stores", json=examples.store_payload("token-shop"), headers=WRITE)
        reviewed = client.post("/v1/stores", json=examples.store_payload("token-prod", cluster="prod"), headers=WRITE)
        answers = [created.text, reviewed.text]
        for accepted in (created, reviewed):
            request_id = accepted.json()["request_id"]
            wait_for(lambda r=request_id: client.get(f"/v1/requests/{r}", headers=READ).json()["status"]
                     != "requested")
            answers.append(client.get(f"/v1/requests/{request_id}", headers=READ).text)
        answers += [client.get(path, headers=READ).text for path in
                    ("/readyz", "/v1/stores", "/v1/stores/token-prod", "/metrics")]
    assert "token-shop" in examples.remote_stores(tmp_path / "remote.git")
    assert '"pending-review"' in answers[3] and url in answers[3]  # the review names the remote, without the token
    no_token_in(*answers, (settings.git.workdir / ".git" / "config").read_text(),
                *(r.getMessage() for r in caplog.records))
    # git authenticated for real: the server answered 401 until it was given the token.
    assert "" in server.requests and any(h.startswith("Basic ") for h in server.requests)


def test_a_refused_token_is_reported_without_the_token(
        tmp_path: Path, server: githttp.Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = examples.service_settings(tmp_path)
    wrong = "ghs_wrongTokenValue0000"
    remote = f"{server.url}/remote.git".replace("://", f"://x-access-token:{wrong}@")
    settings = replace(settings, git=replace(settings.git, remote=remote))
    with TestClient(app.create_app(settings)) as client:
        ready = wait_for(lambda: (a := client.get("/readyz")).json()["last_error"] and a)
        assert ready.status_code == 503
        error = ready.json()["last_error"]
        assert "cannot clone" in error and f"{server.url}/remote.git" in error
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert wrong not in error and wrong not in logged


def test_the_token_setting_and_the_command_line(tmp_path: Path, server: githttp.Server) -> None:
    example = examples.example_repo(tmp_path / "repo")
    publishing.seed_remote(tmp_path / "remote.git", example, "main")
    token_file = tmp_path / "git-token"
    token_file.write_text(TOKEN + "\n")
    env = {**os.environ, "STOREOPS_REPO": str(example), "STOREOPS_STATE_DIR": str(tmp_path / "state"),
           "STOREOPS_REMOTE": f"{server.url}/remote.git", "STOREOPS_GIT_TOKEN_FILE": str(token_file)}
    assert Settings.from_env(env).credentials == remotes.Credentials("x-access-token", TOKEN)
    (example / "stores" / "bookworm.yaml").unlink()  # the remote's own inputs are published, not these
    published = subprocess.run([sys.executable, "-m", "webhook.cli", "publish"], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert published.returncode == 0, published.stderr
    # The token in the URL, and a path the server does not have: the error names the URL without it.
    env = {**env, "STOREOPS_REMOTE": f"{server.url}/missing.git".replace("://", f"://me:{TOKEN}@"),
           "STOREOPS_STATE_DIR": str(tmp_path / "other-state")}
    del env["STOREOPS_GIT_TOKEN_FILE"]
    failed = subprocess.run([sys.executable, "-m", "webhook.cli", "-v", "publish"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert f"{server.url}/missing.git" in failed.stderr
    no_token_in(failed.stdout, failed.stderr, *(p.read_text() for p in (tmp_path / "other-state").rglob("config")))
