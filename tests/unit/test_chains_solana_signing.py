"""Solana transactions offline: what gets built, what the signer signs, and which signatures attach.

No node: the blockhash comes from a fixed build context, keys are RFC 8032 / fixed seeds, and
messages are decoded back with solders to check every instruction.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from chains import get_adapter, solana_tx
from chains.base import Curve, FeeQuote, TransferIntent
from chains.errors import ChainError, InvalidSignature, MalformedTransaction
from chains.registry import load_registry
from chains.solana import SolanaAdapter

SPEC = load_registry("devnet").chain("solana")
SOL, USDC = SPEC.native, SPEC.token("USDC")
SENDER = Keypair.from_seed(bytes(range(32)))
RECEIVER = Keypair.from_seed(bytes(range(1, 33)))
A, B = str(SENDER.pubkey()), str(RECEIVER.pubkey())
CONTEXT = {"blockhash": "4QjEBrJnATvydaCoPb7j4cneA5vSJNFsAYHQwRAjAjmQ", "last_valid_block_height": 1150}
RENT = 2_039_280
SOL_FEE = FeeQuote(5000, {"lamports_per_signature": 5000, "signatures": 1, "create_ata": False, "ata_rent": 0})
ATA_FEE = FeeQuote(5000 + RENT, {"lamports_per_signature": 5000, "signatures": 1, "create_ata": True, "ata_rent": RENT})


@pytest.fixture
def adapter() -> SolanaAdapter:
    return SolanaAdapter(SPEC)


def _sign(unsigned_digest: bytes, key: Keypair = SENDER) -> bytes:
    return bytes(key.sign_message(unsigned_digest))


def _message(payload: bytes) -> Message:
    return Message.from_bytes(base64.b64decode(json.loads(payload)["message"]))


# --- the adapter's shape ----------------------------------------------------------------------

def test_the_adapter_describes_the_solana_family() -> None:
    adapter = get_adapter(SPEC)
    assert isinstance(adapter, SolanaAdapter)
    assert (adapter.curve, adapter.key_name, adapter.uses_account_nonce, adapter.uses_utxos) == (
        Curve.ED25519, "solana", False, False)
    assert adapter.list_utxos(A) == []
    assert adapter.commitment == "finalized"


@pytest.mark.parametrize(
    ("options", "match"),
    [({"commitment": "processed"}, "rolled back"), ({"commitment": "max"}, "commitment"),
     ({"preflight_commitment": "fast"}, "preflight"), ({"lamports_per_signature": -1}, "lamports_per_signature"),
     ({"allow_off_curve_destinations": "yes"}, "true or false"), ({"comitment": "finalized"}, "unknown Solana options")],
)
def test_bad_registry_options_are_configuration_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ChainError, match=match):
        SolanaAdapter(replace(SPEC, options=options))


def test_the_adapter_refuses_another_family() -> None:
    with pytest.raises(ChainError, match="family"):
        SolanaAdapter(load_registry("devnet").chain("ethereum"))


# --- SOL ---------------------------------------------------------------------------------------

def test_a_sol_transfer_is_one_system_transfer_signed_over_the_message_bytes(adapter: SolanaAdapter) -> None:
    # Given a SOL intent and a blockhash context
    unsigned = adapter.build(TransferIntent(A, B, 1_234_567, SOL), SOL_FEE, None, CONTEXT)
    # Then the one digest is the serialized message itself (ed25519 signs the message)
    message = _message(unsigned.payload)
    assert unsigned.digests == (bytes(message),)
    assert [str(k) for k in message.account_keys] == [A, B, solana_tx.SYSTEM_PROGRAM]
    assert str(message.recent_blockhash) == CONTEXT["blockhash"]
    assert message.header.num_required_signatures == 1
    (ix,) = message.instructions
    assert bytes(ix.data) == (2).to_bytes(4, "little") + (1_234_567).to_bytes(8, "little")
    assert json.loads(unsigned.payload)["last_valid_block_height"] == 1150


def test_building_is_deterministic(adapter: SolanaAdapter) -> None:
    intent = TransferIntent(A, B, 10, SOL)
    assert adapter.build(intent, SOL_FEE, None, CONTEXT) == adapter.build(intent, SOL_FEE, None, dict(CONTEXT))


def test_attaching_the_senders_signature_gives_the_wire_transaction(adapter: SolanaAdapter) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, CONTEXT)
    signature = _sign(unsigned.digests[0])
    signed = adapter.attach_signature(unsigned.payload, [signature])
    tx = Transaction.from_bytes(signed.raw)
    assert tx.verify_with_results() == [True]
    assert signed.tx_hash == str(tx.signatures[0]) == solana_tx.b58encode(signature)
    assert solana_tx.blockhash_of(signed.raw) == CONTEXT["blockhash"]
    assert solana_tx.lamports_sent(signed.raw) == 10


def test_a_signature_from_the_local_signers_key_type_attaches() -> None:
    # The signer keeps ed25519 keys as cryptography keys and signs the message bytes directly.
    key = Ed25519PrivateKey.generate()
    sender = str(Keypair.from_seed(key.private_bytes_raw()).pubkey())
    adapter = SolanaAdapter(SPEC)
    unsigned = adapter.build(TransferIntent(sender, B, 10, SOL), SOL_FEE, None, CONTEXT)
    signed = adapter.attach_signature(unsigned.payload, [key.sign(unsigned.digests[0])])
    assert Transaction.from_bytes(signed.raw).verify_with_results() == [True]


@pytest.mark.parametrize(
    ("signatures", "error", "match"),
    [([], InvalidSignature, "one signature"),
     ([bytes(64), bytes(64)], InvalidSignature, "one signature"),
     ([bytes(63)], InvalidSignature, "64 bytes"),
     ([bytes(64)], InvalidSignature, "does not verify")],
)
def test_malformed_signatures_are_refused(adapter: SolanaAdapter, signatures: list[bytes], error: type, match: str) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, CONTEXT)
    with pytest.raises(error, match=match):
        adapter.attach_signature(unsigned.payload, signatures)


def test_a_signature_by_another_key_is_refused(adapter: SolanaAdapter) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, CONTEXT)
    with pytest.raises(InvalidSignature, match=f"sender {A}"):
        adapter.attach_signature(unsigned.payload, [_sign(unsigned.digests[0], RECEIVER)])


def test_a_signature_over_other_bytes_is_refused(adapter: SolanaAdapter) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, CONTEXT)
    other = adapter.build(TransferIntent(A, B, 11, SOL), SOL_FEE, None, CONTEXT)
    with pytest.raises(InvalidSignature):
        adapter.attach_signature(unsigned.payload, [_sign(other.digests[0])])


def test_a_payload_whose_sender_was_swapped_is_refused(adapter: SolanaAdapter) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, CONTEXT)
    forged = json.loads(unsigned.payload)
    forged["from"] = B
    with pytest.raises(MalformedTransaction, match="fee payer"):
        adapter.attach_signature(json.dumps(forged).encode(), [_sign(unsigned.digests[0], RECEIVER)])


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"format":"evm-tx/1"}', b"\xff\x00",
                                     b'{"format":"solana-tx/1","from":"x","message":"!!"}'])
def test_garbage_payloads_are_malformed(adapter: SolanaAdapter, payload: bytes) -> None:
    with pytest.raises(MalformedTransaction):
        adapter.attach_signature(payload, [bytes(64)])


# --- SPL ---------------------------------------------------------------------------------------

def test_a_first_spl_transfer_creates_the_destination_account_then_transfers_checked(adapter: SolanaAdapter) -> None:
    unsigned = adapter.build(TransferIntent(A, B, 5_000_000, USDC), ATA_FEE, None, CONTEXT)
    message = _message(unsigned.payload)
    keys = [str(k) for k in message.account_keys]
    mint = Pubkey.from_string(USDC.contract or "")
    source_ata = str(get_associated_token_address(SENDER.pubkey(), mint))
    dest_ata = str(get_associated_token_address(RECEIVER.pubkey(), mint))
    create, transfer = message.instructions
    # create_idempotent_associated_token_account(payer=sender, owner=receiver, mint)
    assert keys[create.program_id_index] == solana_tx.ASSOCIATED_TOKEN_PROGRAM
    assert bytes(create.data) == b"\x01"
    assert [keys[i] for i in create.accounts][:4] == [A, dest_ata, B, USDC.contract]
    # transfer_checked(source, mint, dest, owner, amount, decimals)
    assert keys[transfer.program_id_index] == solana_tx.TOKEN_PROGRAM
    assert bytes(transfer.data) == bytes([12]) + (5_000_000).to_bytes(8, "little") + bytes([6])
    assert [keys[i] for i in transfer.accounts] == [source_ata, USDC.contract, dest_ata, A]
    assert message.header.num_required_signatures == 1 and keys[0] == A


def test_an_spl_transfer_to_an_existing_account_is_only_the_transfer(adapter: SolanaAdapter) -> None:
    fee = FeeQuote(5000, {**ATA_FEE.params, "create_ata": False, "ata_rent": 0})
    message = _message(adapter.build(TransferIntent(A, B, 1, USDC), fee, None, CONTEXT).payload)
    (only,) = message.instructions
    assert str(message.account_keys[only.program_id_index]) == solana_tx.TOKEN_PROGRAM
    signed = adapter.attach_signature(adapter.build(TransferIntent(A, B, 1, USDC), fee, None, CONTEXT).payload,
                                      [_sign(bytes(message))])
    assert solana_tx.lamports_sent(signed.raw) == 0  # no SOL moves: the payer's drop is all fee


# --- what build refuses --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("token", "fee", "match"),
    [(SOL, FeeQuote(4999, SOL_FEE.params), "more than the reserved"),
     (USDC, FeeQuote(5000, ATA_FEE.params), "more than the reserved"),  # the rent was not reserved
     (SOL, FeeQuote(5000, {}), "unusable"),
     (SOL, FeeQuote(5000, {**SOL_FEE.params, "signatures": 2}), "unusable"),
     (SOL, FeeQuote(5000, {**SOL_FEE.params, "create_ata": "yes"}), "unusable"),
     (SOL, FeeQuote(5000 + RENT, {**ATA_FEE.params}), "unusable")],  # create_ata on a SOL transfer
)
def test_fee_parameters_that_could_overspend_or_do_not_fit_are_refused(
    adapter: SolanaAdapter, token: object, fee: FeeQuote, match: str
) -> None:
    with pytest.raises(MalformedTransaction, match=match):
        adapter.build(TransferIntent(A, B, 10, token), fee, None, CONTEXT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "context",
    [None, {}, {"blockhash": "4QjEBrJnATvydaCoPb7j4cneA5vSJNFsAYHQwRAjAjmQ"},
     {"blockhash": "nope0", "last_valid_block_height": 1}, {"blockhash": "1111", "last_valid_block_height": 1},
     {"blockhash": "4QjEBrJnATvydaCoPb7j4cneA5vSJNFsAYHQwRAjAjmQ", "last_valid_block_height": "1"}],
)
def test_a_missing_or_bad_blockhash_context_is_refused(adapter: SolanaAdapter, context: object) -> None:
    with pytest.raises(MalformedTransaction):
        adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, None, context)  # type: ignore[arg-type]


def test_a_nonce_a_bad_amount_or_a_foreign_token_is_refused(adapter: SolanaAdapter) -> None:
    with pytest.raises(MalformedTransaction, match="nonce"):
        adapter.build(TransferIntent(A, B, 10, SOL), SOL_FEE, 7, CONTEXT)
    for amount in (-1, 2**64, 1.5, True):
        with pytest.raises(MalformedTransaction, match="amount"):
            adapter.build(TransferIntent(A, B, amount, SOL), SOL_FEE, None, CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(MalformedTransaction, match="registry"):
        adapter.build(TransferIntent(A, B, 10, replace(USDC, decimals=9)), ATA_FEE, None, CONTEXT)
    with pytest.raises(ChainError):
        adapter.next_nonce(A)


def test_signature_hashes_are_checked() -> None:
    assert len(solana_tx.signature_bytes(solana_tx.b58encode(bytes(range(64))))) == 64
    for bad in ("", "0x00", "1" * 200, solana_tx.b58encode(bytes(32)), 5):
        with pytest.raises(MalformedTransaction):
            solana_tx.signature_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(MalformedTransaction):
        solana_tx.decode_signed(b"garbage")
