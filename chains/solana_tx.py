"""Solana transactions offline: build the message, attach the ed25519 signature, read signed bytes.

Why its own module: this decides what gets signed, so it is pure (no node, no clock): the same
intent, fee parameters and blockhash always give the same message bytes. For ed25519 the signer
signs the message itself, so the "digest" handed to the MPC signer is the serialized solders
`Message`. The pipeline stores the payload and hands it back later, possibly in another process,
so the payload is a stable, self-describing serialisation:

    canonical JSON (sorted keys, no spaces) of
    {"format": "solana-tx/1", "from": <sender>, "message": <base64 message bytes>,
     "last_valid_block_height": <int>}

Keeping `from` lets `attach_signature` refuse a signature by any key but the sender's before
anything is sent. A transfer is one of, after the ComputeBudget instructions of its quote (`SetComputeUnitLimit`,
then `SetComputeUnitPrice` when the price is not 0; none for a quote made before priority fees,
see `chains.solana_fees`):

- SOL: one System Program `transfer` (payer = sender);
- SPL: `create_idempotent_associated_token_account` (payer = sender) for the destination when the
  fee quote found no account there, then `transfer_checked` from the sender's associated token
  account (decimals and mint checked by the token program). The idempotent form is used so that
  an account created by someone else between quote and execution does not fail the transfer (the
  sender then simply pays no rent, and the status reports what was really paid).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chains.base import SignedTransaction, UnsignedTransaction
from chains.errors import InvalidSignature, MalformedTransaction
from chains.solana_address import b58decode, b58encode

PAYLOAD_FORMAT = "solana-tx/1"
SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
ASSOCIATED_TOKEN_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
TOKEN_ACCOUNT_SIZE = 165  # bytes of an SPL token account: its rent is what creating one costs
_U64_MAX = 2**64 - 1
_SYSTEM_TRANSFER = 2  # System Program instruction index of Transfer


def _pubkey(address: str) -> Any:
    from solders.pubkey import Pubkey

    return Pubkey.from_string(address)


def associated_token_address(owner: str, mint: str) -> str:
    """The owner's associated token account for `mint` (SPL Token program), derived offline."""
    from solders.token.associated import get_associated_token_address

    return str(get_associated_token_address(_pubkey(owner), _pubkey(mint)))


def compute_budget_instructions(limit: int, price: int) -> list[Any]:
    """SetComputeUnitLimit(limit) and, for a non-zero price, SetComputeUnitPrice(price micro-lamports)."""
    from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price

    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit < 2**32:
        raise MalformedTransaction(f"a compute-unit limit is an integer 1..2^32-1, got {limit!r}")
    if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= _U64_MAX:
        raise MalformedTransaction(f"a compute-unit price is an integer 0..2^64-1, got {price!r}")
    return [set_compute_unit_limit(limit)] + ([set_compute_unit_price(price)] if price else [])


def transfer_instructions(
    sender: str, to: str, amount: int, mint: str | None, decimals: int, create_ata: bool
) -> list[Any]:
    """The instructions of a SOL (`mint` None) or SPL transfer; addresses pre-validated."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= _U64_MAX:
        raise MalformedTransaction(f"amount must be an integer 0..2^64-1 of base units, got {amount!r}")
    if mint is None:
        from solders.system_program import TransferParams, transfer

        return [transfer(TransferParams(from_pubkey=_pubkey(sender), to_pubkey=_pubkey(to), lamports=amount))]
    from spl.token.instructions import create_idempotent_associated_token_account, transfer_checked
    from spl.token.models import TransferCheckedParams

    owner, mint_key, dest_owner = _pubkey(sender), _pubkey(mint), _pubkey(to)
    instructions = []
    if create_ata:
        instructions.append(create_idempotent_associated_token_account(owner, dest_owner, mint_key))
    instructions.append(transfer_checked(TransferCheckedParams(
        program_id=_pubkey(TOKEN_PROGRAM),
        source=_pubkey(associated_token_address(sender, mint)),
        mint=mint_key,
        dest=_pubkey(associated_token_address(to, mint)),
        owner=owner,
        amount=amount,
        decimals=decimals,
    )))
    return instructions


def build_unsigned(sender: str, instructions: list[Any], blockhash: str, last_valid_block_height: int) -> UnsignedTransaction:
    """Compile the message (fee payer = sender) and wrap it as the stored payload."""
    from solders.hash import Hash
    from solders.message import Message

    try:
        recent = Hash.from_string(blockhash)
    except ValueError:
        raise MalformedTransaction(f"not a blockhash: {blockhash!r}"[:200]) from None
    message = Message.new_with_blockhash(instructions, _pubkey(sender), recent)
    if message.header.num_required_signatures != 1:
        raise MalformedTransaction("a transfer must need exactly one signature, the sender's")
    message_bytes = bytes(message)
    payload = json.dumps(
        {"format": PAYLOAD_FORMAT, "from": sender, "message": base64.b64encode(message_bytes).decode(),
         "last_valid_block_height": last_valid_block_height},
        sort_keys=True, separators=(",", ":"),
    ).encode()
    return UnsignedTransaction(payload=payload, digests=(message_bytes,))


def decode_payload(payload: bytes) -> tuple[str, bytes, Any]:
    """(sender, message bytes, solders Message) of a stored payload; MalformedTransaction otherwise."""
    from solders.message import Message

    try:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("format") != PAYLOAD_FORMAT:
            raise ValueError("not a solana-tx/1 payload")
        sender, message_bytes = data["from"], base64.b64decode(data["message"], validate=True)
        message = Message.from_bytes(message_bytes)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise MalformedTransaction(f"unusable Solana payload: {exc}"[:200]) from None
    if not isinstance(sender, str) or str(message.account_keys[0]) != sender:
        raise MalformedTransaction("the payload's fee payer is not its sender")
    if message.header.num_required_signatures != 1:
        raise MalformedTransaction("the payload's message needs more than the sender's signature")
    return sender, message_bytes, message


def attach(payload: bytes, signature: bytes) -> SignedTransaction:
    """The wire transaction: refuses a signature that is not the sender's over these message bytes."""
    from solders.signature import Signature
    from solders.transaction import Transaction

    sender, message_bytes, message = decode_payload(payload)
    if not isinstance(signature, (bytes, bytearray)):
        raise InvalidSignature(f"an ed25519 signature is 64 bytes, got {type(signature).__name__}")
    if len(signature) != 64:
        raise InvalidSignature(f"an ed25519 signature is 64 bytes, got {len(signature)}")
    sig = Signature.from_bytes(bytes(signature))
    if not sig.verify(_pubkey(sender), message_bytes):
        raise InvalidSignature(f"the signature does not verify against the sender {sender} over the message")
    tx = Transaction.populate(message, [sig])
    return SignedTransaction(raw=bytes(tx), tx_hash=str(sig))


def decode_signed(raw: bytes) -> Any:
    """The solders Transaction of stored signed bytes (legacy message, one signature)."""
    from solders.transaction import Transaction

    try:
        tx = Transaction.from_bytes(bytes(raw))
    except (ValueError, TypeError) as exc:
        raise MalformedTransaction(f"unusable signed Solana transaction: {exc}"[:200]) from None
    if len(tx.signatures) != 1:
        raise MalformedTransaction(f"expected one signature, found {len(tx.signatures)}")
    return tx


def blockhash_of(raw: bytes) -> str:
    """The recent blockhash a signed transaction is tied to (its expiry)."""
    return str(decode_signed(raw).message.recent_blockhash)


def lamports_sent(raw: bytes) -> int:
    """Lamports the fee payer moves to *other* accounts through top-level System transfers.

    The payer's balance drop minus this is what the transaction cost it: the fee plus any rent
    of accounts it created (an associated token account for the destination).
    """
    message = decode_signed(raw).message
    keys = [str(k) for k in message.account_keys]
    sent = 0
    for ix in message.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] != SYSTEM_PROGRAM or len(data) != 12:
            continue
        if int.from_bytes(data[:4], "little") != _SYSTEM_TRANSFER or len(ix.accounts) < 2:
            continue
        source, dest = ix.accounts[0], ix.accounts[1]
        if source == 0 and dest != 0:
            sent += int.from_bytes(data[4:12], "little")
    return sent


def instruction_program(raw: bytes, index: int) -> str | None:
    """Program id of the top-level instruction `index` of signed bytes (for error classification)."""
    message = decode_signed(raw).message
    if not 0 <= index < len(message.instructions):
        return None
    return str(message.account_keys[message.instructions[index].program_id_index])


def parse_token_account(data: bytes) -> tuple[str, str, int]:
    """(mint, owner, amount) of an SPL token account's data (the first 72 bytes of its layout)."""
    if len(data) < 72:
        raise ValueError(f"token account data is {len(data)} bytes, expected {TOKEN_ACCOUNT_SIZE}")
    return b58encode(data[:32]), b58encode(data[32:64]), int.from_bytes(data[64:72], "little")


def signature_bytes(tx_hash: str) -> bytes:
    """The 64 bytes of a base58 transaction signature; MalformedTransaction otherwise."""
    try:
        raw = b58decode(tx_hash) if isinstance(tx_hash, str) and 0 < len(tx_hash) <= 90 else b""
    except ValueError:
        raw = b""
    if len(raw) != 64:
        raise MalformedTransaction(f"not a Solana transaction signature: {tx_hash!r}"[:200])
    return raw
