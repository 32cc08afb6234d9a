from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

import pytest

from webhook import access, auth
from webhook.errors import Forbidden, RateLimited, Unauthenticated
from webhook.settings import Token
from webhook.state import Location, SharedState

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


def test_the_rate_limiter_allows_a_burst_then_refuses_and_its_buckets_outlive_the_process(
        state_at: Callable[[str], Location]) -> None:
    now = [1000.0]
    state = SharedState(state_at("service.sqlite3"), clock=lambda: now[0])
    limiter = auth.RateLimiter(rate=0.001, burst=2, state=state)
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited) as caught:
        limiter.take("a")
    assert caught.value.retry_after > 1
    limiter.take("b")  # clients have their own buckets
    state.close()
    # A restart (a new process on the same database) still knows that "a" is out of tokens.
    again = SharedState(state_at("service.sqlite3"), clock=lambda: now[0])
    with pytest.raises(RateLimited):
        auth.RateLimiter(rate=0.001, burst=2, state=again).take("a")
    # Buckets idle long enough to be full again are forgotten.
    assert again.buckets() == 2
    now[0] += 2 / 0.001 + 1
    assert again.expire(idle_for=2 / 0.001) == 2 and again.buckets() == 0
    unlimited = auth.RateLimiter(rate=0, burst=1)
    for _ in range(100):
        unlimited.take("a")


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    # No trusted proxy: the header is the client's to write and counts for nothing.
    ("127.0.0.1", ["1.2.3.4"], [], "127.0.0.1"),
    ("203.0.113.9", ["1.2.3.4, 5.6.7.8"], ["10.0.0.0/8"], "203.0.113.9"),
    # Behind a trusted ingress: the right-most hop the ingress saw; what the client prepended is ignored.
    ("10.0.0.5", ["198.51.100.7"], ["10.0.0.0/8"], "198.51.100.7"),
    ("10.0.0.5", ["1.1.1.1, 198.51.100.7"], ["10.0.0.0/8"], "198.51.100.7"),
    ("10.0.0.5", ["1.1.1.1, 198.51.100.7, 10.0.0.9"], ["10.0.0.0/8"], "198.51.100.7"),
    ("10.0.0.5", [], ["10.0.0.0/8"], "10.0.0.5"),
])
def test_the_client_address_believes_only_trusted_proxies(peer: str, forwarded: list[str], trusted: list[str],
                                                           client: str) -> None:
    networks = [ipaddress.ip_network(n) for n in trusted]
    assert access.client_address(peer, forwarded, networks) == client
