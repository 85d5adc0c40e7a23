"""`paratro` turns every configuration or environment error into one line on stderr and a non-zero
exit (bad input 2, the rest 1), never echoing a secret; `paratro --debug` shows the traceback.
Each case runs the real entry point in a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sealing import new_secrets_key

from signer.local import new_master_key

ROOT = Path(__file__).resolve().parents[2]
SECRET_PW = "s3cretPassw0rd"
PATH_KEY = "PATHKEY0a1b2c3d4e5f"


def paratro(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARATRO_")}
    return subprocess.run([sys.executable, "-m", "paratro.cli", *args], env={**clean, **env}, cwd=env["HOME_DIR"],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert SECRET_PW not in result.stderr + result.stdout and PATH_KEY not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME_DIR": str(tmp_path), "PARATRO_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "PARATRO_CHAIN_REGISTRY": "devnet", "PARATRO_BROKER_URL": "redis://127.0.0.1:1/0",
            "PARATRO_SECRETS_KEY": new_secrets_key()}


@pytest.fixture
def migrated(env: dict[str, str]) -> dict[str, str]:
    result = paratro("migrate", env=env)
    assert result.returncode == 0 and "up to date" in result.stdout, result.stderr
    return env


def test_an_unmigrated_database_says_so(env: dict[str, str]) -> None:
    line = one_error_line(paratro("client", "create", "Acme", env=env))
    assert "database schema is not migrated: run `paratro migrate`" in line


def test_creating_a_client_without_a_secrets_key_says_what_to_set(env: dict[str, str]) -> None:
    del env["PARATRO_SECRETS_KEY"]
    line = one_error_line(paratro("client", "create", "Acme", env=env))
    assert line == ("error: PARATRO_SECRETS_KEY is not set: API and webhook secrets cannot be sealed or opened "
                    "(see `paratro client new-secrets-key`)")
    env["PARATRO_SECRETS_KEY"] = "not-a-key"
    line = one_error_line(paratro("client", "create", "Acme", env=env))
    assert "PARATRO_SECRETS_KEY must be base64url of 32 bytes" in line and "not-a-key" not in line


def test_an_unreachable_database_says_so_without_its_password(env: dict[str, str]) -> None:
    env["PARATRO_DATABASE_URL"] = f"postgresql+psycopg://paratro:{SECRET_PW}@127.0.0.1:1/paratro"
    line = one_error_line(paratro("show", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", env=env))
    assert line.startswith("error: database unavailable:") and "Connection refused" in line


@pytest.mark.parametrize("rpc_urls", [
    '{"ethereum": "http://rpcuser:s3cretPassw0rd@node/v3/PATHKEY0a1b2c3d4e5f"',  # not JSON
    '["http://rpcuser:s3cretPassw0rd@node/v3/PATHKEY0a1b2c3d4e5f"]',  # not an object
    '{"ethereum": 5, "tron": "http://rpcuser:s3cretPassw0rd@node/v3/PATHKEY0a1b2c3d4e5f"}',  # not a string
    '{"ethereum": "rpcuser:s3cretPassw0rd@node/v3/PATHKEY0a1b2c3d4e5f"}',  # not a URL
], ids=["not json", "a list", "a number", "no scheme"])
def test_wrongly_shaped_rpc_urls_are_named_not_echoed(migrated: dict[str, str], rpc_urls: str) -> None:
    migrated["PARATRO_RPC_URLS"] = rpc_urls
    line = one_error_line(paratro("show", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", env=migrated))
    assert "invalid settings: PARATRO_RPC_URLS" in line


def test_a_bad_registry_is_one_line(migrated: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "registry.toml"
    bad.write_text("[chains.x]\nfamily = 'nope'\n")
    migrated["PARATRO_CHAIN_REGISTRY"] = str(bad)
    line = one_error_line(paratro("show", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", env=migrated))
    assert "chain registry" in line and "family" in line


def test_bad_input_exits_2_and_debug_shows_the_traceback(migrated: dict[str, str]) -> None:
    line = one_error_line(paratro("client", "create", "two\nlines", env=migrated), code=2)
    assert "InvalidInput: client name must be printable text" in line
    debug = paratro("--debug", "client", "create", "two\nlines", env=migrated)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InvalidInput" in debug.stderr


def test_wallet_create_with_a_bad_asset_leaves_no_wallet(migrated: dict[str, str]) -> None:
    migrated["PARATRO_SIGNER_MASTER_KEY"] = new_master_key()
    created = paratro("client", "create", "Acme", "--max-wallets", "1", env=migrated)
    client_id = json.loads(created.stdout)["client_id"]
    for asset in ("ethereum:NOPE", "dogechain:DOGE"):
        line = one_error_line(paratro("wallet", "create", "--client-id", client_id, "--name", "hot", "--asset", "ethereum:ETH",
                                      "--asset", asset, env=migrated), code=2)
        assert "UnknownSymbol" in line or "UnknownChainError" in line
    ok = paratro("wallet", "create", "--client-id", client_id, "--name", "hot", "--asset", "ethereum:ETH", env=migrated)
    assert ok.returncode == 0 and json.loads(ok.stdout)["wallet_id"].startswith("w_"), ok.stderr  # the limit is still free


@pytest.mark.parametrize(("master_key", "says"), [
    (None, "PARATRO_SIGNER_MASTER_KEY is not set"),
    ("not-a-key", "PARATRO_SIGNER_MASTER_KEY is malformed"),
], ids=["missing", "malformed"])
def test_a_worker_refuses_to_start_without_a_usable_master_key(migrated: dict[str, str], master_key: str | None,
                                                                says: str) -> None:
    if master_key:
        migrated["PARATRO_SIGNER_MASTER_KEY"] = master_key
    line = one_error_line(paratro("worker", env=migrated))
    assert says in line and (master_key is None or master_key not in line)


def test_a_worker_refuses_a_well_formed_master_key_that_opens_no_wallet_key(migrated: dict[str, str]) -> None:
    migrated["PARATRO_SIGNER_MASTER_KEY"] = new_master_key()
    client_id = json.loads(paratro("client", "create", "Acme", env=migrated).stdout)["client_id"]
    assert paratro("wallet", "create", "--client-id", client_id, "--name", "hot", "--asset", "ethereum:ETH",
                   env=migrated).returncode == 0
    migrated["PARATRO_SIGNER_MASTER_KEY"] = wrong = new_master_key()
    line = one_error_line(paratro("worker", env=migrated))
    assert "opens none of the 4 newest sealed wallet keys" in line and wrong not in line


def test_a_worker_refuses_an_unmigrated_database(env: dict[str, str]) -> None:
    env["PARATRO_SIGNER_MASTER_KEY"] = new_master_key()
    line = one_error_line(paratro("worker", env=env))
    assert "database schema is not migrated: run `paratro migrate`" in line


def test_transfer_prints_one_line_when_the_broker_is_away(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The submit contract: published=False means stored, its dispatch waiting in the outbox."""
    from dataclasses import dataclass

    from paratro import cli

    @dataclass
    class Submission:
        transaction_id: str
        created: bool
        published: bool

    answers = iter([Submission("tx_1", True, False), Submission("tx_1", False, True)])
    monkeypatch.setattr("workers.services.submit_transfer", lambda ctx, req: next(answers))
    monkeypatch.setattr(cli, "_ctx", lambda: None)
    args = dict(client_id="cli_01JAAAAAAAAAAAAAAAAAAAAAAA", from_address="0x" + "11" * 20, to_address="0x" + "22" * 20,
                chain="ethereum", token="ETH", amount="1", idempotency_key="k1")
    cli.transfer(**args)
    assert capsys.readouterr().out == "tx_1 accepted, queued when the broker returns\n"
    cli.transfer(**args)
    assert json.loads(capsys.readouterr().out) == {"transaction_id": "tx_1", "created": False, "published": True}


def test_the_cli_the_demo_and_the_stack_do_not_import_each_other() -> None:
    code = ("import sys, workers.stack, paratro.demo; "
            "assert 'paratro.cli' not in sys.modules, 'stack/demo import the cli'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- the worker's supervisor -----------------------------------------------------------------------

def _child(tmp_path: Path, codes: list[int]) -> list[str]:
    """A child that exits with the next code of `codes` each run (counting runs in a file)."""
    counter = tmp_path / "runs"
    script = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
              f"p.write_text(str(n + 1)); codes = {codes!r}; sys.exit(codes[min(n, len(codes) - 1)])")
    return [sys.executable, "-c", script]


def test_the_supervisor_restarts_a_child_that_dies_until_it_stops_cleanly(tmp_path: Path) -> None:
    from workers.supervisor import Supervisor

    supervisor = Supervisor(_child(tmp_path, [1, -9 % 256, 0]), max_delay_s=0.05)
    assert supervisor.run() == 0
    assert supervisor.restarts == 2 and (tmp_path / "runs").read_text() == "3"


def test_the_supervisor_gives_up_on_a_crash_loop_with_a_failing_exit_code(tmp_path: Path) -> None:
    from workers.supervisor import Supervisor

    supervisor = Supervisor(_child(tmp_path, [3]), max_quick_failures=2, max_delay_s=0.01)
    assert supervisor.run() == 3
    assert (tmp_path / "runs").read_text() == "3"


def test_a_signal_stops_the_supervisor_and_its_child(tmp_path: Path) -> None:
    import signal
    import time

    code = ("import sys, time; sys.path.insert(0, %r); from workers.supervisor import Supervisor; "
            "sys.exit(Supervisor([sys.executable, '-c', 'import time; time.sleep(60)']).run())" % str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=20) != 0 and time.monotonic() - started < 10  # the child got SIGTERM too
    finally:
        parent.kill()


def test_error_lines_for_broker_and_driver_errors_are_one_line_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.exceptions import OperationalError as KombuOperationalError
    from sqlalchemy.exc import OperationalError

    from pipeline.settings import get_settings
    from paratro.cli import error_line

    monkeypatch.setenv("PARATRO_BROKER_URL", f"redis://:{SECRET_PW}@10.1.2.3:6379/0")
    get_settings.cache_clear()
    try:
        line, code = error_line(KombuOperationalError("Error 111 connecting to 10.1.2.3:6379.\nConnection refused."))
        assert code == 1 and line.startswith("broker unreachable at redis://***@10.1.2.3:6379/0: ")
        assert "\n" not in line and SECRET_PW not in line
        line, code = error_line(OperationalError("SELECT 1", {}, Exception("no such table: clients")))
        assert (line, code) == ("database schema is not migrated: run `paratro migrate`", 1)
        line, code = error_line(RuntimeError(f"boom at http://u:{SECRET_PW}@h/x?key={PATH_KEY}\nsecond line"))
        assert code == 1 and line.startswith("unexpected RuntimeError: boom at http://***@h/x?key=***")
        assert "--debug" in line and "\n" not in line
    finally:
        get_settings.cache_clear()
