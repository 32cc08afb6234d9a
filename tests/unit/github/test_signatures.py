"""X-Hub-Signature-256 checks, including GitHub's documented test vector."""

from __future__ import annotations

import pytest

from webhook.errors import Unauthenticated
from webhook.github import signatures

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_githubs_test_vector_signs_and_verifies() -> None:
    assert signatures.sign(secret=VECTOR_SECRET, body=VECTOR_BODY) == VECTOR_SIGNATURE
    signatures.verify(secret=VECTOR_SECRET, header=VECTOR_SIGNATURE, body=VECTOR_BODY)


@pytest.mark.parametrize("header", [None, "", "sha256=", VECTOR_SIGNATURE.upper(), VECTOR_SIGNATURE[7:],
                                    "sha1=" + VECTOR_SIGNATURE[7:], VECTOR_SIGNATURE[:-1] + "0"])
def test_missing_or_wrong_signatures_are_refused(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        signatures.verify(secret=VECTOR_SECRET, header=header, body=VECTOR_BODY)
    assert caught.value.status == 401


def test_a_changed_body_or_secret_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="does not match the body"):
        signatures.verify(secret=VECTOR_SECRET, header=VECTOR_SIGNATURE, body=b"Hello, World?")
    with pytest.raises(Unauthenticated, match="does not match the body"):
        signatures.verify(secret="another secret", header=VECTOR_SIGNATURE, body=VECTOR_BODY)


def test_an_empty_secret_refuses_everything() -> None:
    unsigned = signatures.sign(secret="", body=VECTOR_BODY)
    with pytest.raises(Unauthenticated, match="secret is empty"):
        signatures.verify(secret="", header=unsigned, body=VECTOR_BODY)
