"""The API's routes over the real app and server (real Redis, the unit SQLite file): reads render
the pipeline's views, another client's ids are 404 exactly like missing ones, every bad input is
a typed error naming its field and writes nothing, and pages cover everything once even while
rows are inserted. (Creating wallets and transfers through the worker: tests/integration.)"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from api.client import ParatroAPIError, ParatroClient
from chains.registry import Registry
from pipeline import onboarding
from pipeline.db import Database
from pipeline.models import Transaction, Wallet, WebhookEvent
from pipeline.transfers import TransferRequest, create_transfer
from pipeline.views import account_view, asset_view, wallet_view
from signer.local import LocalKeySigner
from tests.unit.api_support import ApiUnderTest, Tenant, api, redis_url, serve, signed_headers  # noqa: F401

ADDRESS = "0x" + "1f" * 20
OTHER = "0x" + "2e" * 20
MISSING = {"wallet": "w_01JAAAAAAAAAAAAAAAAAAAAAAA", "account": "acc_01JAAAAAAAAAAAAAAAAAAAAAAA",
           "asset": "ast_01JAAAAAAAAAAAAAAAAAAAAAAA", "transaction": "tx_01JAAAAAAAAAAAAAAAAAAAAAAA"}


@dataclass
class Seeded:
    tenant: Tenant
    client: ParatroClient
    wallet_id: str
    account_id: str
    asset_ids: dict[str, str]
    transaction_id: str


def seed(api: ApiUnderTest, address: str = ADDRESS) -> Seeded:
    """A client with an ACTIVE wallet, an ethereum account with ETH and USDT, and one transfer
    recorded (not published: no worker here)."""
    tenant = api.tenant()
    with api.ctx.db.unit_of_work() as s:
        wallet = onboarding.create_wallet(s, tenant.client_id, "main")
        onboarding.activate_wallet(s, wallet.wallet_id)
        account = onboarding.create_account(s, api.ctx.registry, wallet.wallet_id, "ethereum", address)
        assets = {symbol: onboarding.add_asset(s, api.ctx.registry, account.account_id, symbol).asset_id
                  for symbol in ("ETH", "USDT")}
        tx, _ = create_transfer(s, api.ctx.registry, transfer(tenant, address, key="seeded"))
        ids = (wallet.wallet_id, account.account_id, tx.transaction_id)
    return Seeded(tenant, api.client(tenant), ids[0], ids[1], assets, ids[2])


def transfer(tenant: Tenant, address: str, key: str, amount: str = "1.5") -> TransferRequest:
    return TransferRequest(client_id=tenant.client_id, from_address=address, to_address=OTHER, chain="ethereum",
                           token_symbol="USDT", amount=amount, idempotency_key=key)


@pytest.fixture
def alice(api: ApiUnderTest) -> Iterator[Seeded]:
    seeded = seed(api)
    yield seeded
    seeded.client.close()


def refused(call: object) -> ParatroAPIError:
    with pytest.raises(ParatroAPIError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def count(db: Database, model: type, **where: object) -> int:
    with db.unit_of_work() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return s.scalar(query) or 0


# -- reads -----------------------------------------------------------------------------------------

def test_reads_render_the_pipeline_views(api: ApiUnderTest, alice: Seeded) -> None:
    with api.ctx.db.unit_of_work() as s:
        expected_wallet = wallet_view(s.get(Wallet, alice.wallet_id))
        from pipeline.models import Account, Asset

        expected_account = account_view(s.get(Account, alice.account_id))
        expected_usdt = asset_view(s.get(Asset, alice.asset_ids["USDT"]))
    c = alice.client
    assert c.get_wallet(alice.wallet_id) == expected_wallet
    assert c.get_account(alice.account_id) == expected_account
    assert c.get_asset(alice.asset_ids["USDT"]) == expected_usdt
    assert expected_usdt["balance"] == "0" and expected_usdt["decimals"] == 6
    assert c.list_wallets()["data"] == [expected_wallet]
    assert c.list_accounts(alice.wallet_id) == {"data": [expected_account], "next_cursor": None}
    assert {a["symbol"] for a in c.list_assets(alice.account_id)["data"]} == {"ETH", "USDT"}
    tx = c.get_transaction(alice.transaction_id)
    assert (tx["status"], tx["sub_status"], tx["amount"], tx["token_symbol"]) == ("PENDING", "RECEIVED", "1.5", "USDT")
    assert c.list_transactions()["data"] == [tx]
    assert c.list_transactions(status="CONFIRMED")["data"] == []
    assert c.list_transactions(chain="tron")["data"] == [] and c.list_transactions(chain="ethereum")["data"] == [tx]


def test_adding_an_asset_or_account_again_answers_200_with_the_same_one(api: ApiUnderTest, alice: Seeded) -> None:
    again = alice.client.request("POST", f"accounts/{alice.account_id}/assets", {"symbol": "USDT"})
    assert (again.status_code, again.json()["asset_id"]) == (200, alice.asset_ids["USDT"])
    again = alice.client.request("POST", f"wallets/{alice.wallet_id}/accounts", {"chain": "ethereum"})
    assert (again.status_code, again.json()["account_id"]) == (200, alice.account_id)


def test_chains_lists_the_registry_without_endpoints(api: ApiUnderTest, alice: Seeded) -> None:
    answer = alice.client.request("GET", "chains")
    chains = {c["chain"]: c for c in answer.json()["data"]}
    assert set(chains) == set(api.ctx.registry.names())
    eth = chains["ethereum"]
    assert (eth["network"], eth["family"], eth["native_symbol"], eth["confirmations"]) == ("devnet", "evm", "ETH", 3)
    assert eth["tokens"][0] == {"symbol": "ETH", "asset_type": "NATIVE", "contract_address": None, "decimals": 18}
    assert {"symbol": "USDT", "asset_type": "ERC20", "contract_address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "decimals": 6} in eth["tokens"]
    assert "rpc" not in answer.text and "127.0.0.1" not in answer.text and "http" not in answer.text


# -- tenancy and ids -------------------------------------------------------------------------------

def test_another_clients_resources_are_404_exactly_like_missing_ones(api: ApiUnderTest, alice: Seeded) -> None:
    with api.client(api.tenant()) as mallory:
        calls = {
            "wallet": lambda: mallory.get_wallet(alice.wallet_id),
            "wallet accounts": lambda: mallory.list_accounts(alice.wallet_id),
            "open account": lambda: mallory.create_account(alice.wallet_id, "bsc"),
            "account": lambda: mallory.get_account(alice.account_id),
            "account assets": lambda: mallory.list_assets(alice.account_id),
            "add asset": lambda: mallory.add_asset(alice.account_id, "ETH"),
            "asset": lambda: mallory.get_asset(alice.asset_ids["ETH"]),
            "transaction": lambda: mallory.get_transaction(alice.transaction_id),
        }
        missing = {
            "wallet": lambda: mallory.get_wallet(MISSING["wallet"]),
            "account": lambda: mallory.get_account(MISSING["account"]),
            "asset": lambda: mallory.get_asset(MISSING["asset"]),
            "transaction": lambda: mallory.get_transaction(MISSING["transaction"]),
        }
        bodies = {name: (e.status, e.code, e.message, e.field) for name, e in
                  ((name, refused(call)) for name, call in {**calls, **{f"missing {k}": v for k, v in missing.items()}}.items())}
        assert set(bodies.values()) == {(404, "not_found", "no such resource", None)}, bodies
        assert mallory.list_wallets()["data"] == [] and mallory.list_transactions()["data"] == []
    from pipeline.models import Account, Asset

    assert (count(api.ctx.db, Account, wallet_id=alice.wallet_id), count(api.ctx.db, Asset, account_id=alice.account_id)) == (1, 2)


@pytest.mark.parametrize("path", ["wallets/w_bad", "wallets/W_01JAAAAAAAAAAAAAAAAAAAAAAA", "accounts/acc_",
                                  "assets/tx_01JAAAAAAAAAAAAAAAAAAAAAAA", "transactions/%20", "wallets/x/accounts"])
def test_a_malformed_id_in_a_path_is_404(api: ApiUnderTest, alice: Seeded, path: str) -> None:
    answer = alice.client.request("GET", path)
    assert (answer.status_code, answer.json()) == (404, {"error": {"code": "not_found", "message": "no such resource",
                                                                   "field": None}})


def test_unknown_routes_and_methods_keep_the_error_shape(api: ApiUnderTest, alice: Seeded) -> None:
    assert alice.client.request("GET", "nothing/here").json()["error"]["code"] == "not_found"
    wrong = alice.client.request("DELETE", "chains")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


# -- validation ------------------------------------------------------------------------------------

BAD_WALLETS = [({}, "wallet_name"), ({"wallet_name": 5}, "wallet_name"), ({"wallet_name": ""}, "wallet_name"),
               ({"wallet_name": "x" * 201}, "wallet_name"), ({"wallet_name": "ok", "color": "red"}, "color"),
               ([1, 2], None)]


@pytest.mark.parametrize(("body", "field"), BAD_WALLETS)
def test_bad_wallet_bodies_name_the_field_and_write_nothing(api: ApiUnderTest, alice: Seeded, body: object,
                                                            field: str | None) -> None:
    error = refused(lambda: alice.client.call("POST", "wallets", body))
    assert (error.status, error.code, error.field) == (422, "validation_error", field)
    assert count(api.ctx.db, Wallet, client_id=alice.tenant.client_id) == 1


def test_a_body_that_is_not_json_is_a_validation_error(api: ApiUnderTest, alice: Seeded) -> None:
    body = b'{"wallet_name": '
    headers = {**signed_headers(alice.tenant, "POST", "/api/v1/wallets", body), "Content-Type": "application/json"}
    answer = httpx.post(api.url + "/wallets", content=body, headers=headers)
    assert answer.status_code == 422
    assert answer.json()["error"] == {"code": "validation_error", "message": "the body is not valid JSON", "field": None}


def transaction_body(**changes: object) -> dict[str, object]:
    return {"from_address": ADDRESS, "to_address": OTHER, "chain": "ethereum", "token_symbol": "USDT", "amount": "1.5",
            **changes}


BAD_TRANSACTIONS = [
    (transaction_body(amount=1.5), "validation_error", "amount"),
    (transaction_body(amount=2), "validation_error", "amount"),
    (transaction_body(amount="1.2.3"), "invalid_amount", "amount"),
    (transaction_body(amount="0"), "invalid_amount", "amount"),
    (transaction_body(amount="0.0000001"), "invalid_amount", "amount"),
    (transaction_body(amount="-1"), "invalid_amount", "amount"),
    (transaction_body(chain="dogechain"), "unknown_chain", "chain"),
    (transaction_body(token_symbol="BNB"), "unknown_symbol", "token_symbol"),
    (transaction_body(to_address="0x12 34"), "validation_error", "to_address"),
    (transaction_body(from_address=""), "validation_error", "from_address"),
    ({k: v for k, v in transaction_body().items() if k != "chain"}, "validation_error", "chain"),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_TRANSACTIONS)
def test_bad_transactions_are_typed_errors_naming_the_field(api: ApiUnderTest, alice: Seeded, body: dict[str, object],
                                                            code: str, field: str) -> None:
    error = refused(lambda: alice.client.call("POST", "transactions", body, headers={"Idempotency-Key": "k-bad"}))
    assert (error.status, error.code, error.field) == (422, code, field)
    assert count(api.ctx.db, Transaction, client_id=alice.tenant.client_id) == 1


@pytest.mark.parametrize("key", [None, "k" * 129, "\u00e9t\u00e9"])
def test_the_idempotency_key_header_is_required_and_printable(api: ApiUnderTest, alice: Seeded, key: str | None) -> None:
    headers = {} if key is None else {"Idempotency-Key": key.encode("utf-8")}  # bytes: as a careless client sends
    error = refused(lambda: alice.client.call("POST", "transactions", transaction_body(), headers=headers))
    assert (error.status, error.code, error.field) == (422, "validation_error", "Idempotency-Key")


def test_the_same_key_answers_the_same_transaction_or_a_conflict(api: ApiUnderTest, alice: Seeded) -> None:
    """The seeded transfer used key "seeded" with this very body (no new message is published)."""
    same = alice.client.request("POST", "transactions", transaction_body(), headers={"Idempotency-Key": "seeded"})
    assert (same.status_code, same.json()["transaction_id"]) == (200, alice.transaction_id)
    error = refused(lambda: alice.client.call("POST", "transactions", transaction_body(amount="2"),
                                              headers={"Idempotency-Key": "seeded"}))
    assert (error.status, error.code) == (409, "idempotency_conflict")
    assert count(api.ctx.db, Transaction, client_id=alice.tenant.client_id) == 1


@pytest.mark.parametrize(("params", "code", "field"), [
    ({"limit": 0}, "validation_error", "limit"), ({"limit": 101}, "validation_error", "limit"),
    ({"limit": "ten"}, "validation_error", "limit"), ({"status": "DONE"}, "validation_error", "status"),
    ({"cursor": "not-a-cursor"}, "validation_error", "cursor"), ({"cursor": "dHhfYmFk"}, "validation_error", "cursor"),
    ({"chain": "dogechain"}, "unknown_chain", "chain"),
])
def test_bad_list_parameters_name_the_field(api: ApiUnderTest, alice: Seeded, params: dict[str, object], code: str,
                                            field: str) -> None:
    error = refused(lambda: alice.client.call("GET", "transactions", params=params))
    assert (error.status, error.code, error.field) == (422, code, field)


def test_accounts_need_an_active_wallet_and_a_known_chain_assets_a_known_symbol(api: ApiUnderTest, alice: Seeded) -> None:
    with api.ctx.db.unit_of_work() as s:
        waiting = onboarding.create_wallet(s, alice.tenant.client_id, "still generating").wallet_id
    error = refused(lambda: alice.client.create_account(waiting, "ethereum"))
    assert (error.status, error.code) == (409, "wallet_not_active")
    error = refused(lambda: alice.client.create_account(alice.wallet_id, "dogechain"))
    assert (error.status, error.code, error.field) == (422, "unknown_chain", "chain")
    error = refused(lambda: alice.client.add_asset(alice.account_id, "SOL"))
    assert (error.status, error.code, error.field) == (422, "unknown_symbol", "symbol")


def test_the_wallet_limit_is_409_limit_exceeded(api: ApiUnderTest) -> None:
    tenant = api.tenant(max_wallets=1)
    with api.ctx.db.unit_of_work() as s:
        onboarding.create_wallet(s, tenant.client_id, "the one")
    with api.client(tenant) as client:
        error = refused(lambda: client.create_wallet("one too many"))
    assert (error.status, error.code) == (409, "limit_exceeded")
    assert count(api.ctx.db, Wallet, client_id=tenant.client_id) == 1


# -- pagination ------------------------------------------------------------------------------------

def walk(client: ParatroClient, path: str, limit: int, between: object = None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = client.call("GET", path, params={"limit": limit, "cursor": cursor})
        key = next(k for k in ("transaction_id", "wallet_id") if not page["data"] or k in page["data"][0])
        pages.append([row[key] for row in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        if between is not None:
            between()  # type: ignore[operator]


def test_pages_cover_every_row_once_newest_first_and_ignore_rows_inserted_meanwhile(api: ApiUnderTest,
                                                                                   alice: Seeded) -> None:
    with api.ctx.db.unit_of_work() as s:
        for i in range(6):
            create_transfer(s, api.ctx.registry, transfer(alice.tenant, ADDRESS, key=f"page-{i}", amount=f"{i + 1}"))
    with api.ctx.db.unit_of_work() as s:
        before = list(s.scalars(select(Transaction.transaction_id).where(Transaction.client_id == alice.tenant.client_id)
                                .order_by(Transaction.transaction_id.desc())))
    inserted: list[str] = []

    def insert() -> None:
        with api.ctx.db.unit_of_work() as s:
            tx, _ = create_transfer(s, api.ctx.registry, transfer(alice.tenant, ADDRESS, key=secrets.token_hex(6)))
            inserted.append(tx.transaction_id)

    pages = walk(alice.client, "transactions", 3, between=insert)
    seen = [tx for page in pages for tx in page]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert seen == before  # all of them, once, newest first; none of those inserted meanwhile
    assert len(inserted) == 2 and not set(inserted) & set(seen)
    everything = sorted(before + inserted, reverse=True)
    assert walk(alice.client, "transactions", 100) == [everything]
    assert walk(alice.client, "transactions", len(everything)) == [everything]  # an exact last page: no next cursor


def test_wallet_pages(api: ApiUnderTest, alice: Seeded) -> None:
    with api.ctx.db.unit_of_work() as s:
        for i in range(4):
            onboarding.create_wallet(s, alice.tenant.client_id, f"w{i}")
    pages = walk(alice.client, "wallets", 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [w for p in pages for w in p]
    assert flat == sorted(set(flat), reverse=True) and alice.wallet_id in flat


# -- webhook ---------------------------------------------------------------------------------------

def test_webhook_config_secret_once_and_test_ping(api: ApiUnderTest, alice: Seeded) -> None:
    c = alice.client
    assert c.get_webhook() == {"url": None, "events": []}
    error = refused(c.test_webhook)
    assert (error.status, error.code) == (409, "webhook_not_configured")
    configured = c.set_webhook("http://127.0.0.1:9/hooks", events=["transaction.stage"])
    assert configured["url"] == "http://127.0.0.1:9/hooks" and configured["events"] == ["transaction.stage"]
    assert len(configured["secret"]) >= 32
    shown = c.get_webhook()
    assert shown == {"url": "http://127.0.0.1:9/hooks", "events": ["transaction.stage"]}
    assert configured["secret"] not in c.request("GET", "webhook").text
    assert c.set_webhook("http://127.0.0.1:9/hooks")["secret"] != configured["secret"]  # PUT rotates it
    ping = c.test_webhook()
    with api.ctx.db.unit_of_work() as s:
        event = s.get(WebhookEvent, ping["event_id"])
        assert (event.type, event.client_id, event.status) == ("ping", alice.tenant.client_id, "PENDING")


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"url": "ftp://example.com/hook"}, "invalid_webhook_url", "url"),
    ({"url": "not a url"}, "invalid_webhook_url", "url"),
    ({"url": "http://user:pw@127.0.0.1/hook"}, "invalid_webhook_url", "url"),
    ({"url": "http://127.0.0.1/hook", "events": ["transaction.everything"]}, "validation_error", "events.0"),
    ({}, "validation_error", "url"),
])
def test_bad_webhook_configuration_is_refused_and_changes_nothing(api: ApiUnderTest, alice: Seeded,
                                                                  body: dict[str, object], code: str, field: str) -> None:
    error = refused(lambda: alice.client.call("PUT", "webhook", body))
    assert (error.status, error.code, error.field) == (422, code, field)
    assert alice.client.get_webhook() == {"url": None, "events": []}


# -- failures of the server itself -----------------------------------------------------------------

def test_an_unexpected_error_is_a_generic_500(db: Database, registry: Registry, local_signer: LocalKeySigner,
                                              redis_url: str) -> None:
    healthy = serve(db, registry, local_signer, redis_url)
    tenant = healthy.tenant()
    healthy.server.stop()

    from api.app import create_app
    from api.server import serve_in_thread

    def broken() -> object:
        raise RuntimeError("password=hunter2 in an exception text")

    app = create_app(settings=healthy.settings, context=broken)  # type: ignore[arg-type]
    with serve_in_thread(app) as server, ParatroClient(server.base_url + "/api/v1", tenant.api_key,
                                                        tenant.api_secret) as client:
        answer = client.request("GET", "wallets")
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "internal_error" and "hunter2" not in answer.text
        ready = httpx.get(server.base_url + "/ready")
        assert ready.status_code == 503 and "hunter2" not in ready.text


def test_waiting_for_a_wallet_ends_on_failed_or_times_out(api: ApiUnderTest, alice: Seeded) -> None:
    from api.client import WalletFailed

    with api.ctx.db.unit_of_work() as s:
        doomed = onboarding.create_wallet(s, alice.tenant.client_id, "doomed").wallet_id
        slow = onboarding.create_wallet(s, alice.tenant.client_id, "slow").wallet_id
        onboarding.fail_wallet(s, doomed, "key_generation_failed", "signer refused")
    with pytest.raises(WalletFailed) as failed:
        alice.client.wait_wallet_active(doomed, timeout=5)
    assert (failed.value.wallet["status"], failed.value.wallet["failure_reason"]) == ("FAILED", "key_generation_failed")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        alice.client.wait_wallet_active(slow, timeout=0.5, poll_s=0.1)
    assert time.monotonic() - started < 5
    assert alice.client.wait_wallet_active(alice.wallet_id)["status"] == "ACTIVE"
