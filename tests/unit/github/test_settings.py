"""GitHub settings from STOREOPS_GITHUB_* variables: precise errors, the key read from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.errors import SettingsError
from webhook.github.client import GitHubSettings


def test_nothing_set_means_the_webhook_is_off() -> None:
    settings = GitHubSettings.from_env({})
    assert not settings.enabled and settings.api_url == "https://api.github.com"


def test_token_settings() -> None:
    settings = GitHubSettings.from_env({"STOREOPS_GITHUB_WEBHOOK_SECRET": "s", "STOREOPS_GITHUB_TOKEN": "t",
                                        "STOREOPS_GITHUB_REPOSITORY": "acme/gitops",
                                        "STOREOPS_GITHUB_API_URL": "https://ghe.example/api/v3/",
                                        "STOREOPS_GITHUB_SECONDS_BETWEEN_WRITES": "2.5"})
    assert (settings.enabled, settings.uses_app, settings.owner) == (True, False, "acme")
    assert settings.api_url == "https://ghe.example/api/v3"
    assert settings.seconds_between_writes == 2.5


def test_app_key_is_read_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    settings = GitHubSettings.from_env({"STOREOPS_GITHUB_WEBHOOK_SECRET": "s", "STOREOPS_GITHUB_APP_ID": "42",
                                        "STOREOPS_GITHUB_PRIVATE_KEY_FILE": str(key),
                                        "STOREOPS_GITHUB_REPOSITORY": "acme/gitops",
                                        "STOREOPS_GITHUB_INSTALLATION_ID": "7"})
    assert settings.uses_app and settings.private_key.startswith("-----BEGIN") and settings.installation_id == 7


@pytest.mark.parametrize(("env", "message"), [
    ({"STOREOPS_GITHUB_REPOSITORY": "gitops", "STOREOPS_GITHUB_TOKEN": "t"},
     "STOREOPS_GITHUB_REPOSITORY has value 'gitops'. Use owner/name."),
    ({"STOREOPS_GITHUB_REPOSITORY": "a/b"}, "neither STOREOPS_GITHUB_TOKEN nor STOREOPS_GITHUB_APP_ID"),
    ({"STOREOPS_GITHUB_REPOSITORY": "a/b", "STOREOPS_GITHUB_APP_ID": "1"}, "STOREOPS_GITHUB_PRIVATE_KEY"),
    ({"STOREOPS_GITHUB_REPOSITORY": "a/b", "STOREOPS_GITHUB_TOKEN": "t",
      "STOREOPS_GITHUB_SECONDS_BETWEEN_WRITES": "soon"}, "STOREOPS_GITHUB_SECONDS_BETWEEN_WRITES has value 'soon'"),
    ({"STOREOPS_GITHUB_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, "Cannot read it"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        GitHubSettings.from_env({"STOREOPS_GITHUB_WEBHOOK_SECRET": "s", **env})
    assert message in str(caught.value)
