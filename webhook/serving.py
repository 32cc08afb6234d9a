"""``storeops serve``: the intake app under uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from generator.settings import Settings
from webhook import app, settings
from webhook.github import client as github
from webhook.settings import StatusSettings

log = logging.getLogger(__name__)


def cmd_serve(args: argparse.Namespace, _git: Settings) -> int:
    config = settings.ServiceSettings.from_env()
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    hub = github.GitHubSettings.from_env()
    status = StatusSettings.from_env()
    uvicorn.run(app.create_app(config, github=hub, status=status), host=host, port=port,
                log_level="info" if args.verbose else "warning", access_log=bool(args.verbose), lifespan="on")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "run the intake service: request form, JSON API and form-service webhook into Git"
    serve = subparsers.add_parser("serve", help=help_text, description=help_text)
    serve.add_argument("--host", help="address to listen on (default: STOREOPS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: STOREOPS_PORT or 8080)")
    serve.set_defaults(func=cmd_serve)
