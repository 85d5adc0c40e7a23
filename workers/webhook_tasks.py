"""The webhook dispatcher: a beat relay that hands due events out, and the task that POSTs one.

Deliveries run on the `paratro.webhooks` queue, so a slow receiver holds webhook workers only,
never a transfer step. The relay runs on `paratro.sweeper` (workers.app routes it there): were it
queued behind deliveries, receivers that hold every webhook worker would stop the hand-out of
every client's events. The decisions (claims, compare-and-set, retry schedule, FAILED) are in
`pipeline.webhook_outbox`; this module does the HTTP:

    POST <client's webhook url>            body: the event's stored payload, byte for byte
    Content-Type: application/json
    User-Agent: paratro-webhooks/1
    X-Paratro-Event-Id / X-Paratro-Timestamp / X-Paratro-Signature (pipeline.webhook_signing)

Redirects are not followed (a redirect could lead inside the network), proxies from the
environment are not used, and the response body is never read. Outside devnet mode the URL's
host is checked again (the lookup bounded by RESOLVE_TIMEOUT_S) and the connection pinned to the
checked address (pipeline.webhooks). PARATRO_WEBHOOK_TIMEOUT_S is the whole POST's deadline -
connect, send and the answer's status line and headers, of at most 32 KiB - not a per-read
timeout a receiver dripping bytes could stretch forever (workers.webhook_http).

Delivery is at least once: a worker killed between the POST and the commit of its record leaves
the event claimed; when the lease ends the relay claims it again and it is POSTed again, same
`event_id`, same body (receivers dedupe on X-Paratro-Event-Id).
"""

from __future__ import annotations

import time

import httpx
import structlog

from pipeline import credentials
from pipeline.models import utcnow
from pipeline.settings import Settings, get_settings
from pipeline.webhook_outbox import (
    AttemptResult,
    Delivery,
    Skipped,
    claim_due,
    parse_token,
    prepare_delivery,
    record_attempt,
)
from pipeline.webhook_signing import signature_headers
from pipeline.webhooks import RESOLVE_TIMEOUT_S, InvalidWebhookUrl, WebhookTargetUnresolved, delivery_target
from workers import runtime
from workers.app import WEBHOOKS_QUEUE, app, task_name
from workers.routing import queue_lengths
from workers.webhook_http import DeadlineTransport

log = structlog.get_logger("paratro.webhooks")

USER_AGENT = "paratro-webhooks/1"
RELAY_BATCH = 200  # events handed out per relay tick, minus those still queued: a backlog drains steadily
RECORD_ROOM_S = 10.0  # a delivery's DB reads and record around the POST, and clock skew between relay and worker
QUEUE_ROOM_S = 30.0  # a delivery task's wait in the queue that still finds its claim usable


def resolve_timeout_s(settings: Settings) -> float:
    """The bound on a delivery's host name lookup (never above the POST's own deadline)."""
    return min(RESOLVE_TIMEOUT_S, settings.webhook_timeout_s)


def delivery_s(settings: Settings) -> float:
    """The longest one delivery runs once it has started: the lookup, the POST (a total
    deadline), and the DB around them."""
    return resolve_timeout_s(settings) + settings.webhook_timeout_s + RECORD_ROOM_S


def lease_s(settings: Settings) -> float:
    """How long a claimed event is left to its delivery task before the relay claims it again:
    a queue wait plus twice a whole delivery (80 s by default). A task starts the POST only with
    a whole delivery's time of the lease left (prepare_delivery), so when the relay claims the
    event again, the delivery of the previous claim is over."""
    return QUEUE_ROOM_S + 2 * delivery_s(settings)


@app.task(name=task_name("webhook_relay"), acks_late=True, ignore_result=True)
def webhook_relay() -> int:
    """Claim due events and publish one delivery task each; returns how many were published."""
    ctx = runtime.context()
    settings = get_settings()
    room = RELAY_BATCH - _queued_deliveries()
    with ctx.db.unit_of_work() as session:
        claims = claim_due(session, utcnow(), lease_s(settings), room)
    published = 0
    for claim in claims:
        try:
            deliver_webhook.apply_async(args=(claim.event_id, claim.token_text), queue=WEBHOOKS_QUEUE)
        except Exception as exc:  # noqa: BLE001 - broker trouble: the claims lapse and are taken again
            log.warning("webhook.publish_deferred", events=len(claims) - published, error=type(exc).__name__)
            break
        published += 1
    if published:
        log.debug("webhook.relay", published=published)
    return published


@app.task(name=task_name("deliver_webhook"), acks_late=True, ignore_result=True)
def deliver_webhook(event_id: str, claim: str | None = None) -> str:
    """POST one event under its claim (None: claim it now) and record the attempt; returns the
    outcome (`delivered`, `retry`, `failed`), `superseded`, or the reason nothing was sent."""
    ctx = runtime.context()
    settings = get_settings()
    box = credentials.secret_box(settings)
    with ctx.db.unit_of_work() as session:
        prepared = prepare_delivery(session, box, event_id, parse_token(claim), utcnow(), lease_s(settings),
                                    delivery_s(settings))
    if isinstance(prepared, Skipped):
        log.info("webhook.skipped", event_id=event_id, reason=prepared.reason)
        return prepared.reason
    result = post(prepared, devnet=ctx.registry.is_devnet, timeout_s=settings.webhook_timeout_s,
                  resolve_timeout_s=resolve_timeout_s(settings))
    with ctx.db.unit_of_work() as session:
        outcome = record_attempt(session, prepared, result, utcnow(), settings.webhook_retry_schedule_s)
    bound = log.bind(event_id=event_id, client=prepared.client_id, attempt=prepared.attempts + 1,
                     status_code=result.status_code, latency_ms=result.latency_ms)
    if outcome is None:
        bound.info("webhook.superseded")
        return "superseded"
    if outcome == "delivered":
        bound.info("webhook.delivered")
    else:
        bound.warning(f"webhook.{outcome}", error=result.error)
    return outcome


def post(delivery: Delivery, devnet: bool, timeout_s: float,
         resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> AttemptResult:
    """One signed POST of the delivery's body, over by `timeout_s` after it starts whatever the
    receiver does (after a host lookup of at most `resolve_timeout_s`); what came back: the status
    code, or one error line that never quotes the URL."""
    started, clock = utcnow(), time.monotonic()

    def result(status_code: int | None = None, error: str | None = None, permanent: bool = False) -> AttemptResult:
        elapsed_ms = round((time.monotonic() - clock) * 1000)
        return AttemptResult(started, elapsed_ms, status_code, error, permanent)

    try:
        target = delivery_target(delivery.url, devnet, resolve_timeout_s)
    except InvalidWebhookUrl as exc:
        return result(error=f"refused: {exc}", permanent=True)
    except WebhookTargetUnresolved as exc:
        return result(error=str(exc))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               **signature_headers(delivery.secret, delivery.event_id, delivery.body)}
    if target.host_header:
        headers["Host"] = target.host_header
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        # A client per delivery: a pinned connection must not be reused for another host name; and
        # the transport's deadline starts now and covers the whole exchange.
        with httpx.Client(transport=DeadlineTransport(timeout_s), timeout=timeout_s, follow_redirects=False,
                          trust_env=False) as client:
            request = client.build_request("POST", target.url, content=delivery.body, headers=headers,
                                           extensions=extensions)
            response = client.send(request, stream=True)
            response.close()  # the answer's body is not ours to read
    except httpx.TimeoutException as exc:
        return result(error=f"{type(exc).__name__}: no complete answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return result(error=_scrubbed(exc, delivery.url, target.url))
    status = response.status_code
    return result(status, None if 200 <= status < 300 else f"HTTP {status}")


def _scrubbed(exc: Exception, *urls: str) -> str:
    """`Type: message` with every form of the URL and its host taken out."""
    text = str(exc)
    for url in urls:
        host = httpx.URL(url).host
        for part in (url, url.rstrip("/"), host):
            if part:
                text = text.replace(part, "<webhook>")
    return f"{type(exc).__name__}: {text}"


def _queued_deliveries() -> int:
    """Messages waiting in the webhooks queue (0 if Redis cannot say: publishing will tell)."""
    try:
        return queue_lengths([WEBHOOKS_QUEUE])[WEBHOOKS_QUEUE]
    except Exception as exc:  # noqa: BLE001 - broker trouble
        log.warning("webhook.queue_length_unknown", error=type(exc).__name__)
        return 0
