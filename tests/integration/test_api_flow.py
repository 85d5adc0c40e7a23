"""The HTTP API end to end, with the shipped client against the real server, database (SQLite and
PostgreSQL), Redis, devnets and worker: a wallet generated in the background, accounts on every
family, faucet funds, transfers confirmed on chain, idempotency (also under a race), another
client's ids, pagination under inserts, readiness, and a webhook ping delivered and verified."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest

from api.client import ParatroAPIError, ParatroClient, verify_webhook
from tests.integration import helpers as h
from tests.integration.api_fixtures import Api, Tenant, api  # noqa: F401

CHAINS = {"ethereum": ["ETH", "USDT"], "bsc": ["BNB"], "tron": ["TRX"], "bitcoin": ["BTC"], "solana": ["SOL"]}


@dataclass
class Flow:
    tenant: Tenant
    wallet: dict
    accounts: dict[str, dict]
    assets: dict[tuple[str, str], dict]
    funding: dict
    transaction: dict
    transaction_key: str

    @property
    def client(self) -> ParatroClient:
        return self.tenant.client


@pytest.fixture(scope="module")
def flow(api: Api) -> Iterator[Flow]:
    """One client's journey through the API, as the README tells it (asserted in the tests below)."""
    tenant = api.new_tenant("flow")
    c = tenant.client
    created = c.request("POST", "wallets", {"wallet_name": "treasury"})
    assert created.status_code == 201, created.text
    wallet = c.wait_wallet_active(created.json()["wallet_id"], timeout=60)
    accounts, assets = {}, {}
    for chain, symbols in CHAINS.items():
        opened = c.request("POST", f"wallets/{wallet['wallet_id']}/accounts", {"chain": chain})
        assert opened.status_code == 201, opened.text
        accounts[chain] = opened.json()
        for symbol in symbols:
            added = c.request("POST", f"accounts/{accounts[chain]['account_id']}/assets", {"symbol": symbol})
            assert added.status_code == 201, added.text
            assets[(chain, symbol)] = added.json()
    funding = c.faucet("ethereum", accounts["ethereum"]["address"], "ETH", "2")
    key = f"flow-{secrets.token_hex(4)}"
    transaction = c.create_transaction(accounts["ethereum"]["address"], h.fresh_address("ethereum"), "ethereum", "ETH",
                                       "0.5", idempotency_key=key)
    yield Flow(tenant, wallet, accounts, assets, funding, transaction, key)


def test_a_wallet_created_over_http_becomes_active_and_opens_accounts_on_every_family(flow: Flow, api: Api) -> None:
    assert (flow.wallet["status"], flow.wallet["key_status"], flow.wallet["wallet_name"]) == ("ACTIVE", "ACTIVE", "treasury")
    registry = h.ctx().registry
    for chain, account in flow.accounts.items():
        assert (account["wallet_id"], account["chain"], account["network"], account["status"]) == (
            flow.wallet["wallet_id"], chain, registry.chain(chain).network, "ACTIVE")
    assert flow.accounts["ethereum"]["address"] == flow.accounts["bsc"]["address"]
    assert len({flow.accounts[c]["address"] for c in ("ethereum", "tron", "bitcoin", "solana")}) == 4
    again = flow.client.request("POST", f"wallets/{flow.wallet['wallet_id']}/accounts", {"chain": "tron"})
    assert (again.status_code, again.json()) == (200, flow.accounts["tron"])
    usdt = flow.assets[("ethereum", "USDT")]
    assert (usdt["asset_type"], usdt["decimals"], usdt["contract_address"], usdt["balance"], usdt["locked_balance"]) == (
        "ERC20", 6, registry.chain("ethereum").token("USDT").contract, "0", "0")
    listed = flow.client.list_accounts(flow.wallet["wallet_id"])
    assert sorted(a["chain"] for a in listed["data"]) == sorted(CHAINS) and listed["next_cursor"] is None
    assert {a["symbol"] for a in flow.client.list_assets(flow.accounts["ethereum"]["account_id"])["data"]} == {"ETH", "USDT"}
    assert flow.client.get_wallet(flow.wallet["wallet_id"]) == flow.wallet
    assert [w["wallet_id"] for w in flow.client.list_wallets()["data"]] == [flow.wallet["wallet_id"]]


def test_faucet_funds_credit_the_asset_and_a_transfer_confirms_on_chain(flow: Flow) -> None:
    eth = flow.assets[("ethereum", "ETH")]
    assert (flow.funding["credited"], flow.funding["asset_id"], flow.funding["balance"]) == (True, eth["asset_id"], "2")
    assert flow.transaction["status"] == "PENDING" and flow.transaction["amount"] == "0.5"
    final = flow.client.wait_transaction_final(flow.transaction["transaction_id"], timeout=120)
    assert (final["status"], final["sub_status"], final["failure_reason"]) == ("CONFIRMED", "CONFIRMED", None)
    assert final["tx_hash"] and final["confirmations"] >= 3 and final["created_at"] <= final["updated_at"]
    balance = Decimal(flow.client.get_asset(eth["asset_id"])["balance"])
    assert Decimal("1.49") < balance < Decimal("1.5")  # 2 - 0.5 - the fee
    assert h.balance_on_chain("ethereum", flow.accounts["ethereum"]["address"], "ETH") == int(balance * 10**18)
    confirmed = [t["transaction_id"] for t in flow.client.iter_transactions(status="CONFIRMED", chain="ethereum")]
    assert flow.transaction["transaction_id"] in confirmed


def test_the_same_key_and_body_is_the_same_transaction_another_body_a_conflict(flow: Flow) -> None:
    body = {k: flow.transaction[k] for k in ("from_address", "to_address", "chain", "token_symbol", "amount")}
    same = flow.client.request("POST", "transactions", body, headers={"Idempotency-Key": flow.transaction_key})
    assert (same.status_code, same.json()["transaction_id"]) == (200, flow.transaction["transaction_id"])
    with pytest.raises(ParatroAPIError) as conflict:
        flow.client.create_transaction(body["from_address"], body["to_address"], "ethereum", "ETH", "0.6",
                                       idempotency_key=flow.transaction_key)
    assert (conflict.value.status, conflict.value.code) == (409, "idempotency_conflict")


def test_concurrent_requests_with_one_key_make_one_transaction(flow: Flow, api: Api) -> None:
    key = f"race-{secrets.token_hex(4)}"
    to = h.fresh_address("ethereum")
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send() -> None:
        with ParatroClient(api.base_url, flow.tenant.api_key, flow.tenant.api_secret) as own:
            start.wait()
            answer = own.request("POST", "transactions", {
                "from_address": flow.accounts["ethereum"]["address"], "to_address": to, "chain": "ethereum",
                "token_symbol": "ETH", "amount": "0.001"}, headers={"Idempotency-Key": key})
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers if a.status_code > 201]
    assert len({a.json()["transaction_id"] for a in answers}) == 1
    keyed = [t for t in flow.client.iter_transactions() if t["to_address"] == to]
    assert len(keyed) == 1


def test_another_clients_ids_are_404_like_missing_ones(flow: Flow, api: Api) -> None:
    mallory = api.new_tenant("mallory").client
    ids = {"wallets": flow.wallet["wallet_id"], "accounts": flow.accounts["ethereum"]["account_id"],
           "assets": flow.assets[("ethereum", "ETH")]["asset_id"], "transactions": flow.transaction["transaction_id"]}
    missing = {kind: resource_id.split("_")[0] + "_01JAAAAAAAAAAAAAAAAAAAAAAA" for kind, resource_id in ids.items()}
    for kind in ids:
        for path in (f"{kind}/{ids[kind]}", f"{kind}/{missing[kind]}"):
            answer = mallory.request("GET", path)
            assert (answer.status_code, answer.json()["error"]) == (404, {"code": "not_found", "message": "no such resource",
                                                                          "field": None}), path
    for method, path, body in (("GET", f"wallets/{ids['wallets']}/accounts", None),
                               ("POST", f"wallets/{ids['wallets']}/accounts", {"chain": "polygon"}),
                               ("GET", f"accounts/{ids['accounts']}/assets", None),
                               ("POST", f"accounts/{ids['accounts']}/assets", {"symbol": "USDT"})):
        assert mallory.request(method, path, body).status_code == 404, path
    assert mallory.list_transactions()["data"] == [] and mallory.list_wallets()["data"] == []
    assert len(flow.client.list_accounts(flow.wallet["wallet_id"])["data"]) == len(CHAINS)  # nothing was opened


def test_pages_are_complete_and_stable_while_transactions_are_created(api: Api) -> None:
    tenant = api.new_tenant("pages")
    c = tenant.client
    source = h.fresh_address("ethereum")  # not the client's: each transfer fails at resolve_source, on its own

    def submit(i: int) -> str:
        return c.create_transaction(source, h.fresh_address("ethereum"), "ethereum", "ETH", f"0.{i + 1}",
                                    idempotency_key=f"page key {i} / {secrets.token_hex(3)}")["transaction_id"]

    created = [submit(i) for i in range(7)]
    seen, cursor, inserted = [], None, []
    while True:
        page = c.list_transactions(limit=3, cursor=cursor)
        seen += [t["transaction_id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        inserted.append(submit(100 + len(inserted)))
    assert seen == sorted(created, reverse=True) and len(inserted) == 2
    everything = [t["transaction_id"] for t in c.iter_transactions(limit=4)]
    assert everything == sorted(created + inserted, reverse=True)
    final = h.wait_final(everything, timeout=60)
    assert {(t.status, t.failure_reason is not None) for t in final.values()} == {("FAILED", True)}
    assert sorted(t["transaction_id"] for t in c.iter_transactions(status="FAILED")) == sorted(everything)


def test_ready_reports_each_component_and_chains_show_no_endpoints(api: Api) -> None:
    answer = httpx.get(api.server.base_url + "/ready")
    report = answer.json()
    assert answer.status_code == 200, report
    assert (report["status"], report["database"]["status"], report["redis"]["status"]) == ("ok", "ok", "ok")
    running = set(api.stack.nodes)
    assert {chain for chain, c in report["chains"].items() if c["status"] == "ok"} == running
    assert {c["status"] for chain, c in report["chains"].items() if chain not in running} == {"skipped"}
    assert httpx.get(api.base_url + "/ready").json()["chains"].keys() == report["chains"].keys()
    listed = api.client.request("GET", "chains")
    for node in api.stack.nodes.values():
        assert node.rpc_url not in listed.text and node.rpc_url not in answer.text
    assert {c["chain"] for c in listed.json()["data"]} >= running


def test_a_webhook_ping_arrives_signed(api: Api) -> None:
    from api.receiver import WebhookReceiver

    tenant = api.new_tenant("webhook")
    with WebhookReceiver() as receiver:
        configured = tenant.client.set_webhook(receiver.url)
        receiver.secret = configured["secret"]
        assert tenant.client.get_webhook() == {"url": receiver.url, "events": []}
        event_id = tenant.client.test_webhook()["event_id"]
        assert receiver.wait_for(lambda got: event_id in got.events, timeout=30), receiver.received
    ping = receiver.received.events[event_id]
    assert (ping["type"], ping["data"]) == ("ping", {"client_id": tenant.client_id})
    assert receiver.received.signature_bad == 0
    from pipeline import webhook_signing

    assert verify_webhook is webhook_signing.verify_webhook  # receivers import it from the client
