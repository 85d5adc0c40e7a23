"""The devnet Solana node's parts: `cluster` (LiteSVM + slots, blockhashes, ledger, faucets),
`methods` (the JSON-RPC methods), `server` (HTTP front and slot clock), `errors` (RPC errors).
`devnet.solana_node` runs them as a process and is the Service that starts it."""
