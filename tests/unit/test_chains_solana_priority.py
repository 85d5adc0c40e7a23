"""Solana priority fees in the adapter: the math (`chains.solana_fees`), the quote's reserve, the
build's price (the market's, up to the reserved cap), and the one-request build context.

The node is the devnet cluster in-process, behind its own JSON-RPC handler (through JSON, like the
wire, batches included), so every answer has the real node's shape and LiteSVM charges the fees
for real. The integration tests (tests/integration/test_solana_priority_fees.py) do the same over
HTTP against the node process."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.message import Message

from chains import solana_fees, solana_tx
from chains.base import FeeQuote, TransferIntent
from chains.errors import ChainError, ChainRpcError, MalformedTransaction
from chains.registry import load_registry
from chains.solana import SolanaAdapter
from chains.solana_rpc import NodeRpcError
from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.server import handle

SPEC = load_registry("devnet").chain("solana")
SOL = 10**9
USDC = SPEC.token("USDC")
CAP = 1_000_000


class InProcessRpc:
    """The adapter's SolanaRpc, answered by the devnet's handler; counts HTTP requests it stands for."""

    endpoint = "devnet://in-process"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.requests: list[list[str]] = []  # the methods of each request
        self.fee_accounts: list[list[str]] = []  # the accounts getRecentPrioritizationFees was asked for

    def _answer(self, method: str, params: list[Any]) -> Any:
        request = json.loads(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        answer = json.loads(json.dumps(handle(self.cluster, request)))
        if answer.get("error") is not None:
            return NodeRpcError.from_error(method, answer["error"])
        return answer["result"]

    def call(self, method: str, params: list[Any]) -> Any:
        self.requests.append([method])
        answer = self._answer(method, params)
        if isinstance(answer, NodeRpcError):
            raise answer
        return answer

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        self.requests.append([method for method, _ in calls])
        self.fee_accounts += [params[0] for method, params in calls if method == "getRecentPrioritizationFees"]
        return [self._answer(method, params) for method, params in calls]


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=10, confirm_depth=1, finalize_depth=3),
                   [(USDC.contract or "", 6)])


def _adapter(cluster: Cluster, **options: Any) -> SolanaAdapter:
    adapter = SolanaAdapter(replace(SPEC, options={**SPEC.options, "max_compute_unit_price_micro_lamports": CAP,
                                                   **options}))
    adapter._rpc = InProcessRpc(cluster)  # type: ignore[assignment]
    return adapter


def _funded(cluster: Cluster, lamports: int = 10 * SOL) -> Keypair:
    key = Keypair()
    cluster.airdrop(key.pubkey(), lamports)
    cluster.advance(3)  # finalized: the adapter reads at "finalized"
    return key


def _sending_sol(cluster: Cluster, lamports: int = 10 * SOL,
                 **options: Any) -> tuple[Keypair, SolanaAdapter, TransferIntent]:
    """A funded sender, the adapter over the cluster (`options` as `_adapter`'s), and a transfer of
    1 SOL from the sender to a new address."""
    sender = _funded(cluster, lamports)
    adapter = _adapter(cluster, **options)
    return sender, adapter, TransferIntent(str(sender.pubkey()), str(Keypair().pubkey()), SOL, SPEC.native)


def _budget(message: Message) -> dict[int, int]:
    """Tag -> value of the message's ComputeBudget instructions, decoded by hand (2: limit, 3: price)."""
    keys = [str(k) for k in message.account_keys]
    return {bytes(ix.data)[0]: int.from_bytes(bytes(ix.data)[1:], "little") for ix in message.instructions
            if keys[ix.program_id_index] == "ComputeBudget111111111111111111111111111111"}


def _built(adapter: SolanaAdapter, intent: TransferIntent, quote: FeeQuote, context: dict[str, Any]) -> Message:
    return solana_tx.decode_payload(adapter.build(intent, quote, None, context).payload)[2]


# --- the math ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fees", "percentile", "price"), [
    ([], 75, 0), ([0, 0, 0], 75, 0),  # nothing paid recently: no priority fee
    ([0, 40, 0, 10, 30, 20], 75, 30), ([0, 40, 0, 10, 30, 20], 100, 40), ([0, 40, 0, 10, 30, 20], 1, 10),
    ([7], 75, 7), ([5, 1, 3, 2, 4], 50, 3),
])
def test_the_price_is_a_nearest_rank_percentile_of_the_non_zero_fees(fees: list[int], percentile: int, price: int) -> None:
    assert solana_fees.percentile_price(fees, percentile) == price


@pytest.mark.parametrize(("limit", "price", "lamports"), [
    (1_000, 1_000_000, 1_000), (1_000, 1_500_001, 1_501), (1_000, 1, 1), (1_000, 0, 0), (60_000, 50_000, 3_000),
])
def test_the_priority_fee_is_rounded_up_as_the_runtime_does(limit: int, price: int, lamports: int) -> None:
    assert solana_fees.priority_fee(limit, price) == lamports


def test_the_reserve_adds_signatures_priority_and_rent() -> None:
    assert solana_fees.max_spend(5000, 1_000, CAP, 0) == 6_000
    assert solana_fees.max_spend(5000, None, CAP, 7) == 5_007  # a quote from before priority fees
    assert solana_fees.compute_unit_limit(spl=False, create_ata=False) == 1_000
    assert solana_fees.compute_unit_limit(spl=True, create_ata=True) == 60_000


# --- quote and build -----------------------------------------------------------------------------

def test_a_quote_reserves_the_priority_fee_at_the_cap(cluster: Cluster) -> None:
    _, adapter, intent = _sending_sol(cluster)
    quote = adapter.quote_fee(intent)
    assert quote.max_fee == 5000 + 1_000  # 1,000 compute units at 1,000,000 micro-lamports
    assert quote.params["compute_unit_limit"] == 1_000 and quote.params["max_compute_unit_price"] == CAP
    assert "min_compute_unit_price" not in quote.params


def test_the_build_pays_the_market_price_up_to_the_cap(cluster: Cluster) -> None:
    _, adapter, intent = _sending_sol(cluster)
    quote = adapter.quote_fee(intent)
    cluster.set_prioritization_floor(2_500)
    context = adapter.build_context(intent)
    assert context["compute_unit_price"] == 2_500
    assert _budget(_built(adapter, intent, quote, context)) == {2: 1_000, 3: 2_500}
    over = {**context, "compute_unit_price": 10 * CAP}
    assert _budget(_built(adapter, intent, quote, over)) == {2: 1_000, 3: CAP}  # never more than reserved
    free = {**context, "compute_unit_price": 0}
    assert _budget(_built(adapter, intent, quote, free)) == {2: 1_000}  # no price instruction for 0


def test_the_price_lands_and_is_charged(cluster: Cluster) -> None:
    sender, adapter, intent = _sending_sol(cluster)
    quote = adapter.quote_fee(intent)
    cluster.set_prioritization_floor(300_000)
    unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
    signed = adapter.attach_signature(unsigned.payload, [bytes(sender.sign_message(unsigned.digests[0]))])
    before = cluster.svm.get_balance(sender.pubkey())
    adapter.broadcast(signed)
    assert before - cluster.svm.get_balance(sender.pubkey()) == SOL + 5000 + 300  # 1,000 units x 0.3 lamports
    assert cluster.landed(signed.tx_hash).fee == 5300  # type: ignore[union-attr]


def test_a_quote_stored_before_priority_fees_builds_as_before(cluster: Cluster) -> None:
    _, adapter, intent = _sending_sol(cluster)
    old = FeeQuote(5000, {"lamports_per_signature": 5000, "signatures": 1, "create_ata": False, "ata_rent": 0})
    cluster.set_prioritization_floor(2_500)
    message = _built(adapter, intent, old, adapter.build_context(intent))
    assert _budget(message) == {} and len(message.instructions) == 1  # the transfer alone, 5000 lamports


@pytest.mark.parametrize("params", [
    {"max_compute_unit_price": 2 * CAP},  # its reserve is over max_fee
    {"compute_unit_limit": 5_000},
    {"min_compute_unit_price": CAP + 1},  # a floor above the cap
    {"compute_unit_limit": 0}, {"compute_unit_limit": 1_400_001}, {"max_compute_unit_price": -1},
    {"compute_unit_limit": True},
])
def test_fee_parameters_that_could_spend_more_than_the_reserve_are_refused(cluster: Cluster, params: dict[str, Any]) -> None:
    _, adapter, intent = _sending_sol(cluster)
    quote = adapter.quote_fee(intent)
    context = adapter.build_context(intent)
    with pytest.raises(MalformedTransaction):
        adapter.build(intent, replace(quote, params={**quote.params, **params}), None, context)
    with pytest.raises(MalformedTransaction, match="compute-unit price"):
        adapter.build(intent, quote, None, {**context, "compute_unit_price": "12"})


def test_a_transfer_that_empties_the_account_pays_the_reserved_price(cluster: Cluster) -> None:
    # Paying less than reserved would leave the sender a remainder below the rent-exempt minimum,
    # which the runtime refuses: so the quote pins the price at the cap.
    sender, adapter, intent = _sending_sol(cluster, lamports=SOL + 6000)
    quote = adapter.quote_fee(intent)
    assert quote.max_fee == 6000 and quote.params["min_compute_unit_price"] == CAP
    context = adapter.build_context(intent)
    assert context["compute_unit_price"] == 0  # a quiet market
    unsigned = adapter.build(intent, quote, None, context)
    assert _budget(solana_tx.decode_payload(unsigned.payload)[2]) == {2: 1_000, 3: CAP}
    signed = adapter.attach_signature(unsigned.payload, [bytes(sender.sign_message(unsigned.digests[0]))])
    adapter.broadcast(signed)
    assert cluster.svm.get_balance(sender.pubkey()) in (None, 0)


def test_an_spl_quote_reserves_the_limit_of_its_kind(cluster: Cluster) -> None:
    sender = _funded(cluster)
    cluster.mint_to(sender.pubkey(), USDC.contract or "", 5_000_000)
    cluster.advance(3)
    adapter = _adapter(cluster, max_compute_unit_price_micro_lamports=50_000)
    rent = cluster.svm.minimum_balance_for_rent_exemption(165)
    quote = adapter.quote_fee(TransferIntent(str(sender.pubkey()), str(Keypair().pubkey()), 1_000_000, USDC))
    assert quote.params["create_ata"] is True and quote.params["compute_unit_limit"] == 60_000
    assert quote.max_fee == 5000 + 3_000 + rent  # 60,000 units x 0.05 lamports


# --- the build context ---------------------------------------------------------------------------

def test_the_blockhash_and_the_price_come_in_one_request(cluster: Cluster) -> None:
    sender, receiver = _funded(cluster), Keypair()
    adapter = _adapter(cluster)
    intent = TransferIntent(str(sender.pubkey()), str(receiver.pubkey()), 1_000_000, USDC)
    adapter.build_context(intent)
    rpc: InProcessRpc = adapter._rpc  # type: ignore[assignment]
    assert rpc.requests == [["getLatestBlockhash", "getRecentPrioritizationFees"]]
    # ... asked for the accounts the SPL transfer writes: the fee payer and both token accounts
    mint = USDC.contract or ""
    assert rpc.fee_accounts == [[str(sender.pubkey()), solana_tx.associated_token_address(str(sender.pubkey()), mint),
                                 solana_tx.associated_token_address(str(receiver.pubkey()), mint)]]


def test_with_priority_fees_off_the_context_is_the_blockhash_alone(cluster: Cluster) -> None:
    _, adapter, intent = _sending_sol(cluster, max_compute_unit_price_micro_lamports=0)
    cluster.set_prioritization_floor(2_500)
    context = adapter.build_context(intent)
    assert "compute_unit_price" not in context
    assert adapter._rpc.requests == [["getLatestBlockhash"]]  # type: ignore[attr-defined]
    quote = adapter.quote_fee(intent)
    assert quote.max_fee == 5000 and _budget(_built(adapter, intent, quote, context)) == {2: 1_000}


class _Scripted:
    endpoint = "http://fake:8899"

    def __init__(self, fees: Any) -> None:
        self.fees = fees

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        latest = {"context": {"slot": 9}, "value": {"blockhash": "4QjEBrJnATvydaCoPb7j4cneA5vSJNFsAYHQwRAjAjmQ",
                                                    "lastValidBlockHeight": 159}}
        return [latest, self.fees]


@pytest.mark.parametrize("fees", [None, {"slot": 1}, [{"slot": 1, "prioritizationFee": -3}], [{"slot": 1}], ["x"]])
def test_an_unusable_fee_answer_is_a_transient_rpc_error(fees: Any) -> None:
    adapter = SolanaAdapter(SPEC)
    adapter._rpc = _Scripted(fees)  # type: ignore[assignment]
    with pytest.raises(ChainRpcError):
        adapter.build_context(TransferIntent(str(Keypair().pubkey()), str(Keypair().pubkey()), 1, SPEC.native))


def test_an_error_object_in_the_batch_is_raised() -> None:
    adapter = SolanaAdapter(SPEC)
    adapter._rpc = _Scripted(NodeRpcError("getRecentPrioritizationFees", -32603, "Internal error"))  # type: ignore[assignment]
    with pytest.raises(NodeRpcError):
        adapter.build_context(TransferIntent(str(Keypair().pubkey()), str(Keypair().pubkey()), 1, SPEC.native))


@pytest.mark.parametrize("options", [
    {"max_compute_unit_price_micro_lamports": -1}, {"max_compute_unit_price_micro_lamports": 1.5},
    {"max_compute_unit_price_micro_lamports": True}, {"max_compute_unit_price_micro_lamports": 2**64},
    {"compute_unit_price_percentile": 0}, {"compute_unit_price_percentile": 101}, {"compute_unit_price_percentile": "75"},
])
def test_bad_priority_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ChainError, match=next(iter(options))):
        SolanaAdapter(replace(SPEC, options={**SPEC.options, **options}))


def test_the_registries_set_the_cap() -> None:
    assert SolanaAdapter(SPEC).max_compute_unit_price == 50_000  # devnet: small
    mainnet = load_registry("mainnet").chain("solana")
    assert SolanaAdapter(mainnet).max_compute_unit_price == 1_000_000
    assert SolanaAdapter(replace(SPEC, options={})).max_compute_unit_price == 1_000_000  # the default
