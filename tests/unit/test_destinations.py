"""Callback URLs that point inside the platform are refused, in every notation an address can take."""

from __future__ import annotations

import ipaddress

import pytest

from generator import destinations

INSIDE = [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/",
    "http://0x7f.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1%25eth0]/", "http://10.0.0.1/", "http://172.16.0.1/",
    "http://192.168.1.1:8080/", "http://100.64.0.1/", "http://0.0.0.0/", "http://0/", "http://[::]/",
    "http://[fd00::1]/", "http://224.0.0.1/", "http://[2002:7f00:1::]/", "http://localhost/", "http://LOCALHOST./",
    "http://shop.localhost/", "http://kubernetes.default.svc/", "http://api.store-x.svc.cluster.local/",
    "http://metadata.google.internal/", "http://metadata/", "http://receiver/",
]
OUTSIDE = ["https://hooks.example.com/storeops", "https://hooks.cafe.example/storeops?x=1", "http://93.184.216.34/",
           "https://[2606:4700::1111]/", "https://example.com:8443/x"]


@pytest.mark.parametrize("url", INSIDE)
def test_addresses_and_names_inside_the_platform_are_refused(url: str) -> None:
    assert destinations.url_problem(url).startswith("points inside the platform"), url


@pytest.mark.parametrize("url", OUTSIDE)
def test_receivers_on_the_internet_pass(url: str) -> None:
    assert destinations.url_problem(url) == ""


@pytest.mark.parametrize(("url", "words"), [
    ("https://user:secret@hooks.example.com/", "user name or password"), ("ftp://hooks.example.com/", "http or https"),
    ("https:///x", "no host"), ("http://[::1/", "not a URL")])
def test_other_refusals_say_why(url: str, words: str) -> None:
    assert words in destinations.url_problem(url)


def test_an_operator_allows_networks_and_hosts() -> None:
    allowed = destinations.Allowed.parse("127.0.0.0/8, receiver.corp,10.1.2.3")
    assert destinations.url_problem("http://127.0.0.2:9000/x", allowed) == ""
    assert destinations.url_problem("http://2130706433/", allowed) == ""
    assert destinations.url_problem("http://receiver.corp/x", allowed) == ""
    assert destinations.url_problem("http://10.1.2.3/", allowed) == ""
    assert destinations.url_problem("http://10.1.2.4/", allowed).startswith("points inside")
    assert destinations.address_problem(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) == ""
    with pytest.raises(ValueError, match="neither a network"):
        destinations.Allowed.parse("10.0.0.0/8,bad host")
