"""The Celery tasks of wallet key generation: thin wrappers over `workers.wallets`.

`paratro.generate_wallet_keys` (queue paratro.keys: slow key ceremonies never wait behind transfer
steps) carries the wallet id and the token it was published with; `paratro.wallet_keys_relay`
(beat, sweeper queue) publishes it again for every GENERATING wallet whose due time has passed.
A copy delivered twice, or after the wallet finished, does nothing.
"""

from __future__ import annotations

from pipeline.settings import get_settings
from workers import runtime, wallets
from workers.app import app, task_name


@app.task(name=task_name("generate_wallet_keys"), acks_late=True, ignore_result=True)
def generate_wallet_keys(wallet_id: str, token: int | None = None) -> str:
    """Generate the wallet's keys and activate it (or retry later, or fail it after the last attempt)."""
    return wallets.run_key_generation(runtime.context(), wallet_id, token, get_settings().wallet_key_attempts)


@app.task(name=task_name("wallet_keys_relay"), acks_late=True, ignore_result=True)
def wallet_keys_relay() -> int:
    """Publish key generation for wallets whose message is overdue (lost, retry due, run died)."""
    return wallets.relay_key_generations(runtime.context())
