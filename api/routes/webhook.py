"""The client's webhook: where events go, which opt-in events it wants, and a test ping.

`PUT /webhook` answers the signing secret, in full, only there (a new one each time: PUT again to
rotate it). Configuration, URL policy and signing are `pipeline.webhooks`'; delivery is the
dispatcher's (workers). `POST /webhook/test` writes a `ping` event; the dispatcher delivers it
like any other event, so its arrival proves the whole path, signature included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api import schemas
from api.errors import ApiError, pipeline_errors
from api.routes.common import ClientId, Context
from pipeline import credentials, events
from pipeline.models import Client

router = APIRouter(tags=["webhook"])


@router.put("/webhook", response_model=schemas.WebhookWithSecret, responses=schemas.errors(401, 422, 429, 503))
def put_webhook(body: schemas.WebhookPut, request: Request, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """Set the webhook URL (https; http and loopback only on a devnet) and opt-in events; returns a
    new signing secret."""
    from pipeline import webhooks

    with pipeline_errors(), ctx.db.unit_of_work() as session:
        box = credentials.secret_box(request.app.state.settings)
        wanted = list(body.events) if body.events is not None else None
        secret = webhooks.configure_webhook(session, box, client_id, body.url, wanted, devnet=ctx.registry.is_devnet)
        config = webhooks.webhook_config(session, client_id)
    return {"url": config["url"], "secret": secret, "events": list(config["events"])}


@router.get("/webhook", response_model=schemas.WebhookConfig, responses=schemas.errors(401, 429, 503))
def get_webhook(client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """The webhook URL and opt-in events (url null when none is set); never the secret."""
    from pipeline import webhooks

    with pipeline_errors(), ctx.db.unit_of_work() as session:
        config = webhooks.webhook_config(session, client_id)
    return {"url": config.get("url"), "events": list(config.get("events") or [])}


@router.post("/webhook/test", status_code=202, response_model=schemas.WebhookTest,
             responses=schemas.errors(401, 409, 429, 503))
def test_webhook(client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """Queue a `ping` event to the webhook (409 `webhook_not_configured` without a URL)."""
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        client = session.get(Client, client_id)
        if client is None or not client.webhook_url:
            raise ApiError(409, "webhook_not_configured", "set a webhook URL first (PUT /webhook)")
        event_id = events.ping(session, client).event_id
    return {"event_id": event_id}
