"""`paratro`: the ops command line (worker, beat, migrate, transfer, show, replay, sweep, demo).

Configuration comes from `PARATRO_*` environment variables (see README). Bad input exits 2 with a
one-line error and changes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.errors import InvalidInput, LimitExceeded, NotFound
from pipeline.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
signer_app = typer.Typer(no_args_is_help=True, help="Local signer utilities.")
client_app = typer.Typer(no_args_is_help=True, help="Clients (organisations).")
wallet_app = typer.Typer(no_args_is_help=True, help="Wallets, accounts and assets.")
app.add_typer(signer_app, name="signer")
app.add_typer(client_app, name="client")
app.add_typer(wallet_app, name="wallet")


def _ctx() -> Any:
    from workers import runtime

    return runtime.context()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except (InvalidInput, NotFound, LimitExceeded) as exc:
        _fail(f"{type(exc).__name__}: {exc}")


@app.command()
def worker(
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", help="comma-separated queues (default: all)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
    beat: Annotated[bool, typer.Option(help="also run the periodic sweeper in this worker")] = False,
    hostname: Annotated[Optional[str], typer.Option(help="worker node name")] = None,
) -> None:
    """Run a Celery worker (prefork) on some or all step queues."""
    from workers.app import ALL_QUEUES
    from workers.app import app as celery_app

    if get_settings().signer_master_key is None:
        _fail("PARATRO_SIGNER_MASTER_KEY is not set: a worker could not sign (see `paratro signer new-master-key`)")
    argv = ["worker", "-Q", queues or ",".join(ALL_QUEUES), "-c", str(concurrency), "--pool", "prefork",
            "--loglevel", get_settings().log_level, "--without-gossip", "--without-mingle"]
    if beat:
        argv += ["-B", "--schedule", _beat_schedule_path()]
    if hostname:
        argv += ["-n", hostname]
    celery_app.worker_main(argv)


@app.command("beat")
def beat_cmd() -> None:
    """Run Celery beat alone (the sweeper schedule); run exactly one per deployment."""
    from workers.app import app as celery_app

    celery_app.start(["beat", "--loglevel", get_settings().log_level, "--schedule", _beat_schedule_path()])


def _beat_schedule_path() -> str:
    path = Path(get_settings().beat_schedule_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (pipeline tables and the local signer's)."""
    from pipeline.db import get_database

    install_schema()
    url = get_database(get_settings().database_url).engine.url.render_as_string(hide_password=True)
    typer.echo(f"database at {url} is up to date")


def install_schema() -> None:
    """Alembic upgrade of the pipeline's tables, then the local signer's own tables."""
    from pipeline.db import get_database
    from pipeline.migrate import upgrade
    from signer.local import SignerBase

    url = get_settings().database_url
    upgrade(url)
    SignerBase.metadata.create_all(get_database(url).engine)


@app.command()
def transfer(
    client_id: Annotated[str, typer.Option(help="cli_… id of the client")],
    from_address: Annotated[str, typer.Option("--from")],
    to_address: Annotated[str, typer.Option("--to")],
    chain: Annotated[str, typer.Option()],
    token: Annotated[str, typer.Option(help="token symbol, e.g. ETH or USDT")],
    amount: Annotated[str, typer.Option(help="decimal string in token units, e.g. 1.25")],
    idempotency_key: Annotated[str, typer.Option(help="unique per client; repeat it to retry safely")],
) -> None:
    """Submit one transfer (idempotent on the key) and print its id."""
    from pipeline.transfers import TransferRequest
    from workers.services import submit_transfer

    req = TransferRequest(client_id=client_id, from_address=from_address, to_address=to_address, chain=chain,
                          token_symbol=token, amount=amount, idempotency_key=idempotency_key)
    transaction_id, created = _guard(lambda: submit_transfer(_ctx(), req))
    _print_json({"transaction_id": transaction_id, "created": created})


@app.command()
def show(
    transaction_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show one transfer: stage, amounts, hashes and every event."""
    from workers.services import describe_transfer

    data = _guard(lambda: describe_transfer(_ctx(), transaction_id))
    if as_json:
        _print_json(data)
        return
    from workers.display import print_transfer

    print_transfer(data)


@app.command()
def replay(
    transaction_ids: Annotated[Optional[list[str]], typer.Argument(help="tx_… ids")] = None,
    stalled: Annotated[bool, typer.Option("--stalled", help="every pending transfer whose step gave up")] = False,
) -> None:
    """Re-drive pending transfers from their last durable stage (final ones are left alone)."""
    from workers.services import replay as replay_ids
    from workers.services import stalled_transfers

    ids = list(transaction_ids or [])
    if stalled:
        ids += stalled_transfers(_ctx())
    if not ids:
        _fail("name transaction ids or pass --stalled")
    _print_json(_guard(lambda: replay_ids(_ctx(), ids)))


@app.command()
def sweep() -> None:
    """Run the sweeper once now: re-drive pending transfers with no recent progress."""
    from workers.tasks import sweep as sweep_task

    typer.echo(json.dumps({"redriven": sweep_task.run()}))


@client_app.command("create")
def client_create(
    name: str,
    max_wallets: Annotated[int, typer.Option()] = 100,
) -> None:
    """Create a client; its API secret is printed once and stored only as a hash."""
    from pipeline.onboarding import create_client

    def run() -> dict[str, str]:
        with _ctx().db.unit_of_work() as session:
            client, secret = create_client(session, name, max_wallets)
            return {"client_id": client.client_id, "api_key_id": client.api_key_id, "api_secret": secret}

    _print_json(_guard(run))


@wallet_app.command("create")
def wallet_create(
    client_id: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    asset: Annotated[list[str], typer.Option(help="CHAIN:SYMBOL, repeatable, e.g. ethereum:USDT")],
) -> None:
    """Create a wallet with its key, and accounts/assets on the given chains."""
    from workers.services import onboard_wallet

    chains: dict[str, list[str]] = {}
    for item in asset:
        chain, _, symbol = item.partition(":")
        if not chain or not symbol:
            _fail(f"--asset {item!r} must look like CHAIN:SYMBOL")
        chains.setdefault(chain, []).append(symbol)
    wallet = _guard(lambda: onboard_wallet(_ctx(), client_id, name, chains))
    _print_json({"wallet_id": wallet.wallet_id, "accounts": wallet.accounts,
                 "assets": {f"{c}:{s}": a for (c, s), a in wallet.assets.items()}})


@signer_app.command("new-master-key")
def new_master_key() -> None:
    """Print a fresh PARATRO_SIGNER_MASTER_KEY (keep it in your secret store, not in git)."""
    from signer.local import new_master_key as make

    typer.echo(make())


@app.command()
def demo(
    transfers: Annotated[int, typer.Option(help="distinct transfers to submit (all chains together)")] = 20,
    chains: Annotated[Optional[str], typer.Option(help="comma-separated chains (default: every devnet chain)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only the final JSON line")] = False,
    block_time: Annotated[float, typer.Option(help="devnet block interval in seconds")] = 0.5,
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 4,
) -> None:
    """Run the embedded stack (redis, devnet, worker) and real transfers end to end."""
    from workers.demo import DemoOptions, default_chains, run_demo
    from workers.demo_plan import distribute

    selected = tuple(c.strip() for c in chains.split(",") if c.strip()) if chains else default_chains()
    try:
        distribute(selected, transfers)
    except (ValueError, KeyError) as exc:
        _fail(f"{exc} (demo chains: {', '.join(default_chains())})")
    ok = run_demo(DemoOptions(transfers=transfers, json_only=as_json, block_time=block_time, concurrency=concurrency,
                              chains=selected))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app()
