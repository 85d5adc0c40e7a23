"""The devnet Bitcoin node's parts: `chainstate` (blocks, UTXOs, mempool, validation, mining) and
`rpc` (the bitcoind JSON-RPC methods over it). The process and its launcher: `devnet.bitcoin_node`."""
