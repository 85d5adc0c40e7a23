"""What the TRON devnet charges, with mainnet's numbers where they are simple to follow.

- Bandwidth: every transaction uses (serialized size + 64) bytes. An account's free bandwidth
  (`free_bandwidth` bytes per UTC day; mainnet gives 600, the devnet 0 by default so fees show)
  is used first; otherwise `bandwidth_price` sun per byte is burnt (mainnet: 1000).
- Activation: a TRX transfer to an address that does not exist yet creates the account; it burns
  `create_account_fee` (0.1 TRX) instead of the bandwidth fee, plus
  `create_account_system_fee` (1 TRX), as mainnet does for a sender without staked bandwidth.
  A TRC20 transfer never activates an account (neither does it on mainnet).
- Energy (TRC20 calls): a transfer costs `trc20_energy` energy to a holder and
  `trc20_energy_new_holder` to an address holding none of the token (mainnet USDT: ~65k / ~130k),
  burnt at `energy_price` sun each (mainnet: 100), capped by the transaction's fee_limit. When
  the cap (or the TRX balance) is too low, the call fails OUT_OF_ENERGY, the whole cap is burnt
  and the transfer is not applied, like a real TVM.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FEE_LIMIT = 15_000_000_000  # sun; mainnet's upper bound for fee_limit


@dataclass(frozen=True)
class Fees:
    bandwidth_price: int = 1_000
    free_bandwidth: int = 0
    create_account_fee: int = 100_000
    create_account_system_fee: int = 1_000_000
    energy_price: int = 100
    trc20_energy: int = 65_000
    trc20_energy_new_holder: int = 130_000
    revert_energy: int = 5_000  # a transfer that reverts (not enough tokens) still burns this much

    def chain_parameters(self) -> list[dict[str, int | str]]:
        """The subset of /wallet/getchainparameters these correspond to."""
        return [
            {"key": "getTransactionFee", "value": self.bandwidth_price},
            {"key": "getFreeNetLimit", "value": self.free_bandwidth},
            {"key": "getCreateAccountFee", "value": self.create_account_fee},
            {"key": "getCreateNewAccountFeeInSystemContract", "value": self.create_account_system_fee},
            {"key": "getEnergyFee", "value": self.energy_price},
            {"key": "getMaxFeeLimit", "value": MAX_FEE_LIMIT},
        ]
