"""JSON-RPC errors of the devnet Solana node, worded like the real node's.

The adapter classifies refusals by the error `code` and the TransactionError in `data.err`;
the message text follows agave's Display of TransactionError so that logs read the same as
against a real cluster.
"""

from __future__ import annotations

from typing import Any

# TransactionError variants without fields -> agave's Display text.
_FIELDLESS = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "WouldExceedMaxBlockCostLimit": "Transaction would exceed max Block Cost Limit",
    "UnsupportedVersion": "Transaction version is unsupported",
}


class RpcError(Exception):
    """A JSON-RPC error object: code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def describe_error(err: Any) -> str:
    """agave's wording of a TransactionError given in its RPC JSON form."""
    if isinstance(err, str):
        return _FIELDLESS.get(err, err)
    if isinstance(err, dict) and len(err) == 1:
        (name, value), = err.items()
        if name == "InstructionError" and isinstance(value, list) and len(value) == 2:
            index, inner = value
            return f"Error processing Instruction {index}: {_instruction_error(inner)}"
        if name == "InsufficientFundsForRent" and isinstance(value, dict):
            return f"Transaction results in an account ({value.get('account_index')}) with insufficient funds for rent"
        return f"{name}: {value}"
    return str(err)


def _instruction_error(inner: Any) -> str:
    if isinstance(inner, dict) and "Custom" in inner:
        return f"custom program error: {int(inner['Custom']):#x}"
    if inner == "InsufficientFunds":
        return "insufficient funds for instruction"
    return str(inner)


def invalid_params(detail: str) -> RpcError:
    return RpcError(-32602, f"Invalid params: {detail}")
