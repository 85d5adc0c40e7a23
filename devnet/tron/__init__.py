"""Parts of the TRON devnet node (`devnet.tron_node`): the chain model and its HTTP wallet API."""
