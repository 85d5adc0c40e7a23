"""Solana priority fees: the compute-unit limit and price of a transfer, and what they cost.

Why its own module: it is the arithmetic the quote reserves and the build must stay within, so
both use the same functions, and it is pure (integers, no node). The rules are the runtime's:

- a transaction pays `lamports_per_signature` per signature plus a priority fee of
  ceil(compute-unit limit x compute-unit price / 1,000,000) lamports, the price being in
  micro-lamports per compute unit and the limit the one its SetComputeUnitLimit requests (the
  fee counts the units requested, not the ones used, so the limit is kept tight);
- the limits below cover what each kind of transfer consumes, with room to spare: the two
  ComputeBudget instructions cost 150 units each, a System transfer 150, an SPL Token
  `transfer_checked` about 6,200 with the classic token program (about 100 with p-token), and a
  `create_idempotent` associated token account about 25,000 when it creates the account
  (LiteSVM, whose token program is p-token, measures 450 for a SOL transfer, 405 for an SPL
  one and 13,930 to 15,430 when it creates the account). A transaction that runs past its
  limit fails with its fee charged, so a limit errs on the high side;
- the market price is a percentile of the non-zero `prioritizationFee`s that
  getRecentPrioritizationFees reports for the accounts the transaction writes (the last 150
  blocks); 0 when every recent block was free.
"""

from __future__ import annotations

from collections.abc import Sequence

MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000  # the runtime's most per transaction
COMPUTE_UNITS_SOL = 1_000  # a SOL transfer: 450 used
COMPUTE_UNITS_SPL = 20_000  # an SPL transfer_checked to an existing account: ~6,500 used with the classic program
COMPUTE_UNITS_CREATE_ATA = 40_000  # added when the destination's associated token account is created: ~25,000


def compute_unit_limit(spl: bool, create_ata: bool) -> int:
    """The SetComputeUnitLimit of a SOL or SPL transfer (one that may create the destination's account)."""
    return (COMPUTE_UNITS_SPL if spl else COMPUTE_UNITS_SOL) + (COMPUTE_UNITS_CREATE_ATA if create_ata else 0)


def priority_fee(limit: int, price: int) -> int:
    """Lamports the runtime charges on top of the signature fee: ceil(limit x price / 10^6)."""
    return -(-limit * price // MICRO_LAMPORTS_PER_LAMPORT)


def max_spend(signature_fee: int, limit: int | None, price: int, rent: int) -> int:
    """Most lamports the fee payer can lose besides the amount: signatures, priority fee, created rent."""
    return signature_fee + (priority_fee(limit, price) if limit is not None else 0) + rent


def percentile_price(fees: Sequence[int], percentile: int) -> int:
    """The nearest-rank `percentile` (1..100) of the non-zero fees, 0 when there are none."""
    paid = sorted(fee for fee in fees if fee > 0)
    if not paid:
        return 0
    rank = -(-percentile * len(paid) // 100)  # 1-based nearest rank
    return paid[max(rank, 1) - 1]
