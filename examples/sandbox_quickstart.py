"""The Sandbox from a client's side, start to finish, with the shipped client.

Run `make sandbox` in one terminal; it prints one JSON line when ready. Then, in another:

    .venv/bin/python examples/sandbox_quickstart.py '<the JSON line>'

It creates two wallets and waits for their keys, opens accounts on ethereum, tron, bitcoin and
solana with their native assets, funds the first wallet's accounts from the devnet faucet, sends
one transfer per chain to the second wallet, and checks that every transfer's webhooks arrive
signed (a local receiver verifies each one). It prints one JSON line of what happened.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from api.client import ParatroClient
from api.receiver import WebhookReceiver

# chain -> (asset, faucet amount, transfer amount), amounts in token units as decimal strings
PLAN = {
    "ethereum": ("ETH", "1", "0.01"),
    "tron": ("TRX", "100", "1.5"),
    "bitcoin": ("BTC", "0.1", "0.001"),
    "solana": ("SOL", "1", "0.01"),
}


def open_wallet(api: ParatroClient, name: str) -> dict[str, dict[str, Any]]:
    """A wallet with an account and its native asset on every chain of PLAN: chain -> account."""
    wallet = api.create_wallet(name)  # 201: PROGRESSING / GENERATING, keys made in the background
    api.wait_wallet_active(wallet["wallet_id"], timeout=60)
    accounts = {}
    for chain, (symbol, _, _) in PLAN.items():
        accounts[chain] = api.create_account(wallet["wallet_id"], chain)
        api.add_asset(accounts[chain]["account_id"], symbol)
    return accounts


def run(ready: dict[str, Any]) -> dict[str, Any]:
    api = ParatroClient(ready["base_url"], ready["api_key"], ready["api_secret"])
    with WebhookReceiver() as receiver:
        receiver.secret = api.set_webhook(receiver.url)["secret"]  # the signing secret: shown only here
        hot, cold = open_wallet(api, "hot wallet"), open_wallet(api, "cold wallet")
        sent = []
        for chain, (symbol, funding, amount) in PLAN.items():
            api.faucet(chain, hot[chain]["address"], symbol, funding)
            sent.append(api.create_transaction(
                from_address=hot[chain]["address"], to_address=cold[chain]["address"], chain=chain,
                token_symbol=symbol, amount=amount, idempotency_key=f"quickstart-{chain}"))
        final = [api.wait_transaction_final(tx["transaction_id"], timeout=120) for tx in sent]
        ids = [tx["transaction_id"] for tx in final]
        receiver.wait_for(lambda got: all(len(got.of_resource(i)) >= 2 for i in ids), timeout=30)
        webhooks = {i: [event["type"] for event in receiver.received.of_resource(i)] for i in ids}
        return {
            "transactions": {tx["chain"]: {"transaction_id": tx["transaction_id"], "status": tx["status"],
                                           "tx_hash": tx["tx_hash"]} for tx in final},
            "webhooks": webhooks,
            "signature_ok": receiver.received.signature_ok,
            "signature_bad": receiver.received.signature_bad,
        }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sandbox_quickstart.py '<the JSON line printed by make sandbox>'")
    print(json.dumps(run(json.loads(sys.argv[1]))))
