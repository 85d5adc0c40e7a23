"""Webhook URL validation: outside devnet only https URLs without credentials whose host is, and
resolves to, public addresses only; on a devnet registry a local receiver is fine. The delivery
target is checked again and pinned to the address that was checked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline.errors import InvalidInput
from pipeline.webhooks import (
    MAX_URL_CHARS,
    InvalidWebhookUrl,
    WebhookTargetUnresolved,
    check_webhook_url,
    delivery_target,
)
from pipeline.webhook_outbox import Delivery
from workers.webhook_tasks import post

PUBLIC_V4, PUBLIC_V6 = "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> list[str]:
    """Answer getaddrinfo from `names` (no real DNS in unit tests); records what was asked."""
    asked: list[str] = []
    real: Callable[..., Any] = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host in names:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in names[host]]
        if host.endswith((".test", ".invalid", ".example")):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return fake_dns(monkeypatch, {
        "hooks.example": [PUBLIC_V4],
        "v6.example": [PUBLIC_V6],
        "both.example": [PUBLIC_V4, "10.1.2.3"],  # one internal address is enough to refuse
        "rebind.example": ["192.168.0.10"],
        "meta.example": ["169.254.169.254"],
        "loop6.example": ["::1"],
    })


ACCEPTED = ["https://hooks.example/paratro", "https://hooks.example:8443/a/b?x=1", "https://v6.example/",
            f"https://{PUBLIC_V4}/hook", f"https://[{PUBLIC_V6}]:443/hook", "HTTPS://hooks.example/"]

REFUSED = {  # url -> a word of the reason
    "http://hooks.example/": "https",
    "https://user:pw@hooks.example/": "credentials",
    "https://token@hooks.example/": "credentials",
    "https://localhost/": "localhost",
    "https://LOCALHOST:8080/": "localhost",
    "https://api.localhost/": "localhost",
    "https://127.0.0.1/": "loopback",
    "https://127.1/": "loopback",  # inet_aton shorthand, resolved
    "https://2130706433/": "loopback",  # 127.0.0.1 as one number, resolved
    "https://0.0.0.0/": "unspecified",
    "https://10.0.0.8/": "private",
    "https://172.16.5.4/": "private",
    "https://192.168.1.1/": "private",
    "https://100.64.0.1/": "shared",  # CGNAT
    "https://169.254.169.254/latest/meta-data": "link-local",
    "https://224.0.0.251/": "multicast",
    "https://240.0.0.1/": "reserved",
    "https://[::1]/": "loopback",
    "https://[::]/": "unspecified",
    "https://[2001:db8::1]/": "private",  # documentation
    "https://[fe80::1]/": "link-local",
    "https://[fd00::1]/": "private",
    "https://[ff02::1]/": "multicast",
    "https://[::ffff:127.0.0.1]/": "loopback",  # IPv4-mapped
    "https://[::ffff:10.0.0.1]/": "private",
    "https://[64:ff9b::a00:1]/": "private",  # NAT64 of 10.0.0.1
    "https://[2002:a00:1::]/": "private",  # 6to4 of 10.0.0.1
    "https://both.example/": "private",
    "https://192.0.2.1/": "private",  # documentation
    "https://rebind.example/": "private",
    "https://meta.example/": "link-local",
    "https://loop6.example/": "loopback",
    "https://nowhere.invalid/": "does not resolve",
    "ftp://hooks.example/": "absolute http(s)",
    "hooks.example/path": "absolute http(s)",
    "/relative": "absolute http(s)",
    "https:///path": "absolute http(s)",
    "https://hooks.example:0/": "malformed",
    "https://hooks.example:70000/": "malformed",
    "https://[::1/": "malformed",
    "https://hooks.example/a b": "spaces",
    "https://hooks.example/\nx": "spaces",
    "https://hooks.example/#frag": "fragment",
    "https://bad_host!.example/": "not a valid host",
    "https://bücher.example/": "ASCII",
    "": "non-empty",
    "https://hooks.example/" + "a" * MAX_URL_CHARS: "longer than 500",
}


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_https_urls_are_accepted_outside_devnet(url: str, dns: list[str]) -> None:
    assert check_webhook_url(url, devnet=False) == url


@pytest.mark.parametrize("url", list(REFUSED))
def test_unsafe_or_malformed_urls_are_refused_outside_devnet(url: str, dns: list[str]) -> None:
    with pytest.raises(InvalidWebhookUrl) as caught:
        check_webhook_url(url, devnet=False)
    assert REFUSED[url] in str(caught.value)
    assert isinstance(caught.value, InvalidInput)
    if "@" in url:
        assert "pw" not in str(caught.value) and "token" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost:9000/", "https://[::1]:8443/",
                                 "http://10.0.0.8/", "http://receiver/", "https://hooks.example/"])
def test_a_devnet_registry_allows_local_receivers_without_resolving(url: str, dns: list[str]) -> None:
    assert check_webhook_url(url, devnet=True) == url
    assert dns == []


@pytest.mark.parametrize("url", ["https://u:p@127.0.0.1/", "ftp://127.0.0.1/", "http://127.0.0.1/#x",
                                 "not a url", None, 42])
def test_a_devnet_registry_still_refuses_malformed_urls_and_credentials(url: object) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url(url, devnet=True)


def test_the_delivery_target_is_pinned_to_the_checked_address(dns: list[str]) -> None:
    target = delivery_target("https://hooks.example:8443/a/b?x=1", devnet=False)
    assert target.url == f"https://{PUBLIC_V4}:8443/a/b?x=1"
    assert (target.host_header, target.sni_hostname) == ("hooks.example:8443", "hooks.example")
    target6 = delivery_target("https://v6.example/h", devnet=False)
    assert (target6.url, target6.host_header, target6.sni_hostname) == (f"https://[{PUBLIC_V6}]/h", "v6.example",
                                                                       "v6.example")


def test_an_ip_literal_target_needs_no_pinning(dns: list[str]) -> None:
    assert delivery_target(f"https://{PUBLIC_V4}/h", devnet=False).host_header is None


def test_a_name_that_now_resolves_inside_is_refused_at_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"flip.example": [PUBLIC_V4]})
    assert check_webhook_url("https://flip.example/h", devnet=False)
    fake_dns(monkeypatch, {"flip.example": ["127.0.0.1"]})  # DNS rebinding after configuration
    with pytest.raises(InvalidWebhookUrl, match="loopback"):
        delivery_target("https://flip.example/h", devnet=False)


def test_a_name_that_does_not_resolve_at_delivery_is_worth_a_retry(dns: list[str]) -> None:
    with pytest.raises(WebhookTargetUnresolved) as caught:
        delivery_target("https://gone.invalid/h", devnet=False)
    assert caught.value.transient


def test_devnet_delivery_goes_to_the_url_as_it_is(dns: list[str]) -> None:
    target = delivery_target("http://127.0.0.1:9999/h", devnet=True)
    assert (target.url, target.host_header, target.sni_hostname) == ("http://127.0.0.1:9999/h", None, None)


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """getaddrinfo that hangs on `slow.example` (as a resolver with an unreachable server does)
    until the test ends; other names as `dns`."""
    release = threading.Event()
    fake_dns(monkeypatch, {"hooks.example": [PUBLIC_V4]})
    fast = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "slow.example":
            release.wait(30)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, port))]
        return fast(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release
    release.set()


def test_a_hanging_lookup_at_delivery_is_given_up_after_the_resolve_timeout(hanging_dns: threading.Event) -> None:
    started = time.monotonic()
    with pytest.raises(WebhookTargetUnresolved) as caught:
        delivery_target("https://slow.example/h", devnet=False, resolve_timeout_s=0.3)
    assert time.monotonic() - started < 1.0
    assert str(caught.value) == "webhook url host did not resolve within 0.3 s" and caught.value.transient
    # Lookups still hanging do not stop the others (each waits on its own, a few threads serve them).
    assert delivery_target("https://hooks.example/h", devnet=False, resolve_timeout_s=2).url == f"https://{PUBLIC_V4}/h"


def test_a_hanging_lookup_makes_the_delivery_a_retry_within_its_timeout(hanging_dns: threading.Event) -> None:
    started = time.monotonic()
    result = post(Delivery("ev_01J0000000000000000000000A", "cli_01J0000000000000000000000A", 0, None,
                           "https://slow.example/T0K3N", b"{}", "whsec_x"), devnet=False, timeout_s=5,
                  resolve_timeout_s=0.3)
    assert time.monotonic() - started < 1.0
    assert (result.status_code, result.error, result.permanent) == (
        None, "webhook url host did not resolve within 0.3 s", False)


def test_a_hanging_lookup_at_configuration_is_refused_in_time(hanging_dns: threading.Event) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidWebhookUrl, match="does not resolve"):
        check_webhook_url("https://slow.example/h", devnet=False, resolve_timeout_s=0.3)
    assert time.monotonic() - started < 1.0
