"""Each devnet node alone: how many pre-signed transfers per second it accepts.

Why: the pipeline's throughput is read against whichever limit binds. Here no worker, database or
broker takes part: one throwaway key is funded, `count` native transfers to fresh addresses are
built and signed beforehand with the family's own adapter (EVM nonces back to back, one funded
output per transfer on Bitcoin, one TaPoS reference or blockhash for all on TRON and Solana), then
sent through the same adapter's `broadcast` from a few threads as fast as the node answers.
Accepted per second = accepted sends / the time from the first send to the last answer.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.pipeline_burst import PLANS

SENDERS = 4  # concurrent senders: enough to keep a node busy, few enough for 2 cores


@dataclass(frozen=True)
class NodeResult:
    chain: str
    sent: int
    accepted: int
    seconds: float
    first_error: str | None = None

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


def _key(curve: Any) -> tuple[bytes, bytes]:
    from chains.base import Curve

    if curve is Curve.ED25519:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = Ed25519PrivateKey.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    from eth_keys import keys

    private = keys.PrivateKey(secrets.token_bytes(32))
    return private.to_bytes(), private.public_key.to_bytes()


def _sign(curve: Any, private: bytes, digests: tuple[bytes, ...]) -> list[bytes]:
    """What signer.local does with an unsealed key: secp256k1 over 32-byte digests, ed25519 over messages."""
    from chains.base import Curve

    if curve is Curve.ED25519:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.from_private_bytes(private)
        return [key.sign(message) for message in digests]
    from eth_keys import keys

    signer = keys.PrivateKey(private)
    return [signer.sign_msg_hash(digest).to_bytes() for digest in digests]


def presigned(ctx: Any, node: Any, chain: str, count: int) -> list[Any]:
    """`count` signed native transfers from a fresh funded key, ready to broadcast."""
    from chains.base import TransferIntent
    from pipeline.amounts import parse_amount
    from workers.services import fresh_destination

    plan = PLANS[chain]
    adapter = ctx.adapter_for(chain)
    token = ctx.registry.chain(chain).token(plan.symbol)
    amount = parse_amount(plan.amount, token.decimals)
    funding = parse_amount(plan.funding_per_transfer, token.decimals)
    private, public = _key(adapter.curve)
    address = adapter.address_from_public_key(public)
    if adapter.uses_utxos:
        for _ in range(count):
            node.fund(address, token, funding)
        utxos = adapter.list_utxos(address)
        if len(utxos) < count:
            raise RuntimeError(f"{chain}: {len(utxos)} outputs funded for {count} transfers")
    else:
        node.fund(address, token, funding * count)
        utxos = []
    nonce = adapter.next_nonce(address) if adapter.uses_account_nonce else None
    intents = [TransferIntent(address, fresh_destination(ctx, chain), amount, token) for _ in range(count)]
    context = adapter.build_context(intents[0])
    fee = None if adapter.uses_utxos else adapter.quote_fee(intents[0])
    signed = []
    for i, intent in enumerate(intents):
        quote = adapter.quote_fee(intent, [utxos[i]]) if adapter.uses_utxos else fee
        unsigned = adapter.build(intent, quote, None if nonce is None else nonce + i, context)
        signed.append(adapter.attach_signature(unsigned.payload, _sign(adapter.curve, private, unsigned.digests)))
    return signed


def node_acceptance(ctx: Any, node: Any, chain: str, count: int, senders: int = SENDERS) -> NodeResult:
    """Pre-sign `count` transfers, then time sending them all from `senders` threads."""
    adapter = ctx.adapter_for(chain)
    signed = presigned(ctx, node, chain, count)
    errors: list[str] = []

    def send(transaction: Any) -> bool:
        try:
            adapter.broadcast(transaction)
            return True
        except Exception as exc:  # noqa: BLE001 - a refusal is counted, not raised
            errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
            return False

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        accepted = sum(pool.map(send, signed))
    return NodeResult(chain, len(signed), accepted, time.monotonic() - started, errors[0] if errors else None)
