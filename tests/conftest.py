"""Shared test configuration.

bitcoinlib writes its config and database under BCL_DATA_DIR; `chains.bitcoin_tx.load_bitcoinlib`
points it at the project's `.devnet/bitcoinlib` (never the user's home), so nothing is set here.
"""
