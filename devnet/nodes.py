"""One devnet node per chain, started from its registry entry, with a faucet.

The embedded stack (demo, integration tests) asks for "a node for this chain" and "give this
address that much of this token"; each family answers with its own real node: anvil for EVM
chains, and our TRON, Bitcoin and Solana nodes speaking those chains' RPCs.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Protocol

from chains.registry import ChainSpec, TokenSpec


class DevnetNode(Protocol):
    rpc_url: str

    def fund(self, address: str, token: TokenSpec, amount: int) -> None:
        """Add `amount` base units of `token` to `address` on this devnet, on chain when this returns
        (mined, or credited by the node at once)."""


class EvmDevnet:
    """anvil, with every registry token deployed at its registry address."""

    def __init__(self, spec: ChainSpec, home: Path, block_time: float | None, stack: ExitStack) -> None:
        from devnet.anvil import AnvilNode
        from devnet.token import deploy_token

        self._node = stack.enter_context(AnvilNode(home, chain_id=spec.chain_id or 31337, block_time=block_time))
        self.rpc_url = self._node.rpc_url
        for token in spec.tokens.values():
            deploy_token(self.rpc_url, f"{token.symbol} (devnet)", token.symbol, token.decimals,
                         expected_address=token.contract)

    def fund(self, address: str, token: TokenSpec, amount: int) -> None:
        from devnet.token import mint

        if token.asset_type == "NATIVE":
            self._node.send_value(address, amount)
        else:
            mint(self.rpc_url, token.contract or "", address, amount)


SUPPORTED_FAMILIES = frozenset({"evm", "tron", "bitcoin", "solana"})


def start_node(spec: ChainSpec, home: Path, block_time: float | None, stack: ExitStack) -> DevnetNode:
    """Start the devnet node for `spec` inside `stack` (stopped when the stack closes)."""
    if spec.family == "evm":
        return EvmDevnet(spec, home, block_time, stack)
    if spec.family == "tron":
        from devnet.tron_node import TronNode

        return stack.enter_context(TronNode.for_spec(spec, block_time=block_time))
    if spec.family == "bitcoin":
        from devnet.bitcoin_node import BitcoinNode

        return stack.enter_context(BitcoinNode(block_interval=block_time))
    if spec.family == "solana":
        from devnet.solana_node import SolanaNode

        return stack.enter_context(SolanaNode.for_spec(spec))
    raise NotImplementedError(f"no devnet node for the {spec.family} family yet")
