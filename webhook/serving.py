"""``storeops serve``: the intake app under uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import secrets
import sys
import threading
from types import FrameType

import uvicorn

from generator.settings import Settings
from webhook import app, settings
from webhook.errors import SettingsError
from webhook.github import client as github
from webhook.settings import StatusSettings

log = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn's server, telling the app the moment shutdown begins (SIGTERM, SIGINT).

    uvicorn closes the listening socket, then waits for open connections before it runs the app's
    shutdown; an event stream never closes by itself, so the streams watch ``stopping`` and end.
    The wait is bounded as well (``STOREOPS_SHUTDOWN_GRACE``): past it uvicorn cancels what is left.
    """

    def __init__(self, config: uvicorn.Config, *, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("shutting down: ending event streams, finishing requests (at most %ss)",
                     self.config.timeout_graceful_shutdown)
        self.stopping.set()
        super().handle_exit(sig, frame)


def cmd_serve(args: argparse.Namespace, _git: Settings) -> int:
    config = settings.ServiceSettings.from_env()
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    config = dataclasses.replace(config, host=host, port=port)
    hub = github.GitHubSettings.from_env()
    status = StatusSettings.from_env()
    settings.check_election(config, status)
    served = app.create_app(config, github=hub, status=status)
    uvicorn_config = uvicorn.Config(served, host=host, port=port, log_level="info" if args.verbose else "warning",
                                    access_log=bool(args.verbose), lifespan="on",
                                    # The client is the TCP peer; STOREOPS_TRUSTED_PROXIES says whose
                                    # X-Forwarded-For to believe (webhook.access), not uvicorn's default.
                                    proxy_headers=False,
                                    timeout_graceful_shutdown=config.shutdown_grace)
    Server(uvicorn_config, stopping=served.state.stopping).run()
    return 0


def cmd_token(args: argparse.Namespace, _git: Settings) -> int:
    """A new API token: the token once, on stdout, and the entry for the tokens file (its hash only)."""
    if (args.scope == "owner") != bool(args.owner):
        raise SettingsError("--owner EMAIL goes with --scope owner, and only with it")
    token = secrets.token_urlsafe(32)
    entry = {"name": args.name, "scope": args.scope, **({"owner": args.owner} if args.owner else {}),
             "sha256": hashlib.sha256(token.encode()).hexdigest()}
    # The entry is checked as the service will check it, so a bad name is refused here, not at start-up.
    _, problems = settings.parse_tokens("tokens:\n  - " + json.dumps(entry) + "\n", "(new token)")
    if problems:
        raise SettingsError("; ".join(str(p) for p in problems))
    print(token)
    print(f"# add to STOREOPS_TOKENS_FILE; give the line above to {args.name} and keep it nowhere else:",
          file=sys.stderr)
    print("  - " + json.dumps(entry), file=sys.stderr)
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "run the intake service: request form, JSON API and form-service webhook into Git"
    serve = subparsers.add_parser("serve", help=help_text, description=help_text)
    serve.add_argument("--host", help="address to listen on (default: STOREOPS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: STOREOPS_PORT or 8080)")
    serve.set_defaults(func=cmd_serve)
    help_text = "make an API token: prints it, and its entry for STOREOPS_TOKENS_FILE (only its hash)"
    token = subparsers.add_parser("token", help=help_text, description=help_text)
    token.add_argument("name", help="who uses it (shown in the audit trail)")
    token.add_argument("--scope", choices=("read", "write", "owner"), default="read")
    token.add_argument("--owner", help="with --scope owner: the owner's email")
    token.set_defaults(func=cmd_token)
