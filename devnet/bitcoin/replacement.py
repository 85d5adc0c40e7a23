"""BIP125 mempool replacement as bitcoind (v25-v27, opt-in RBF) applies it, with its messages.

A new transaction spending an input that a mempool transaction already spends (a "direct
conflict") replaces it, evicting it and all its mempool descendants, only if:

- every direct conflict signals replaceability: an input with nSequence <= 0xfffffffd
  (else "txn-mempool-conflict"; this node runs bitcoind's opt-in policy, not full-RBF);
- rule 6: its fee rate is above each direct conflict's own ("insufficient fee ... new feerate
  <= old feerate"), fee rates compared in sat/kvB truncated, as bitcoind's CFeeRate does;
- rule 5: it evicts at most MAX_REPLACEMENT_CANDIDATES transactions;
- rule 2: it spends no unconfirmed output that the conflicts did not already spend;
- it spends no output of a transaction it evicts;
- rule 3: its fee is at least the sum of the evicted fees ("less fees than conflicting txs");
- rule 4: the extra fee pays for its own relay at the incremental relay fee, 1 sat/vB of its
  vsize ("not enough additional fees to relay").

Why here and not in `chainstate`: these are the rules a fee bump is judged by, written once and
readable beside the bitcoind source they follow (src/policy/rbf.cpp, src/validation.cpp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chains.bitcoin_tx import Tx

MAX_BIP125_RBF_SEQUENCE = 0xFFFFFFFD
MAX_REPLACEMENT_CANDIDATES = 100
INCREMENTAL_RELAY_SAT_PER_KVB = 1000  # bitcoind's -incrementalrelayfee default: 1 sat/vB


@dataclass(frozen=True)
class Candidate:
    """A mempool transaction the new one would evict: what the rules need of it."""

    tx: Tx
    fee: int  # sat


class Refused(Exception):
    """The replacement breaks a rule: `reason` and `detail` as bitcoind words them."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}, {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def signals(tx: Tx) -> bool:
    """BIP125 opt-in: any input with nSequence <= 0xfffffffd."""
    return any(i.sequence <= MAX_BIP125_RBF_SEQUENCE for i in tx.inputs)


def check(tx: Tx, fee: int, conflicts: Sequence[Candidate], evicted: Sequence[Candidate],
          in_mempool: set[str]) -> None:
    """Raise Refused unless `tx` (paying `fee`) may replace `conflicts` (its direct conflicts),
    evicting `evicted` (the conflicts and their descendants); `in_mempool` is the mempool's txids."""
    if not all(signals(c.tx) for c in conflicts):
        raise Refused("txn-mempool-conflict")
    new_rate = sat_per_kvb(fee, tx.vsize)
    for old in conflicts:
        old_rate = sat_per_kvb(old.fee, old.tx.vsize)
        if new_rate <= old_rate:
            raise Refused("insufficient fee", f"rejecting replacement {tx.txid}; new feerate {feerate_text(new_rate)} "
                                              f"<= old feerate {feerate_text(old_rate)}")
    _check_scope(tx, conflicts, evicted, in_mempool)
    _check_pays_for_relay(tx, fee, sum(c.fee for c in evicted))


def _check_scope(tx: Tx, conflicts: Sequence[Candidate], evicted: Sequence[Candidate], in_mempool: set[str]) -> None:
    """Rules 5 and 2, and no spending of what it evicts."""
    if len(evicted) > MAX_REPLACEMENT_CANDIDATES:
        raise Refused("too many potential replacements", f"rejecting replacement {tx.txid}; too many potential "
                                                         f"replacements ({len(evicted)} > {MAX_REPLACEMENT_CANDIDATES})")
    parents_of_conflicts = {i.txid for c in conflicts for i in c.tx.inputs}
    for index, spent in enumerate(tx.inputs):
        if spent.txid not in parents_of_conflicts and spent.txid in in_mempool:
            raise Refused("replacement-adds-unconfirmed", f"replacement {tx.txid} adds unconfirmed input, idx {index}")
    evicted_ids = {c.tx.txid for c in evicted}
    for spent in tx.inputs:
        if spent.txid in evicted_ids:
            raise Refused("bad-txns-spends-conflicting-tx", f"{tx.txid} spends conflicting transaction {spent.txid}")


def _check_pays_for_relay(tx: Tx, fee: int, evicted_fees: int) -> None:
    """Rules 3 and 4."""
    if fee < evicted_fees:
        raise Refused("insufficient fee", f"rejecting replacement {tx.txid}, less fees than conflicting txs; "
                                          f"{money_text(fee)} < {money_text(evicted_fees)}")
    relay = INCREMENTAL_RELAY_SAT_PER_KVB * tx.vsize // 1000
    if fee - evicted_fees < relay:
        raise Refused("insufficient fee", f"rejecting replacement {tx.txid}, not enough additional fees to relay; "
                                          f"{money_text(fee - evicted_fees)} < {money_text(relay)}")


def sat_per_kvb(fee: int, vsize: int) -> int:
    """bitcoind's CFeeRate(fee, size): sat per 1000 vB, truncated."""
    return fee * 1000 // vsize if vsize else 0


def feerate_text(sat_kvb: int) -> str:
    """CFeeRate::ToString: "0.00002000 BTC/kvB"."""
    return f"{sat_kvb // 100_000_000}.{sat_kvb % 100_000_000:08d} BTC/kvB"


def money_text(sats: int) -> str:
    """bitcoind's FormatMoney: BTC with trailing zeros trimmed to at least two decimals."""
    text = f"{'-' if sats < 0 else ''}{abs(sats) // 100_000_000}.{abs(sats) % 100_000_000:08d}"
    trimmed = text.rstrip("0")
    decimals = len(trimmed) - trimmed.index(".") - 1
    return trimmed + "0" * max(0, 2 - decimals)
