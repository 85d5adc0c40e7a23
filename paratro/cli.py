"""`paratro`: the ops command line (worker, beat, api, sandbox, demo, migrate, client, wallet,
transfer, show, stuck, replay, sweep, status, webhooks).

Configuration comes from `PARATRO_*` environment variables (see README). Bad input exits 2 with a
one-line error and changes nothing; a configuration or environment problem (settings, registry,
master key, database unreachable or not migrated, broker unreachable) exits 1 with one line.
`paratro --debug COMMAND` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from typer.main import get_command

from pipeline.settings import get_settings
from workers.schema import check_schema, install_schema
from workers.webhook_cli import webhooks_app

MAX_ERROR_CHARS = 400


class _Cli(typer.Typer):
    """Typer whose every uncaught error ends as one redacted line on stderr (traceback with --debug)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return get_command(self)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the whole point: no traceback for ops
            if _debug:
                raise
            line, code = error_line(exc)
            typer.echo(f"error: {line}", err=True)
            sys.exit(code)


_debug = False
app = _Cli(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
signer_app = typer.Typer(no_args_is_help=True, help="Local signer utilities.")
client_app = typer.Typer(no_args_is_help=True, help="Clients (organisations).")
wallet_app = typer.Typer(no_args_is_help=True, help="Wallets, accounts and assets.")
app.add_typer(signer_app, name="signer")
app.add_typer(client_app, name="client")
app.add_typer(wallet_app, name="wallet")
app.add_typer(webhooks_app, name="webhooks")


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False) -> None:
    """Paratro pipeline operations."""
    global _debug
    _debug = debug
    from workers.logconfig import configure_logging

    try:  # commands print their results; their logs are for trouble (all of them at DEBUG)
        settings = get_settings()
        configure_logging("DEBUG" if settings.log_level == "DEBUG" else "WARNING", settings.log_json)
    except Exception:  # noqa: BLE001 - the command reports bad settings in one line; log plainly meanwhile
        configure_logging("WARNING")


def _one_line(text: str) -> str:
    from workers.logconfig import redact

    line = redact(" ".join(str(text).split()))
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 3] + "..."


def error_line(exc: BaseException) -> tuple[str, int]:
    """One line saying what went wrong (never a secret), and the exit code: 2 bad input, 1 the rest."""
    from sqlalchemy.exc import DBAPIError

    from chains.errors import ChainError
    from pipeline.db import translate_db_error
    from pipeline.errors import ConfigurationError, InvalidInput, LimitExceeded, NotFound, PipelineError
    from signer.base import SignerError

    if isinstance(exc, (InvalidInput, NotFound, LimitExceeded)):
        return _one_line(f"{type(exc).__name__}: {exc}"), 2
    if isinstance(exc, DBAPIError):
        mapped = translate_db_error(exc)
        if mapped is exc:
            return _one_line(f"database error: {type(exc.orig).__name__}: {exc.orig}"), 1
        exc = mapped
    if isinstance(exc, (ConfigurationError, PipelineError)):
        return _one_line(str(exc)), 1
    if _is_broker_error(exc):
        return _one_line(f"broker unreachable at {_broker_shown()}: {type(exc).__name__}: {exc}"), 1
    if isinstance(exc, SignerError):
        return _one_line(f"signer: {exc}"), 1
    if isinstance(exc, ChainError):
        return _one_line(f"{type(exc).__name__}: {exc}"), 1
    return _one_line(f"unexpected {type(exc).__name__}: {exc} (`paratro --debug ...` shows the traceback)"), 1


def _is_broker_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, (KombuOperationalError, RedisConnectionError, RedisTimeoutError))


def _broker_shown() -> str:
    from kombu.utils.url import maybe_sanitize_url

    try:
        return str(maybe_sanitize_url(get_settings().broker_url))
    except Exception:  # noqa: BLE001
        return "PARATRO_BROKER_URL"


def _ctx() -> Any:
    """This process's StepContext; a bad registry or master key is a ConfigurationError (one line)."""
    from chains.errors import ChainError
    from pipeline.errors import ConfigurationError
    from signer.base import SignerError
    from workers import runtime

    settings = get_settings()
    try:
        runtime.registry_from(settings)
    except (ValueError, OSError, ChainError) as exc:
        raise ConfigurationError(f"chain registry {settings.chain_registry!r}: {exc}") from exc
    try:
        return runtime.context()
    except SignerError as exc:
        raise ConfigurationError(f"PARATRO_SIGNER_MASTER_KEY: {exc}") from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_worker_config() -> None:
    """What a worker needs before it takes a task, each failure one ConfigurationError line: the
    settings, the master key (present, well formed, and opening the stored wallet keys), the chain
    registry, and a reachable database at the current schema."""
    from pipeline.errors import ConfigurationError
    from signer.base import SignerError
    from signer.local import LocalKeySigner
    from pipeline.db import get_database

    settings = get_settings()
    if settings.signer_master_key is None:
        raise ConfigurationError("PARATRO_SIGNER_MASTER_KEY is not set: a worker could not sign "
                                 "(see `paratro signer new-master-key`)")
    try:
        signer = LocalKeySigner(get_database(settings.database_url).engine, settings.signer_master_key.get_secret_value())
    except SignerError as exc:
        raise ConfigurationError(f"PARATRO_SIGNER_MASTER_KEY is malformed: {exc}") from None
    _ctx()  # the registry, with its RPC overrides
    check_schema(settings.database_url)
    try:
        signer.check_master_key()
    except SignerError as exc:
        raise ConfigurationError(str(exc)) from None


@app.command()
def worker(
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", help="comma-separated queues (default: all)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
    beat: Annotated[bool, typer.Option(help="also run the periodic sweeper in this worker")] = False,
    hostname: Annotated[Optional[str], typer.Option(help="worker node name")] = None,
    supervise: Annotated[bool, typer.Option(help="run Celery in a child process, restarted when it dies on its own "
                                                 "(e.g. kombu's crash on a broker restart)")] = True,
) -> None:
    """Run a Celery worker (prefork) on some or all step queues; refuses to start on a bad configuration."""
    check_worker_config()
    if supervise:
        from workers.logconfig import configure_logging
        from workers.supervisor import supervise as run_supervised

        configure_logging(get_settings().log_level, get_settings().log_json)
        argv = [sys.executable, "-m", "paratro.cli", "worker", "--no-supervise", "-c", str(concurrency)]
        argv += ["--beat"] if beat else []
        argv += ["--queues", queues] if queues else []
        argv += ["--hostname", hostname] if hostname else []
        from workers.metrics import worker_exporter

        with worker_exporter(get_settings()):  # PARATRO_METRICS_PORT > 0: /metrics for this worker's processes
            code = run_supervised(argv)
        raise typer.Exit(code)

    from workers.app import ALL_QUEUES, WORKER_QUEUES_ENV
    from workers.app import app as celery_app

    os.environ[WORKER_QUEUES_ENV] = queues or ",".join(ALL_QUEUES)  # the pool's children inherit it
    argv = ["worker", "-Q", os.environ[WORKER_QUEUES_ENV], "-c", str(concurrency), "--pool", "prefork",
            "--loglevel", get_settings().log_level, "--without-gossip", "--without-mingle"]
    if beat:
        argv += ["-B", "--schedule", _beat_schedule_path()]
    if hostname:
        argv += ["-n", hostname]
    raise typer.Exit(_run_celery(celery_app, argv))


def _run_celery(celery_app: Any, argv: list[str]) -> int:
    """Celery's command line as `Celery.start` runs it, but keeping the exit code that `start` and
    `worker_main` drop (1 after an "Unrecoverable error"; they return, and the process exits 0)."""
    from celery.bin.celery import celery as celery_command
    from click.exceptions import Exit

    celery_command.params[0].default = celery_app
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except Exit as exc:
        code = exc.exit_code
    finally:
        celery_command.params[0].default = None
    return code if isinstance(code, int) else 0


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
    submission = submit_transfer(_ctx(), req)
    published = getattr(submission, "published", True)
    if not published:  # stored, its dispatch waits in the outbox: not an error
        typer.echo(f"{submission.transaction_id} accepted, queued when the broker returns")
        return
    _print_json({"transaction_id": submission.transaction_id, "created": submission.created, "published": published})


@app.command()
def show(
    transaction_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show one transfer: stage, amounts, hashes, every event and every signed attempt (fee bumps)."""
    from workers.services import describe_transfer

    data = describe_transfer(_ctx(), transaction_id)
    if as_json:
        _print_json(data)
        return
    from workers.display import print_transfer

    print_transfer(data)


@app.command()
def stuck(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    chain: Annotated[Optional[str], typer.Option(help="only this chain")] = None,
    older_than: Annotated[int, typer.Option("--older-than",
                                            help="list sent transfers not in a block after this many seconds")] = 60,
    limit: Annotated[int, typer.Option(help="rows shown, longest waiting first (the summary counts all)")] = 100,
) -> None:
    """Pending transfers being bumped, gap-filled or waiting (stuck_reason), NOOP gap fills, and sent
    transfers not included after --older-than seconds; then a one-line summary. Exits 0."""
    from workers.stuck import list_stuck

    if older_than < 0:
        _fail(f"--older-than {older_than} must be 0 or more seconds")
    if limit < 1:
        _fail(f"--limit {limit} must be 1 or more")
    report = list_stuck(_ctx(), older_than, chain, limit)
    if as_json:
        _print_json(report.to_dict())
        return
    from workers.display import print_stuck

    print_stuck(report)


@app.command()
def replay(
    transaction_ids: Annotated[Optional[list[str]], typer.Argument(help="tx_… ids")] = None,
    stalled: Annotated[bool, typer.Option("--stalled", help="every pending transfer whose step gave up")] = False,
    force: Annotated[bool, typer.Option("--force", help="also take over from a live driver (a step hung in an RPC)")] = False,
) -> None:
    """Re-drive pending transfers from their last durable stage (final and live-driven ones are left alone)."""
    from workers.services import replay as replay_ids
    from workers.services import stalled_transfers

    ids = list(transaction_ids or [])
    if stalled:
        ids += stalled_transfers(_ctx())
    if not ids:
        _fail("name transaction ids or pass --stalled")
    _print_json(replay_ids(_ctx(), ids, force))


@app.command()
def sweep() -> None:
    """Run the sweeper once now: re-drive pending transfers with no recent progress."""
    from workers.tasks import sweep as sweep_task

    _ctx()
    typer.echo(json.dumps({"redriven": sweep_task.run()}))


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Queue depths, pending transfers by stage, the oldest pending, failures by reason, webhook backlog."""
    from workers.status import run_status

    run_status(get_settings(), as_json)


@client_app.command("create")
def client_create(
    name: str,
    max_wallets: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON line")] = False,
) -> None:
    """Create a client; its API secret is printed here only and stored sealed (PARATRO_SECRETS_KEY)."""
    from pipeline import credentials

    with _ctx().db.unit_of_work() as session:
        client, secret = credentials.create_client(session, credentials.secret_box(), name, max_wallets)
        created = {"client_id": client.client_id, "api_key": client.api_key_id, "api_secret": secret}
    typer.echo(json.dumps(created)) if as_json else _print_json(created)


@client_app.command("rotate-secret")
def client_rotate_secret(
    client_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON line")] = False,
) -> None:
    """Give a client a new API secret (the old one stops working at once); printed here only."""
    from pipeline import credentials

    with _ctx().db.unit_of_work() as session:
        client, secret = credentials.rotate_secret(session, credentials.secret_box(), client_id)
        rotated = {"client_id": client.client_id, "api_key": client.api_key_id, "api_secret": secret}
    typer.echo(json.dumps(rotated)) if as_json else _print_json(rotated)


@client_app.command("new-secrets-key")
def new_secrets_key() -> None:
    """Print a fresh PARATRO_SECRETS_KEY (keep it in your secret store, not in git)."""
    from pipeline.sealing import new_secrets_key as make

    typer.echo(make())


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
    wallet = onboard_wallet(_ctx(), client_id, name, chains)
    _print_json({"wallet_id": wallet.wallet_id, "accounts": wallet.accounts,
                 "assets": {f"{c}:{s}": a for (c, s), a in wallet.assets.items()}})


@signer_app.command("new-master-key")
def new_master_key() -> None:
    """Print a fresh PARATRO_SIGNER_MASTER_KEY (keep it in your secret store, not in git)."""
    from signer.local import new_master_key as make

    typer.echo(make())


@app.command("api")
def api_cmd(
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json); refuses to start on a bad configuration."""
    from api.app import create_app
    from api.server import run
    from pipeline import credentials
    from workers.logconfig import configure_logging

    if not 0 < port <= 65535:
        _fail(f"--port {port} is not a TCP port")
    settings = get_settings()
    credentials.secret_box(settings)  # PARATRO_SECRETS_KEY present and well formed
    _ctx()  # the chain registry
    check_schema(settings.database_url)
    configure_logging(settings.log_level, settings.log_json)
    run(create_app(), host=host, port=port)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="API port on 127.0.0.1 (0: a free one)")] = 0,
    chains: Annotated[Optional[str], typer.Option(help="comma-separated chains (default: every demo devnet chain)")] = None,
    block_time: Annotated[float, typer.Option(help="devnet block interval in seconds")] = 0.5,
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """Run the local Sandbox: devnets, a worker, the API and a faucet; prints one JSON line when ready."""
    from paratro.demo import default_chains
    from paratro.sandbox import SandboxOptions, run_sandbox

    selected = tuple(c.strip() for c in chains.split(",") if c.strip()) if chains else default_chains()
    unknown = [c for c in selected if c not in default_chains()]
    if unknown:
        _fail(f"no sandbox devnet for {', '.join(unknown)} (sandbox chains: {', '.join(default_chains())})")
    if not 0 <= port <= 65535:
        _fail(f"--port {port} is not a TCP port")
    sys.exit(run_sandbox(SandboxOptions(chains=selected, port=port, block_time=block_time, concurrency=concurrency)))


@app.command()
def demo(
    transfers: Annotated[int, typer.Option(help="distinct transfers to submit (all chains together)")] = 20,
    chains: Annotated[Optional[str], typer.Option(help="comma-separated chains (default: every devnet chain)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only the final JSON line")] = False,
    block_time: Annotated[float, typer.Option(help="devnet block interval in seconds")] = 0.5,
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 4,
) -> None:
    """Run the embedded stack (redis, devnet, worker) and real transfers end to end."""
    from paratro.demo import DemoOptions, default_chains, run_demo
    from paratro.demo_plan import distribute

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
