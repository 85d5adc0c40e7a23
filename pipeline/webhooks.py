"""A client's webhook: its URL (validated against SSRF), its opt-in events and its signing secret.

The URL is where the deployment will send POSTs on the client's behalf, so it must not point back
into the deployment's own network. Outside devnet mode it must be https, carry no credentials, and
name a host whose every address is public: literal IPv4/IPv6, `localhost` and names that resolve
to loopback, private, link-local, shared (CGNAT), multicast, reserved or unspecified addresses are
refused. A name may resolve differently later (DNS rebinding), so `delivery_target` checks again
at every delivery and pins the connection to the address it checked (`PinnedTarget`).

Limits of the check, on purpose documented: it judges addresses, not networks, so a public address
that routes into the deployment (its own NAT or load balancer, a metadata service reachable under
a public address) is not detected; an egress firewall on the webhook workers is still the real
fence. A name with several addresses is refused if any is internal and connected to through its
first checked address only. In devnet mode (the local sandbox) none of this applies: receivers on
127.0.0.1 are the point.

The signing secret is generated here, returned once by `configure_webhook` (the API shows it only
in the `PUT /webhook` answer) and stored sealed under PARATRO_SECRETS_KEY.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from sqlalchemy.orm import Session

from pipeline.errors import InvalidInput, NotFound, PipelineError, TransientError
from pipeline.events import OPTIONAL_EVENTS
from pipeline.ids import check_id
from pipeline.models import Client
from pipeline.sealing import SecretBox, webhook_context

MAX_URL_CHARS = 500  # Client.webhook_url's column width
SECRET_PREFIX = "whsec_"
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 5.0  # one host name lookup, at configuration and at every delivery
# getaddrinfo cannot be interrupted, so it runs on these threads and is waited for at most the
# timeout; a lookup that hangs holds one of them (until the resolver itself gives up), never the
# caller, and at most this many hang at once (later ones queue, and time out just the same).
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class InvalidWebhookUrl(InvalidInput):
    """The webhook URL is malformed or points where the deployment must not send requests."""


class InvalidWebhookEvents(InvalidInput):
    """`events` asks for something that cannot be opted in to."""


class WebhookNotConfigured(PipelineError):
    """The client has no webhook URL (or no secret): there is nothing to send to."""


class WebhookTargetUnresolved(TransientError):
    """The webhook host did not resolve at delivery time (worth a retry: DNS may be down)."""


# --- the URL ---------------------------------------------------------------------------------

def check_webhook_url(url: object, devnet: bool, resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> str:
    """Return `url` if the deployment may POST to it; InvalidWebhookUrl with the reason otherwise.

    Outside devnet the host is resolved, so this can take a DNS round trip (at most
    `resolve_timeout_s`).
    """
    parts = _parse(url)
    if not devnet:
        if parts.scheme != "https":
            raise InvalidWebhookUrl("webhook url must use https (http is accepted only on a devnet registry)")
        try:
            _public_addresses(parts.hostname or "", _port(parts), resolve_timeout_s)
        except WebhookTargetUnresolved:
            raise InvalidWebhookUrl("webhook url host does not resolve: check the host name") from None
    return str(url)


def _parse(url: object) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise InvalidWebhookUrl("webhook url must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhookUrl(f"webhook url is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidWebhookUrl("webhook url must not contain spaces or control characters")
    if not url.isascii():
        raise InvalidWebhookUrl("webhook url must be ASCII (write an international host name in its xn-- form, "
                                "and percent-encode the path)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _port(parts)
    except ValueError:
        raise InvalidWebhookUrl("webhook url is malformed (host or port)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidWebhookUrl("webhook url must be an absolute http(s) URL, e.g. https://example.com/hooks")
    if "@" in parts.netloc:
        raise InvalidWebhookUrl("webhook url must not contain credentials (user:password@); "
                                "authenticate deliveries with the signature instead")
    if parts.fragment or url.endswith("#"):
        raise InvalidWebhookUrl("webhook url must not contain a #fragment (it is never sent)")
    if not host:
        raise InvalidWebhookUrl("webhook url has no host")
    if _ip(host) is None and not _HOST_NAME.match(host):
        raise InvalidWebhookUrl("webhook url host is not a valid host name or IP address")
    return parts._replace(scheme=parts.scheme.lower())


def _port(parts: SplitResult) -> int:
    port = parts.port  # ValueError if not a number in 0..65535
    if port == 0:
        raise ValueError("port 0")
    return port or (443 if parts.scheme.lower() == "https" else 80)


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def internal_kind(address: IpAddress) -> str | None:
    """What makes `address` off limits ("loopback", "private", "link-local", "shared", "multicast",
    "reserved", "unspecified", "non-public"), or None for a public unicast address. IPv4 inside
    IPv6 (mapped, NAT64, 6to4, Teredo) is judged by its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and internal_kind(embedded):
            return internal_kind(embedded)
        if address.scope_id:
            return "link-local"
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("shared", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
              ("reserved", address.is_reserved), ("private", address.is_private), ("non-public", not address.is_global))
    return next((kind for kind, hit in checks if hit), None)


def _public_addresses(host: str, port: int, resolve_timeout_s: float) -> list[IpAddress]:
    """Every address `host` stands for, all of them public; else InvalidWebhookUrl (or
    WebhookTargetUnresolved when the name does not resolve within `resolve_timeout_s`)."""
    literal = _ip(host)
    if literal is not None:
        addresses: list[IpAddress] = [literal]
    else:
        if host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
            raise InvalidWebhookUrl("webhook url must not point to localhost (allowed only on a devnet registry)")
        infos = _resolve(host, port, resolve_timeout_s)
        addresses = []
        for info in infos:
            address = _ip(str(info[4][0]).split("%")[0])
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise WebhookTargetUnresolved("webhook url host does not resolve")
    for address in addresses:
        kind = internal_kind(address)
        if kind is not None:
            raise InvalidWebhookUrl(f"webhook url must not point to a {kind} address "
                                    "(allowed only on a devnet registry)")
    return addresses


def _resolve(host: str, port: int, timeout_s: float) -> list[Any]:
    """socket.getaddrinfo(host, port), given at most `timeout_s`; WebhookTargetUnresolved otherwise."""
    lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=timeout_s)
    except FutureTimeout:
        lookup.cancel()  # if it is still queued it never runs
        raise WebhookTargetUnresolved(f"webhook url host did not resolve within {timeout_s:g} s") from None
    except (UnicodeError, OSError):  # socket.gaierror included
        raise WebhookTargetUnresolved("webhook url host does not resolve") from None


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery connects: `url` with its host replaced by the checked address, the
    original `host_header`, and the TLS server name (certificate checked against the name)."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


def delivery_target(url: str, devnet: bool, resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> PinnedTarget:
    """The target of a delivery to `url`, checked again now (DNS rebinding): InvalidWebhookUrl if
    it now points inside (do not retry), WebhookTargetUnresolved if the name does not resolve
    within `resolve_timeout_s` (retry). In devnet mode the URL as it is."""
    if devnet:
        return PinnedTarget(url)
    parts = _parse(url)
    if parts.scheme != "https":
        raise InvalidWebhookUrl("webhook url must use https")
    host = parts.hostname or ""
    address = _public_addresses(host, _port(parts), resolve_timeout_s)[0]
    if _ip(host) is not None:
        return PinnedTarget(url)  # nothing to resolve, nothing to pin
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal + (f":{parts.port}" if parts.port else "")
    return PinnedTarget(parts._replace(netloc=netloc).geturl(), host_header=parts.netloc, sni_hostname=host)


# --- the configuration ---------------------------------------------------------------------------

def check_events(events: object) -> list[str]:
    """The opt-in event types, deduplicated and sorted; InvalidWebhookEvents naming an unknown one."""
    if events is None:
        return []
    if not isinstance(events, (list, tuple)):
        raise InvalidWebhookEvents("events must be a list of event types")
    chosen: set[str] = set()
    for event in events:
        if not isinstance(event, str) or event not in OPTIONAL_EVENTS:
            shown = repr(event)[:60]
            raise InvalidWebhookEvents(f"unknown webhook event {shown}: only {', '.join(sorted(OPTIONAL_EVENTS))} "
                                       "can be requested (status changes are always sent)")
        chosen.add(event)
    return sorted(chosen)


def new_webhook_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def configure_webhook(session: Session, box: SecretBox, client_id: str, url: object, events: list[str] | None,
                      devnet: bool) -> str:
    """Set the client's webhook URL and opt-in events, with a NEW signing secret (returned here
    only; the previous secret stops signing at once). Nothing is written if anything is invalid.
    Raises InvalidWebhookUrl, InvalidWebhookEvents, NotFound."""
    check_id("client", client_id)
    checked_events = check_events(events)
    checked_url = check_webhook_url(url, devnet)
    client = session.get(Client, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    secret = new_webhook_secret()
    client.webhook_url = checked_url
    client.webhook_events = json.dumps(checked_events)
    client.webhook_secret_encrypted = box.seal(secret, webhook_context(client.client_id))
    session.flush()
    return secret


def webhook_config(session: Session, client_id: str) -> dict[str, Any]:
    """`{"url", "events"}` of the client (url None when not configured); never the secret."""
    check_id("client", client_id)
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    try:
        events = json.loads(client.webhook_events or "[]")
    except ValueError:
        events = []
    return {"url": client.webhook_url, "events": events}


def webhook_secret(box: SecretBox, client: Client) -> str:
    """The client's signing secret, opened to sign a delivery; WebhookNotConfigured if it has none."""
    if not client.webhook_url or client.webhook_secret_encrypted is None:
        raise WebhookNotConfigured(f"client {client.client_id} has no webhook configured")
    return box.open(client.webhook_secret_encrypted, webhook_context(client.client_id))
