"""Remote URLs lose their credentials, and no URL's userinfo reaches a log line or a message."""

from __future__ import annotations

import logging

import pytest

from generator import remotes
from generator.errors import GitError
from generator.settings import Settings


@pytest.mark.parametrize(("url", "clean", "credentials"), [
    ("https://x-access-token:tok@github.com/o/r.git", "https://github.com/o/r.git",
     remotes.Credentials("x-access-token", "tok")),
    ("https://tok@github.com/o/r.git", "https://github.com/o/r.git", remotes.Credentials("x-access-token", "tok")),
    ("https://:p%40ss@git.example:8443/r.git", "https://git.example:8443/r.git",
     remotes.Credentials("x-access-token", "p@ss")),
    ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git", None),
    ("git@github.com:o/r.git", "git@github.com:o/r.git", None),
    ("/srv/git/fleet.git", "/srv/git/fleet.git", None),
    ("", "", None),
])
def test_split_takes_the_credentials_out_of_the_url(url: str, clean: str,
                                                     credentials: remotes.Credentials | None) -> None:
    assert remotes.split(url) == (clean, credentials)


def test_settings_keep_the_remote_clean_and_prefer_the_token_setting() -> None:
    carried = Settings(remote="https://u:from-url@h/r.git")
    assert carried.remote == "https://h/r.git" and carried.credentials == remotes.Credentials("u", "from-url")
    assert "from-url" not in repr(carried)
    explicit = Settings.from_env({"STOREOPS_REMOTE": "https://u:from-url@h/r.git", "STOREOPS_GIT_TOKEN": "setting"})
    assert explicit.credentials == remotes.Credentials("x-access-token", "setting")
    assert explicit.git_environment["STOREOPS_GIT_TOKEN"] == "setting"
    assert Settings(remote="/srv/r.git").git_environment == {"GIT_TERMINAL_PROMPT": "0"}


def test_redact_hides_every_userinfo_in_text() -> None:
    text = "cannot push to https://a:b@h/r.git (also tried http://tok@h2/x and git@h3:o/r)"
    assert remotes.redact(text) == "cannot push to https://***@h/r.git (also tried http://***@h2/x and git@h3:o/r)"
    assert "s3cret" not in str(GitError("fatal: could not read from 'https://x:s3cret@h/r.git'"))


def test_log_records_are_redacted_whoever_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    remotes.install_log_redaction()
    remotes.install_log_redaction()  # once is enough; twice changes nothing
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        logger.info("fetching %s", "https://x:s3cret@h/r.git")
        try:
            raise RuntimeError("clone of https://x:s3cret@h/r.git failed")
        except RuntimeError:
            logger.exception("it failed")
    assert [r.getMessage() for r in caplog.records] == ["fetching https://***@h/r.git", "it failed"]
    assert "s3cret" not in caplog.text and "https://***@h/r.git failed" in caplog.text
