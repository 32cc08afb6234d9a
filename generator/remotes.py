"""Git remotes and their credentials: kept out of URLs, handed to git by a credential helper.

A remote such as ``https://x-access-token:<token>@github.com/org/fleet.git`` would put the token
in ``.git/config``, in git's messages, in logs, in errors and in every answer that names the
remote. storeops splits the userinfo off when it reads the setting: the URL it keeps, stores and
shows has none, and git gets the user name and token from a credential helper that reads them
from the environment of the one git process that needs them. :func:`redact` is the second line:
every log record and every error message that might carry a URL goes through it.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The user name GitHub (and most forges) expect beside a token over HTTPS.
DEFAULT_USERNAME = "x-access-token"
#: Environment variables that carry the credentials to the helper inside a git process.
USERNAME_VARIABLE = "STOREOPS_GIT_USERNAME"
TOKEN_VARIABLE = "STOREOPS_GIT_TOKEN"
#: A credential helper (run by git through the shell) that answers ``get`` from the environment.
_HELPER = (f'!f() {{ test "$1" = get || exit 0; echo "username=${{{USERNAME_VARIABLE}}}"; '
           f'echo "password=${{{TOKEN_VARIABLE}}}"; }}; f')
#: ``scheme://userinfo@``: whatever stands between ``//`` and the host's ``@`` is hidden.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"<>]*)@")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


@dataclass(frozen=True)
class Credentials:
    username: str
    token: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, token={REDACTED!r})"


def split(url: str) -> tuple[str, Credentials | None]:
    """A remote URL without its userinfo, and the credentials it carried (None without a password).

    A user name alone (``ssh://git@host/...``) is no secret and stays in the URL.
    """
    parts = urllib.parse.urlsplit(url)
    if "://" not in url or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    if not colon:
        if parts.scheme in ("http", "https") and username:
            # A bare token in the user name (https://<token>@host/...), as some forges document.
            return urllib.parse.urlunsplit(parts._replace(netloc=host)), Credentials(
                DEFAULT_USERNAME, urllib.parse.unquote(username))
        return url, None
    credentials = Credentials(urllib.parse.unquote(username) or DEFAULT_USERNAME, urllib.parse.unquote(password))
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), credentials


def git_environment(credentials: Credentials | None) -> dict[str, str]:
    """Environment for a git process: never prompt, and answer credential requests from ``credentials``.

    The helper list is reset first, so a helper configured on the machine (a credential store on
    disk, say) neither answers nor stores the token.
    """
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if credentials is None:
        return env
    return {**env, "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "credential.helper", "GIT_CONFIG_VALUE_0": "",
            "GIT_CONFIG_KEY_1": "credential.helper", "GIT_CONFIG_VALUE_1": _HELPER,
            USERNAME_VARIABLE: credentials.username, TOKEN_VARIABLE: credentials.token}


def _redacting_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory.storeops_redacts = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Hide URL userinfo in every log record of the process, whoever logs it and however it is handled.

    Installed as the record factory, so it holds for handlers configured later (uvicorn's) too.
    """
    current = logging.getLogRecordFactory()
    if not getattr(current, "storeops_redacts", False):
        logging.setLogRecordFactory(_redacting_factory(current))
