"""The fee rate of a Bitcoin fee bump (a BIP125 replacement spending the same inputs), offline.

Integers only: fees in satoshi, rates in sat/vB, sizes in vB (`bitcoin_tx.estimate_vsize`, an
upper bound: every signature counted at its largest). The replacement has the same inputs and the
same outputs as the transaction it replaces, only a smaller change, so both have the same
estimated vsize; the rate is chosen so that bitcoind accepts the replacement:

- rule 4: its fee exceeds the old fee by at least the incremental relay fee times its vsize;
  at the same vsize that is a rate of at least ceil(old fee / vsize) + incremental;
- rule 6: its fee rate exceeds the old one as the node measures both, with their real sizes. The
  real sizes are unknown here (a DER signature is 71 or 72 bytes, rarely less): the old one is
  taken at its smallest plausible vsize (4 witness bytes less per input, 1 vB), the new one at
  the estimate. This only bites near the cap, where a bump of +1 sat/vB at a high rate could
  otherwise lose to a shorter signature in the old transaction.

Then the policy: at least `percent` over the old rate (rounded up) and at least the market rate
now, at most the cap. When the cap leaves no rate the node would accept, the bump is refused
("at_fee_cap"), never the transfer.
"""

from __future__ import annotations

from chains.errors import BumpRefused


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def lowest_acceptable_rate(old_fee: int, vsize: int, n_inputs: int, incremental: int) -> int:
    """sat/vB: the smallest rate a replacement of `vsize` vB can pay and pass rules 4 and 6."""
    rule4 = ceil_div(old_fee + incremental * vsize, vsize)
    rule6 = old_fee // max(vsize - n_inputs, 1) + 1
    return max(rule4, rule6)


def replacement_rate(old_fee: int, vsize: int, n_inputs: int, *, percent: int, market: int, incremental: int,
                     cap: int) -> int:
    """sat/vB of the replacement: max(old rate raised by `percent`, `market`, the lowest acceptable
    rate), at most `cap`; BumpRefused("at_fee_cap") when `cap` is below the lowest acceptable."""
    lowest = lowest_acceptable_rate(old_fee, vsize, n_inputs, incremental)
    raised = ceil_div(old_fee * (100 + percent), vsize * 100)
    rate = min(max(raised, market, lowest), cap)
    if rate < lowest:
        raise BumpRefused("at_fee_cap", f"the transaction pays {old_fee} sat for {vsize} vB; a replacement must pay at "
                                        f"least {lowest} sat/vB, above the cap of {cap} sat/vB")
    return rate


def pays_estimate(old_fee: int, vsize: int, market: int) -> bool:
    """Whether a transaction paying `old_fee` for `vsize` vB already pays `market` sat/vB (no bump)."""
    return old_fee >= market * vsize
