"""A real OpenID Connect provider on 127.0.0.1 for sign-in tests: zitadel/oidc's example provider.

It is a complete provider (discovery, authorization code flow with PKCE, ID tokens signed RS256,
userinfo, JWKS) with a username/password login page and users from a JSON file, built from its Go
module into the harness cache on first use (about 15 s with a warm Go cache). Its issuer is
``http://localhost:<port>/``; the client ``web`` with secret ``secret`` may redirect to the URIs
given at start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import urllib.request

from harness import processes

MODULE = "github.com/zitadel/oidc/v3"
VERSION = "v3.45.1"
CLIENT_ID = "web"
CLIENT_SECRET = "secret"


def binary() -> pathlib.Path:
    """The provider's binary, built into ``$STOREOPS_CACHE/bin/oidc-provider-<version>/`` when missing."""
    cache = pathlib.Path(os.environ.get("STOREOPS_CACHE") or pathlib.Path.home() / ".cache" / "storeops")
    folder = cache / "bin" / f"oidc-provider-{VERSION}"
    built = folder / "server"
    if built.is_file():
        return built
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(partial), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    subprocess.run(["go", "install", "-trimpath", "-ldflags=-s -w", f"{MODULE}/example/server@{VERSION}"],
                   env=env, check=True, capture_output=True, timeout=900)
    partial.rename(folder)
    return built


@dataclasses.dataclass(frozen=True)
class User:
    username: str
    password: str
    email: str
    email_verified: bool = True


@dataclasses.dataclass
class Provider:
    issuer: str
    process: processes.Process

    def stop(self) -> None:
        self.process.stop()


def start(*, state: pathlib.Path, users: list[User], redirect_uris: list[str]) -> Provider:
    """Run the provider on a free loopback port with these users, until ``stop``."""
    state.mkdir(parents=True, exist_ok=True)
    users_file = state / "users.json"
    users_file.write_text(json.dumps({
        f"id{i}": {"ID": f"id{i}", "Username": u.username, "Password": u.password, "FirstName": u.username,
                   "LastName": "Example", "Email": u.email, "EmailVerified": u.email_verified,
                   "PreferredLanguage": "en", "IsAdmin": False}
        for i, u in enumerate(users, 1)}))
    port = processes.free_port()
    issuer = f"http://localhost:{port}/"
    process = processes.spawn(
        "oidc-provider", [str(binary())], log_dir=state, tie_to_parent=True,
        env={"PORT": str(port), "USERS_FILE": str(users_file), "REDIRECT_URI": ",".join(redirect_uris)})
    processes.wait_until("the OIDC provider's discovery document", lambda: _discovery_ok(issuer), timeout=30,
                         process=process)
    return Provider(issuer, process)


def _discovery_ok(issuer: str) -> bool:
    try:
        with urllib.request.urlopen(issuer + ".well-known/openid-configuration", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
