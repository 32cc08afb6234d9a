from __future__ import annotations

from pathlib import Path

import pytest

from webhook import settings
from webhook.errors import SettingsError


def test_defaults_run_with_nothing_set() -> None:
    config = settings.ServiceSettings.from_env({})
    assert config.port == 8080
    assert config.git.branch == "main"
    assert config.tokens == ()
    assert config.form_fields["owner_email"] == "owner.email"
    assert config.queue_path == Path(".storeops").resolve() / "intake.sqlite3"
    assert config.git.repo.is_absolute()


def test_values_are_read_from_storeops_variables() -> None:
    config = settings.ServiceSettings.from_env({
        "STOREOPS_PORT": "9000", "STOREOPS_API_TOKENS": "a, b:read", "STOREOPS_RATE": "2.5",
        "STOREOPS_FORM_FIELDS": '{"slug": "id"}', "STOREOPS_FORM_PAGE": "off", "STOREOPS_BATCH_MAX": "1",
        "STOREOPS_STATE_DIR": "/tmp/x", "STOREOPS_PUBLIC_URL": "https://intake.example/"})
    assert config.port == 9000
    assert config.tokens == (settings.Token("a", write=True), settings.Token("b", write=False))
    assert config.rate == 2.5
    assert config.form_fields == {"slug": "id"}
    assert config.form_page is False
    assert config.batch_max == 1
    assert config.queue_path == Path("/tmp/x/intake.sqlite3")
    assert config.public_url == "https://intake.example"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("STOREOPS_PORT", "eighty", "STOREOPS_PORT has value 'eighty'. Not an integer."),
    ("STOREOPS_BATCH_MAX", "0", "STOREOPS_BATCH_MAX has value '0'. Must be at least 1."),
    ("STOREOPS_RATE", "-1", "STOREOPS_RATE has value '-1'. Must not be negative."),
    ("STOREOPS_FORM_PAGE", "maybe", "STOREOPS_FORM_PAGE has value 'maybe'. Not a valid bool."),
    ("STOREOPS_FORM_FIELDS", "[1]", "Must map form field names to store fields."),
    ("STOREOPS_API_TOKENS", "t:admin", "scope 'admin'"),
])
def test_bad_values_are_named_in_the_error(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")):
        settings.ServiceSettings.from_env({key: value})


def test_without_tokens_one_is_made_once_in_the_state_dir(tmp_path: Path) -> None:
    config = settings.ServiceSettings.from_env({"STOREOPS_STATE_DIR": str(tmp_path)})
    first = settings.resolve_tokens(config)
    assert settings.resolve_tokens(config) == first
    assert len(first[0].value) >= 32
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
