from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from webhook import auth, settings
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
    assert config.tokens == (settings.Token("a", write=True, name="api-token-1"),
                             settings.Token("b", write=False, name="api-token-2"))
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


def test_a_tokens_file_names_and_scopes_tokens_and_keeps_only_hashes(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"owner-secret").hexdigest()
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n"
                    f"  - {{name: ci-bot, scope: write, sha256: {hashlib.sha256(b'ci-secret').hexdigest()}}}\n"
                    f"  - {{name: jane, scope: owner, owner: jane@acme.example, sha256: {digest}}}\n")
    config = settings.ServiceSettings.from_env({"STOREOPS_TOKENS_FILE": str(path)})
    ci, jane = config.tokens
    assert (ci.name, ci.scope, jane.name, jane.scope, jane.owner) == ("ci-bot", "write", "jane", "owner",
                                                                       "jane@acme.example")
    assert jane.matches("owner-secret") and not jane.matches("ci-secret") and "owner-secret" not in repr(jane)
    assert auth.client_of(jane) == "token:jane"


@pytest.mark.parametrize(("text", "problem"), [
    ("tokens:\n  - {name: a, scope: owner, sha256: '" + "0" * 64 + "'}\n",
     "tokens.yaml:2: tokens[0].owner: is required"),
    ("tokens:\n  - {name: a, scope: read, owner: x@y.z, sha256: '" + "0" * 64 + "'}\n", "tokens.yaml:2: tokens[0]"),
    ("tokens:\n  - {name: a, scope: read, sha256: abc}\n", "tokens.yaml:2: tokens[0].sha256: 'abc' is not a hex"),
    ("tokens:\n  - {name: a, scope: read, sha256: '" + "0" * 64 + "'}\n  - {name: a, scope: read, sha256: '"
     + "1" * 64 + "'}\n", "tokens.yaml:3: tokens[1].name: this name is already in the file"),
])
def test_a_broken_tokens_file_is_refused_by_line(text: str, problem: str) -> None:
    tokens, problems = settings.parse_tokens(text, "tokens.yaml")
    assert tokens == () and any(str(p).startswith(problem) for p in problems), problems


def test_the_older_token_setting_still_works_with_names(caplog: pytest.LogCaptureFixture) -> None:
    config = settings.ServiceSettings.from_env({"STOREOPS_API_TOKENS": "one,two:read"})
    assert [(t.name, t.scope) for t in config.tokens] == [("api-token-1", "write"), ("api-token-2", "read")]
    assert "deprecated" in caplog.text
    with pytest.raises(SettingsError, match="Set one"):
        settings.ServiceSettings.from_env({"STOREOPS_API_TOKENS": "x", "STOREOPS_TOKENS_FILE": "/t.yaml"})


def _setting_names(text: str) -> set[str]:
    """STOREOPS_* names in a text; a README cell's `_SUFFIX` is STOREOPS_<first word>_SUFFIX of its row."""
    names = set(re.findall(r"\bSTOREOPS_[A-Z][A-Z0-9_]*[A-Z0-9]\b", text))
    for row in text.splitlines():
        first = re.search(r"`STOREOPS_([A-Z0-9]+)_", row)
        if first:
            names |= {f"STOREOPS_{first.group(1)}{suffix}" for suffix in re.findall(r"`(_[A-Z][A-Z0-9_]*)`", row)}
    return names


def _settings_read(root: Path) -> set[str]:
    """Every variable the code looks up: the quoted STOREOPS_* names in generator/ and webhook/."""
    return {name for d in ("webhook", "generator") for p in (root / d).rglob("*.py")
            for name in re.findall(r"[\"'](STOREOPS_[A-Z0-9_]+)[\"']", p.read_text())}


def test_the_platform_deployment_sets_only_settings_the_service_reads() -> None:
    root = Path(__file__).resolve().parents[2]
    read = _settings_read(root)
    deployment = _setting_names((root / "argocd" / "platform" / "deployment.yaml").read_text())
    assert {"STOREOPS_TOKENS_FILE", "STOREOPS_REMOTE", "STOREOPS_OIDC_ISSUER"} <= deployment
    assert deployment - read == set()
    assert "STOREOPS_API_TOKENS" not in deployment  # the deprecated setting is not what new installs use


def test_every_setting_the_service_reads_is_in_the_readme() -> None:
    root = Path(__file__).resolve().parents[2]
    read = _settings_read(root)
    assert {"STOREOPS_OIDC_ISSUER", "STOREOPS_WATCH_PAGE_SIZE"} <= read
    assert read - _setting_names((root / "README.md").read_text()) == set()
