"""api.metrics over a real uvicorn server: request counters by route template (never the raw path),
latency, unmatched paths in one series, and the snapshot gauges from the current settings' DB."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from api import metrics as api_metrics
from devnet.ports import free_port
from pipeline.models import Client, Transaction
from pipeline.settings import get_settings
from tests.unit.test_metrics import dead_broker, value


def _app() -> FastAPI:
    app = FastAPI()
    wallets = APIRouter()  # included with a prefix, as the API's routers are

    @wallets.get("/wallets/{wallet_id}")
    def get_wallet(wallet_id: str) -> dict[str, str]:
        if not wallet_id.startswith("w_"):
            raise HTTPException(status_code=404)
        return {"wallet_id": wallet_id}

    app.include_router(wallets, prefix="/api/v1")

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.middleware("http")
    async def deny(request: Request, call_next: Any) -> Any:  # like the signature gate: answers before routing
        if "x-deny" in request.headers:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        return await call_next(request)

    api_metrics.install(app)
    return app


@pytest.fixture
def settings_env(db_url: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("PARATRO_DATABASE_URL", "PARATRO_BROKER_URL")}
    os.environ.update({"PARATRO_DATABASE_URL": db_url, "PARATRO_BROKER_URL": dead_broker()})
    get_settings.cache_clear()
    yield
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    get_settings.cache_clear()


@pytest.fixture
def base_url(settings_env: None) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_requests_counted_by_route_template(base_url: str, db_url: str) -> None:
    from pipeline.db import get_database

    with get_database(db_url).unit_of_work() as s:
        s.add(Client(client_id="cli_1", name="c", api_key_id="key_1"))
        s.flush()
        s.add(Transaction(transaction_id="tx_01", client_id="cli_1", idempotency_key="k", request_fingerprint="f",
                          from_address="a", to_address="b", chain="solana", token_symbol="SOL", amount=5,
                          status="CONFIRMED", stage="CONFIRMED"))
    route = "/api/v1/wallets/{wallet_id}"
    with httpx.Client(base_url=base_url, timeout=10) as http:
        before = http.get("/metrics").text
        assert http.get("/api/v1/wallets/w_SECRETLOOKINGID1").status_code == 200
        assert http.get("/api/v1/wallets/w_SECRETLOOKINGID2").status_code == 200
        assert http.get("/api/v1/wallets/nope").status_code == 404
        assert http.get("/no/such/path/tx_XYZ").status_code == 404
        assert http.get("/api/v1/wallets/w_DENIED", headers={"x-deny": "1"}).status_code == 401
        assert http.delete("/api/v1/wallets/w_SECRETLOOKINGID3").status_code == 405
        # uvicorn drops the connection after an unhandled exception: its own connection
        assert httpx.get(f"{base_url}/api/v1/boom", timeout=10).status_code == 500
        response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text

    def delta(name: str, **labels: str) -> float:
        return (value(text, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("paratro_api_requests_total", method="GET", route=route, status="200") == 2
    assert delta("paratro_api_requests_total", method="GET", route=route, status="404") == 1
    assert delta("paratro_api_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("paratro_api_requests_total", method="GET", route="/api/v1/boom", status="500") == 1
    assert delta("paratro_api_requests_total", method="GET", route=route, status="401") == 1  # before routing
    assert delta("paratro_api_requests_total", method="DELETE", route=route, status="405") == 1
    assert delta("paratro_api_request_duration_seconds_count", method="GET", route=route) == 4
    assert "SECRETLOOKINGID" not in text and "w_DENIED" not in text and "tx_XYZ" not in text and "/no/such" not in text
    # the pipeline snapshot from the settings' database; the broker is down, and says so
    assert value(text, "paratro_database_up") == 1 and value(text, "paratro_broker_up") == 0
    assert value(text, "paratro_transfers", chain="solana", status="CONFIRMED") == 1
    assert "pw-not-shown" not in text and "redis://" not in text


def test_metrics_route_is_not_in_the_openapi_schema(settings_env: None) -> None:
    assert "/metrics" not in _app().openapi()["paths"]
