from __future__ import annotations

import hashlib
import hmac

import pytest

from webhook import auth
from webhook.errors import Forbidden, RateLimited, Unauthenticated
from webhook.settings import Token

TOKENS = (Token("w-token"), Token("r-token", write=False))


def test_bearer_tokens_401_403_and_ok() -> None:
    assert auth.bearer(header="Bearer w-token", tokens=TOKENS, write=True) == TOKENS[0]
    assert auth.bearer(header="bearer r-token", tokens=TOKENS, write=False) == TOKENS[1]
    with pytest.raises(Unauthenticated):
        auth.bearer(header=None, tokens=TOKENS, write=False)
    with pytest.raises(Unauthenticated):
        auth.bearer(header="Bearer nope", tokens=TOKENS, write=False)
    with pytest.raises(Forbidden):
        auth.bearer(header="Bearer r-token", tokens=TOKENS, write=True)


def test_client_names_do_not_reveal_the_token() -> None:
    name = auth.client_of(TOKENS[0])
    assert "w-token" not in name and name == auth.client_of(Token("w-token"))


def test_signatures_are_hmac_sha256_of_the_raw_body() -> None:
    signature = auth.sign(secret="s", body=b"{}")
    assert signature == "sha256=" + hmac.new(b"s", b"{}", hashlib.sha256).hexdigest()
    auth.verify_signature(secret="s", header_name="X-Sig", header=signature, body=b"{}")
    with pytest.raises(Forbidden):
        auth.verify_signature(secret="s", header_name="X-Sig", header=signature, body=b"{ }")
    with pytest.raises(Unauthenticated):
        auth.verify_signature(secret="s", header_name="X-Sig", header=None, body=b"{}")
    with pytest.raises(Forbidden, match="off"):
        auth.verify_signature(secret="", header_name="X-Sig", header=signature, body=b"{}")


def test_the_rate_limiter_allows_a_burst_then_refuses() -> None:
    limiter = auth.RateLimiter(rate=0.001, burst=2)
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited) as caught:
        limiter.take("a")
    assert caught.value.retry_after > 1
    limiter.take("b")  # clients have their own buckets
    unlimited = auth.RateLimiter(rate=0, burst=1)
    for _ in range(100):
        unlimited.take("a")
