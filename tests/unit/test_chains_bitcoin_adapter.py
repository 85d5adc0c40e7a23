"""BitcoinAdapter without a node: input selection, fee quotes, build checks, and how the node's
answers (errors included) map to results, against a scripted fake of bitcoind's JSON-RPC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, Utxo
from chains.bitcoin import BitcoinAdapter, NotEnoughFunds, select_inputs
from chains.bitcoin_address import dust_limit, p2pkh_script, p2wpkh_script
from chains.bitcoin_rpc import BitcoinRpcClient, NodeRpcError, btc_to_sat, split_credentials
from chains.errors import ChainError, ChainMismatch, ChainRpcError, MalformedTransaction, TransactionRejected
from chains.registry import ChainSpec, load_registry

SECRET = bytes.fromhex("33" * 32)
PUBLIC = keys.PrivateKey(SECRET).public_key.to_bytes()
DEST_P2WPKH = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
TXID = "ab" * 32


class FakeNode:
    """Answers JSON-RPC calls from a table of handlers; records every call."""

    endpoint = "http://fake:1"

    def __init__(self, **handlers: Callable[..., Any] | Any) -> None:
        self.handlers: dict[str, Any] = {"getblockchaininfo": {"chain": "regtest"},
                                         "estimatesmartfee": {"feerate": Decimal("0.00003"), "blocks": 2}}
        self.handlers.update(handlers)
        self.calls: list[tuple[str, list[Any]]] = []

    def call(self, method: str, params: list[Any] | None = None, timeout: float | None = None) -> Any:
        self.calls.append((method, list(params or [])))
        handler = self.handlers.get(method)
        if handler is None:
            raise NodeRpcError(method, -32601, "Method not found")
        return handler(*(params or [])) if callable(handler) else handler


def node_error(code: int, message: str) -> Callable[..., Any]:
    def fail(*_: Any) -> Any:
        raise NodeRpcError("call", code, message)
    return fail


def spec_with(**options: Any) -> ChainSpec:
    spec = load_registry("devnet").chain("bitcoin")
    return replace(spec, rpc_urls=("http://user:secret@127.0.0.1:9",), options={**spec.options, **options})


def adapter_with(node: FakeNode, **options: Any) -> BitcoinAdapter:
    adapter = BitcoinAdapter(spec_with(**options))
    adapter._rpc = node  # type: ignore[assignment]
    return adapter


@pytest.fixture
def adapter() -> BitcoinAdapter:
    return adapter_with(FakeNode())


def sender(adapter: BitcoinAdapter) -> str:
    return adapter.address_from_public_key(PUBLIC)


def utxo(value: int, n: int = 0, script: str = "") -> Utxo:
    return Utxo(txid=f"{n + 1:064x}", vout=n, value=value, script_pubkey=script, confirmations=3)


def intent(adapter: BitcoinAdapter, amount: int, to: str = DEST_P2WPKH) -> TransferIntent:
    return TransferIntent(sender(adapter), to, amount, adapter.spec.native)


# --- selection ------------------------------------------------------------------------------------

DEST = p2wpkh_script(bytes(20))
CHANGE = p2wpkh_script(b"\x01" * 20)


class TestSelection:
    def test_largest_first_until_amount_and_fee_are_covered(self) -> None:
        chosen = select_inputs([utxo(10_000, 0), utxo(80_000, 1), utxo(30_000, 2)], 100_000, DEST, CHANGE, 2)
        assert [u.value for u in chosen.inputs] == [80_000, 30_000]
        assert chosen.vsize == btx.estimate_vsize(2, [DEST, CHANGE]) and chosen.fee == chosen.vsize * 2
        assert sum(u.value for u in chosen.inputs) == 100_000 + chosen.fee + chosen.change

    def test_change_below_dust_goes_to_the_fee(self) -> None:
        fee_alone = btx.estimate_vsize(1, [DEST]) * 2
        chosen = select_inputs([utxo(100_000 + fee_alone + 200)], 100_000, DEST, CHANGE, 2)
        assert chosen.change == 0 and chosen.fee == fee_alone + 200 and chosen.vsize == btx.estimate_vsize(1, [DEST])

    def test_change_at_the_dust_limit_is_kept(self) -> None:
        fee = btx.estimate_vsize(1, [DEST, CHANGE]) * 2
        chosen = select_inputs([utxo(100_000 + fee + dust_limit(CHANGE))], 100_000, DEST, CHANGE, 2)
        assert chosen.change == dust_limit(CHANGE) == 294

    def test_exact_amount_without_change(self) -> None:
        fee = btx.estimate_vsize(1, [DEST]) * 5
        chosen = select_inputs([utxo(50_000 + fee)], 50_000, DEST, CHANGE, 5)
        assert (chosen.fee, chosen.change) == (fee, 0)

    def test_not_enough(self) -> None:
        with pytest.raises(NotEnoughFunds) as short:
            select_inputs([utxo(1_000, 0), utxo(2_000, 1)], 3_000, DEST, CHANGE, 1)
        assert short.value.available == 3_000 and short.value.needed > 3_000
        with pytest.raises(NotEnoughFunds):
            select_inputs([], 1, DEST, CHANGE, 1)

    def test_duplicates_count_once(self) -> None:
        with pytest.raises(NotEnoughFunds):
            select_inputs([utxo(60_000), utxo(60_000)], 100_000, DEST, CHANGE, 1)


# --- quotes -----------------------------------------------------------------------------------------


class TestQuote:
    def test_quote_uses_the_estimate_and_records_its_parameters(self, adapter: BitcoinAdapter) -> None:
        quote = adapter.quote_fee(intent(adapter, 100_000), [utxo(300_000)])
        assert quote.params["fee_rate"] == 3  # 0.00003 BTC/kvB
        assert quote.max_fee == quote.params["vsize"] * 3
        assert quote.params["change"] == 300_000 - 100_000 - quote.max_fee
        assert quote.inputs == (utxo(300_000),)

    @pytest.mark.parametrize(("answer", "floor", "expected"), [
        ({"errors": ["Insufficient data or no feerate found"], "blocks": 0}, 1, 1),  # fresh regtest
        ({"feerate": Decimal("0.00001234"), "blocks": 2}, 1, 2),  # 1.234 sat/vB, rounded up
        ({"feerate": Decimal("0.00001"), "blocks": 2}, 7, 7),  # the floor wins
        ({"feerate": Decimal("0.5"), "blocks": 2}, 1, 500),  # capped
    ])
    def test_fee_rate(self, answer: dict[str, Any], floor: int, expected: int) -> None:
        assert adapter_with(FakeNode(estimatesmartfee=answer), fee_floor_sat_vb=floor).fee_rate() == expected

    def test_a_full_mempool_raises_the_rate_to_its_minimum(self) -> None:
        node = FakeNode(getmempoolinfo={"mempoolminfee": Decimal("0.00010001"), "minrelaytxfee": Decimal("0.00001")})
        assert adapter_with(node).fee_rate() == 11

    def test_the_target_comes_from_the_registry(self) -> None:
        node = FakeNode()
        adapter_with(node, fee_target_blocks=9).fee_rate()
        assert ("estimatesmartfee", [9]) in node.calls

    def test_insufficient_funds(self, adapter: BitcoinAdapter) -> None:
        with pytest.raises(TransactionRejected) as rejected:
            adapter.quote_fee(intent(adapter, 100_000), [utxo(60_000, 0), utxo(40_000, 1)])
        assert rejected.value.reason == "insufficient_funds" and "100000 sat spendable in 2" in rejected.value.detail

    def test_outputs_of_other_scripts_are_not_spent(self, adapter: BitcoinAdapter) -> None:
        foreign = utxo(1_000_000, 0, script=p2pkh_script(bytes(20)).hex())
        own = utxo(200_000, 1, script=p2wpkh_script(_pkh(adapter)).hex())
        quote = adapter.quote_fee(intent(adapter, 100_000), [foreign, own])
        assert quote.inputs == (own,)

    def test_dust_amounts_are_refused(self, adapter: BitcoinAdapter) -> None:
        with pytest.raises(TransactionRejected, match="dust limit of a p2pkh output"):
            adapter.quote_fee(intent(adapter, 545, "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"), [utxo(100_000)])
        assert adapter.quote_fee(intent(adapter, 546, "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"), [utxo(100_000)])

    @pytest.mark.parametrize("amount", [0, -1, 1.5, True])
    def test_bad_amounts(self, adapter: BitcoinAdapter, amount: Any) -> None:
        with pytest.raises(MalformedTransaction):
            adapter.quote_fee(intent(adapter, amount), [utxo(100_000)])

    def test_a_non_p2wpkh_source_is_malformed(self, adapter: BitcoinAdapter) -> None:
        bad = TransferIntent("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", DEST_P2WPKH, 10_000, adapter.spec.native)
        with pytest.raises(MalformedTransaction, match="P2WPKH"):
            adapter.quote_fee(bad, [utxo(100_000)])

    def test_options_are_validated(self) -> None:
        with pytest.raises(ChainError, match="fee_floor_sat_vb"):
            BitcoinAdapter(spec_with(fee_floor_sat_vb=0))
        with pytest.raises(ChainError, match="utxo_source"):
            BitcoinAdapter(spec_with(utxo_source="electrum"))
        with pytest.raises(ChainError):
            BitcoinAdapter(load_registry("devnet").chain("ethereum"))

    def test_no_nonce_and_no_build_context(self, adapter: BitcoinAdapter) -> None:
        assert (adapter.uses_utxos, adapter.uses_account_nonce, adapter.key_name) == (True, False, "bitcoin")
        assert adapter.build_context(intent(adapter, 1_000)) == {}
        with pytest.raises(ChainError):
            adapter.next_nonce(sender(adapter))


def _pkh(adapter: BitcoinAdapter) -> bytes:
    from chains.bitcoin_address import p2wpkh_program

    return p2wpkh_program(sender(adapter), "regtest")


# --- build ---------------------------------------------------------------------------------------------


class TestBuild:
    def test_build_pays_destination_then_change_and_fee_is_max_fee(self, adapter: BitcoinAdapter) -> None:
        quote = adapter.quote_fee(intent(adapter, 100_000), [utxo(300_000)])
        unsigned = adapter.build(intent(adapter, 100_000), quote, None, {})
        signed = adapter.attach_signature(unsigned.payload, [keys.PrivateKey(SECRET).sign_msg_hash(d).to_bytes()
                                                             for d in unsigned.digests])
        tx = btx.parse_tx(signed.raw)
        assert [o.value for o in tx.outputs] == [100_000, quote.params["change"]]
        assert tx.outputs[1].script_pubkey == p2wpkh_script(_pkh(adapter))
        assert btx.decode_payload(unsigned.payload).fee == quote.max_fee
        assert tx.vsize <= quote.params["vsize"]

    def test_a_quote_that_would_spend_more_than_reserved_is_refused(self, adapter: BitcoinAdapter) -> None:
        quote = adapter.quote_fee(intent(adapter, 100_000), [utxo(300_000)])
        cheaper = FeeQuote(max_fee=quote.max_fee - 1, params=quote.params, inputs=quote.inputs)
        with pytest.raises(MalformedTransaction, match="max_fee"):
            adapter.build(intent(adapter, 100_000), cheaper, None, {})

    def test_foreign_inputs_and_missing_change_are_refused(self, adapter: BitcoinAdapter) -> None:
        quote = adapter.quote_fee(intent(adapter, 100_000), [utxo(300_000)])
        foreign = replace(quote, inputs=(replace(quote.inputs[0], script_pubkey=p2pkh_script(bytes(20)).hex()),))
        with pytest.raises(MalformedTransaction, match="not an output of"):
            adapter.build(intent(adapter, 100_000), foreign, None, {})
        with pytest.raises(MalformedTransaction, match="change"):
            adapter.build(intent(adapter, 100_000), replace(quote, params={}), None, {})
        with pytest.raises(MalformedTransaction, match="no inputs"):
            adapter.build(intent(adapter, 100_000), replace(quote, inputs=()), None, {})

    def test_a_payload_for_another_network_is_refused(self, adapter: BitcoinAdapter) -> None:
        mainnet = BitcoinAdapter(replace(load_registry("mainnet").chain("bitcoin")))
        mainnet._rpc = FakeNode(getblockchaininfo={"chain": "main"})  # type: ignore[assignment]
        main_sender = mainnet.address_from_public_key(PUBLIC)
        unsigned = btx.build_unsigned("mainnet", main_sender, [btx.Spend(TXID, 0, 10_000)],
                                      [btx.TxOut(9_000, p2wpkh_script(bytes(20)))])
        with pytest.raises(MalformedTransaction, match="mainnet"):
            adapter.attach_signature(unsigned.payload, [])


# --- broadcast, status, balances ------------------------------------------------------------------------

SIGNED = SignedTransaction(raw=bytes.fromhex("00"), tx_hash=TXID)


class TestBroadcast:
    def test_success_returns_the_txid(self) -> None:
        assert adapter_with(FakeNode(sendrawtransaction=TXID)).broadcast(SIGNED) == TXID

    @pytest.mark.parametrize(("code", "message"), [
        (-27, "Transaction outputs already in utxo set"),
        (-27, "transaction already in block chain"),
        (-26, "txn-already-in-mempool"),
        (-26, "txn-already-known"),
        (-26, "txn-same-nonwitness-data-in-mempool"),
    ])
    def test_the_node_already_having_it_is_success(self, code: int, message: str) -> None:
        assert adapter_with(FakeNode(sendrawtransaction=node_error(code, message))).broadcast(SIGNED) == TXID

    def test_missing_inputs_of_our_own_mined_transaction_is_success(self) -> None:
        node = FakeNode(sendrawtransaction=node_error(-25, "bad-txns-inputs-missingorspent"), getrawtransaction="00")
        assert adapter_with(node).broadcast(SIGNED) == TXID

    @pytest.mark.parametrize(("code", "message"), [
        (-25, "bad-txns-inputs-missingorspent"), (-25, "Missing inputs"), (-26, "txn-mempool-conflict"),
        (-26, "dust"),
        (-26, "mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation)"),
        (-22, "TX decode failed"), (-25, "Fee exceeds maximum configured by user (maxfeerate)"),
    ])
    def test_refusals_are_rejected_by_node(self, code: int, message: str) -> None:
        node = FakeNode(sendrawtransaction=node_error(code, message),
                        getrawtransaction=node_error(-5, "No such mempool or blockchain transaction."))
        with pytest.raises(TransactionRejected) as rejected:
            adapter_with(node).broadcast(SIGNED)
        assert rejected.value.reason == "rejected_by_node"

    def test_missing_inputs_on_a_node_without_txindex_is_not_proof_of_failure(self) -> None:
        # Our own transaction may be mined already; without -txindex the node cannot say so.
        node = FakeNode(sendrawtransaction=node_error(-25, "bad-txns-inputs-missingorspent"),
                        getrawtransaction=node_error(-5, "No such mempool transaction. Use -txindex or provide a block hash"))
        with pytest.raises(ChainRpcError, match="txindex") as caught:
            adapter_with(node).broadcast(SIGNED)
        assert not isinstance(caught.value, TransactionRejected)

    @pytest.mark.parametrize("message", ["min relay fee not met, 100 < 141", "mempool min fee not met"])
    def test_a_fee_below_the_mempool_minimum_asks_for_a_bump_not_a_wait_or_a_failure(self, message: str) -> None:
        with pytest.raises(TransactionRejected) as rejected:
            adapter_with(FakeNode(sendrawtransaction=node_error(-26, message))).broadcast(SIGNED)
        assert rejected.value.reason == "replacement_underpriced"

    @pytest.mark.parametrize(("code", "message"), [(-28, "Loading block index..."), (-1, "something odd"),
                                                   (-32601, "Method not found"),
                                                   (-26, "too-long-mempool-chain, too many unconfirmed ancestors")])
    def test_node_trouble_is_transient(self, code: int, message: str) -> None:
        with pytest.raises(ChainRpcError) as caught:
            adapter_with(FakeNode(sendrawtransaction=node_error(code, message))).broadcast(SIGNED)
        assert caught.value.transient and not isinstance(caught.value, TransactionRejected)


class TestStatus:
    def test_unknown_is_not_found(self) -> None:
        node = FakeNode(getrawtransaction=node_error(-5, "No such mempool or blockchain transaction."))
        assert adapter_with(node).get_status(SIGNED).state is TxState.NOT_FOUND

    def test_a_node_without_txindex_is_an_rpc_error_not_a_lost_transaction(self) -> None:
        node = FakeNode(getrawtransaction=node_error(-5, "No such mempool transaction. Use -txindex or provide a block hash"))
        with pytest.raises(ChainRpcError, match="txindex"):
            adapter_with(node).get_status(SIGNED)

    def test_in_the_mempool_is_pending(self) -> None:
        assert adapter_with(FakeNode(getrawtransaction={"txid": TXID})).get_status(SIGNED).state is TxState.PENDING

    def test_included_with_fee_from_the_node(self) -> None:
        node = FakeNode(getrawtransaction={"txid": TXID, "blockhash": "cd" * 32, "fee": Decimal("0.00000418")},
                        getblockheader={"confirmations": 2, "height": 104})
        status = adapter_with(node).get_status(SIGNED)
        assert (status.state, status.block_number, status.block_hash, status.confirmations, status.fee_paid) == \
            (TxState.INCLUDED, 104, "cd" * 32, 2, 418)

    def test_fee_from_the_spent_outputs_on_older_nodes(self) -> None:
        def raw(txid: str, verbosity: int) -> dict[str, Any]:
            if txid == TXID:
                return {"txid": TXID, "blockhash": "cd" * 32, "vin": [{"txid": "ef" * 32, "vout": 1}],
                        "vout": [{"value": Decimal("0.00009000")}]}
            return {"vout": [{"value": Decimal("1")}, {"value": Decimal("0.0001")}]}

        node = FakeNode(getrawtransaction=raw, getblockheader={"confirmations": 1, "height": 7})
        assert adapter_with(node).get_status(SIGNED).fee_paid == 1_000

    @pytest.mark.parametrize(("in_mempool", "state"), [(True, TxState.PENDING), (False, TxState.NOT_FOUND)])
    def test_a_block_off_the_main_chain_does_not_count(self, in_mempool: bool, state: TxState) -> None:
        node = FakeNode(getrawtransaction={"txid": TXID, "blockhash": "cd" * 32, "fee": Decimal("0.00000418")},
                        getblockheader={"confirmations": -1, "height": 104},
                        getmempoolentry={} if in_mempool else node_error(-5, "Transaction not in mempool"))
        assert adapter_with(node).get_status(SIGNED).state is state

    def test_a_bad_txid_is_malformed(self, adapter: BitcoinAdapter) -> None:
        with pytest.raises(MalformedTransaction):
            adapter.get_status(SignedTransaction(raw=b"", tx_hash="0x" + TXID))


TIP = "7a" * 32


def _signed_spending(adapter: BitcoinAdapter, *utxos: Utxo) -> SignedTransaction:
    quote = adapter.quote_fee(intent(adapter, 100_000), list(utxos))
    unsigned = adapter.build(intent(adapter, 100_000), quote, None, {})
    return adapter.attach_signature(unsigned.payload, [keys.PrivateKey(SECRET).sign_msg_hash(d).to_bytes()
                                                       for d in unsigned.digests])


def _proof_node(spent: set[tuple[str, int]] = frozenset(), best_block: str = TIP, ibd: bool = False,
                **handlers: Any) -> FakeNode:
    """A node at height 200 (tip TIP) whose gettxout answers from `best_block`, `spent` ones null."""
    def txout(txid: str, vout: int, include_mempool: bool = False) -> dict[str, Any] | None:
        assert include_mempool is True  # a spend in the mempool counts
        if (txid, vout) in spent:
            return None
        return {"bestblock": best_block, "confirmations": 3, "value": Decimal("0.001"), "coinbase": False,
                "scriptPubKey": {"hex": "0014", "type": "witness_v0_keyhash"}}

    info = {"chain": "regtest", "blocks": 200, "headers": 200, "bestblockhash": TIP, "initialblockdownload": ibd}
    return FakeNode(**{"getblockchaininfo": info, "gettxout": txout, **handlers})


class TestProvesUnlandable:
    INPUTS = (utxo(80_000, 0), utxo(60_000, 1))  # both needed for 100_000 + fee

    def _signed(self) -> SignedTransaction:
        return _signed_spending(adapter_with(FakeNode()), *self.INPUTS)

    def test_every_input_unspent_in_chain_and_mempool_is_proof(self) -> None:
        node = _proof_node()
        signed = self._signed()
        assert adapter_with(node).proves_unlandable(signed) is True
        # the tip first, then every input the signed bytes spend
        assert node.calls[-3:] == [("getblockchaininfo", []), ("gettxout", ["00" * 31 + "01", 0, True]),
                                   ("gettxout", ["00" * 31 + "02", 1, True])]

    @pytest.mark.parametrize("spent", [{("00" * 31 + "01", 0)}, {("00" * 31 + "02", 1)}])
    def test_an_input_spent_is_not_proof(self, spent: set[tuple[str, int]]) -> None:
        # spent in a block or in the mempool, perhaps by this very transaction
        assert adapter_with(_proof_node(spent)).proves_unlandable(self._signed()) is False

    def test_a_node_in_initial_block_download_proves_nothing(self) -> None:
        node = _proof_node(ibd=True)
        assert adapter_with(node).proves_unlandable(self._signed()) is False
        assert "gettxout" not in [m for m, _ in node.calls]

    def test_an_answer_from_a_backend_behind_the_tip_is_not_proof(self) -> None:
        behind = "6b" * 32
        node = _proof_node(best_block=behind, getblockheader={"height": 199, "confirmations": 2})
        assert adapter_with(node).proves_unlandable(self._signed()) is False
        node = _proof_node(best_block=behind, getblockheader=node_error(-5, "Block not found"))
        assert adapter_with(node).proves_unlandable(self._signed()) is False
        node = _proof_node(best_block=behind, getblockheader={"height": 201, "confirmations": -1})  # off the main chain
        assert adapter_with(node).proves_unlandable(self._signed()) is False

    def test_an_answer_from_a_node_past_the_tip_counts(self) -> None:
        node = _proof_node(best_block="6b" * 32, getblockheader={"height": 201, "confirmations": 1})
        assert adapter_with(node).proves_unlandable(self._signed()) is True

    def test_node_trouble_is_transient_not_an_answer(self) -> None:
        node = _proof_node(gettxout=node_error(-28, "Loading block index..."))
        with pytest.raises(ChainRpcError):
            adapter_with(node).proves_unlandable(self._signed())

    def test_bytes_that_are_not_the_stored_txid_are_malformed(self) -> None:
        with pytest.raises(MalformedTransaction):
            adapter_with(_proof_node()).proves_unlandable(replace(self._signed(), tx_hash=TXID))
        with pytest.raises(MalformedTransaction):
            adapter_with(_proof_node()).proves_unlandable(SIGNED)


class TestUtxos:
    SCAN = {"success": True, "height": 200, "unspents": [
        {"txid": "01" * 32, "vout": 0, "amount": Decimal("0.5"), "coinbase": False, "height": 200, "scriptPubKey": "0014"},
        {"txid": "02" * 32, "vout": 3, "amount": Decimal("50"), "coinbase": True, "height": 150, "scriptPubKey": "0014"},
        {"txid": "03" * 32, "vout": 1, "amount": Decimal("50"), "coinbase": True, "height": 101, "scriptPubKey": "0014"},
    ]}

    def test_scan_lists_confirmed_outputs_and_mature_coinbase_only(self) -> None:
        node = FakeNode(scantxoutset=self.SCAN)
        adapter = adapter_with(node)
        utxos = adapter.list_utxos(sender(adapter))
        assert [(u.txid[:2], u.value, u.confirmations) for u in utxos] == [("01", 50_000_000, 1), ("03", 5_000_000_000, 100)]
        assert node.calls[-1] == ("scantxoutset", ["start", [f"addr({sender(adapter)})"]])
        assert adapter.balance_of(sender(adapter), adapter.spec.native) == 5_050_000_000

    def test_wallet_source_with_unconfirmed_change(self) -> None:
        listed = [{"txid": "01" * 32, "vout": 0, "amount": Decimal("0.001"), "confirmations": 0, "scriptPubKey": "0014"},
                  {"txid": "02" * 32, "vout": 1, "amount": Decimal("0.002"), "confirmations": 4, "scriptPubKey": "0014"}]
        node = FakeNode(listunspent=listed)
        adapter = adapter_with(node, utxo_source="wallet", min_confirmations=0)
        assert [u.value for u in adapter.list_utxos(sender(adapter))] == [100_000, 200_000]
        assert node.calls[-1] == ("listunspent", [0, 9_999_999, [sender(adapter)], False])
        confirmed_only = adapter_with(FakeNode(listunspent=listed), utxo_source="wallet")
        assert [u.value for u in confirmed_only.list_utxos(sender(adapter))] == [200_000]

    def test_an_incomplete_scan_is_transient(self) -> None:
        with pytest.raises(ChainRpcError):
            adapter_with(FakeNode(scantxoutset={"success": False})).list_utxos(DEST_P2WPKH)


class TestNodeIdentity:
    def test_a_node_on_another_network_is_refused_before_anything_else(self) -> None:
        node = FakeNode(getblockchaininfo={"chain": "main"}, scantxoutset=TestUtxos.SCAN)
        with pytest.raises(ChainMismatch, match="regtest"):
            adapter_with(node).list_utxos(DEST_P2WPKH)
        assert [method for method, _ in node.calls] == ["getblockchaininfo"]


class TestRpcClient:
    def test_credentials_come_out_of_the_url(self) -> None:
        assert split_credentials("http://u%40x:p%3Aw@127.0.0.1:8332/wallet/w") == \
            ("http://127.0.0.1:8332/wallet/w", ("u@x", "p:w"))
        assert split_credentials("http://127.0.0.1:8332") == ("http://127.0.0.1:8332", None)

    def test_transport_errors_never_show_credentials_or_path(self) -> None:
        from devnet.ports import free_port

        client = BitcoinRpcClient(f"http://alice:hunter2@127.0.0.1:{free_port()}/wallet/secretwallet", timeout=1)
        with pytest.raises(ChainRpcError) as caught:
            client.call("getblockcount")
        text = f"{caught.value} {caught.value.__cause__} {caught.value.__context__}"
        assert "hunter2" not in text and "alice" not in text and "secretwallet" not in text

    @pytest.mark.parametrize(("value", "sats"), [(Decimal("0.00000001"), 1), (Decimal("21000000"), 2_100_000_000_000_000),
                                                 ("0.1", 10_000_000), (1, 100_000_000)])
    def test_btc_to_sat_is_exact(self, value: Any, sats: int) -> None:
        assert btc_to_sat(value) == sats

    @pytest.mark.parametrize("value", [Decimal("0.000000001"), 0.1, None, "x", Decimal("-1"), True])
    def test_btc_to_sat_refuses_garbage(self, value: Any) -> None:
        with pytest.raises(ChainRpcError):
            btc_to_sat(value)
