"""The devnet services for real: redis-server, PostgreSQL, anvil + the devnet ERC20.

Run from the project root:  PYTHONPATH=. python -m pytest -q tests/integration/test_devnet.py
Every test checks that what it started is gone afterwards (no orphan processes).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devnet.anvil import DEFAULT_ACCOUNT, AnvilNode, RpcError  # noqa: E402
from devnet.ports import free_port  # noqa: E402
from devnet.processes import ManagedProcess, ProcessStartError  # noqa: E402

pytestmark = pytest.mark.integration

# anvil's default mnemonic, account 1: a publicly known test key.
ACCOUNT_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ACCOUNT_1_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OUTSIDER = "0x000000000000000000000000000000000000bEEF"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as dead only if it is reaped or a zombie.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


# -- ports and the process helper ---------------------------------------------------------------
def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_early_exit_reports_code_and_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        ["sh", "-c", "echo line-one; echo boom >&2; exit 3"],
        name="crasher", ready=lambda: False, log_path=tmp_path / "c.log", timeout=5,
    )
    with pytest.raises(ProcessStartError, match=r"(?s)code 3.*boom"):
        proc.start()
    assert proc.returncode == 3


def test_readiness_timeout_reports_log_tail_and_kills(tmp_path: Path) -> None:
    def never() -> bool:
        raise ConnectionRefusedError("nope")

    proc = ManagedProcess(
        ["sh", "-c", "echo still-waiting; exec sleep 30"],
        name="slow", ready=never, log_path=tmp_path / "s.log", timeout=0.3,
    )
    began = time.monotonic()
    with pytest.raises(ProcessStartError, match=r"(?s)not ready within 0.3s.*nope.*still-waiting"):
        proc.start()
    assert time.monotonic() - began < 3
    assert proc.pid is not None and not _alive(proc.pid)


def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # Both the shell and its background child ignore SIGTERM (ignored dispositions survive exec).
    script = f'trap "" TERM; sleep 60 & echo $! > {pidfile}; wait'
    proc = ManagedProcess(
        ["sh", "-c", script], name="stubborn", ready=pidfile.exists,
        log_path=tmp_path / "t.log", grace=0.2,
    )
    with proc:
        while not pidfile.read_text().strip():
            time.sleep(0.01)
        child = int(pidfile.read_text())
        assert os.getpgid(child) == proc.pid  # own process group
        assert os.getpgid(proc.pid) != os.getpgid(0)
    assert proc.returncode == -signal.SIGKILL
    assert _wait_dead(child), "background child survived stop()"


def test_ensure_anvil_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devnet import anvil as anvil_mod

    monkeypatch.setenv(anvil_mod.ANVIL_BIN_ENV, str(tmp_path / "missing-anvil"))
    with pytest.raises(anvil_mod.AnvilError, match="PARATRO_ANVIL_BIN"):
        anvil_mod.ensure_anvil(tmp_path)
    monkeypatch.delenv(anvil_mod.ANVIL_BIN_ENV)
    monkeypatch.setattr(anvil_mod.shutil, "which", lambda name: None)
    with pytest.raises(anvil_mod.AnvilError, match=r"Node\.js 20 \+ npm.*PARATRO_ANVIL_BIN"):
        anvil_mod.ensure_anvil(tmp_path)


# -- redis ------------------------------------------------------------------------------------
def test_redis_server() -> None:
    import redis

    from devnet.redis_server import RedisServer

    with RedisServer() as server:
        assert server.url.startswith("redis://127.0.0.1:") and server.url.endswith("/0")
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        server.restart()
        assert client.ping() is True  # same port after a restart
        assert client.get("k") is None  # nothing persisted
        client.close()
        pid, workdir = server.process.pid, server.dir
    assert pid is not None and _wait_dead(pid)
    assert workdir is None or not workdir.exists()


# -- postgres ---------------------------------------------------------------------------------
def test_postgres_server() -> None:
    import psycopg
    import sqlalchemy as sa

    from devnet.postgres import PostgresServer

    with PostgresServer() as pg:
        assert pg.url.startswith("postgresql+psycopg://paratro@127.0.0.1:")
        assert pg.url.endswith("/paratro")
        workdir = pg.dir
        pid = pg.process.pid
        engine = sa.create_engine(pg.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "paratro"
            assert conn.execute(sa.text("SHOW max_connections")).scalar_one() == "300"
            assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
        engine.dispose()
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pid is not None and _wait_dead(pid)
    assert workdir is not None and not workdir.exists()


# -- anvil + token ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with AnvilNode(ROOT, chain_id=31337) as node:
        yield node
        pid = node.process.pid
    assert pid is not None and _wait_dead(pid)


def test_anvil_rpc_helpers(anvil: AnvilNode) -> None:
    assert int(anvil.rpc("eth_chainId"), 16) == 31337
    assert anvil.rpc_url.startswith("http://127.0.0.1:")
    start = anvil.block_number()
    anvil.mine()
    anvil.mine(4)
    assert anvil.block_number() == start + 5
    anvil.set_balance(OUTSIDER, 123 * 10**18)
    assert anvil.balance(OUTSIDER) == 123 * 10**18
    with pytest.raises(RpcError):
        anvil.rpc("no_such_method")


def test_token_deploy_mint_transfer(anvil: AnvilNode) -> None:
    from web3.exceptions import ContractLogicError

    from devnet import token

    url = anvil.rpc_url
    address = token.deploy_token(
        url, "Tether USD", "USDT", 6, expected_address=token.DEFAULT_TOKEN_ADDRESS
    )
    assert address == token.DEFAULT_TOKEN_ADDRESS  # account 0, nonce 0, fresh node
    # Idempotent: the same expected address is reused, not redeployed.
    assert token.deploy_token(url, "Tether USD", "USDT", 6, expected_address=address) == address
    with pytest.raises(token.TokenError):
        token.deploy_token(url, "Other", "OTH", 18, expected_address=address)

    contract = token.token_contract(url, address)
    assert contract.functions.name().call() == "Tether USD"
    assert contract.functions.decimals().call() == 6
    assert contract.functions.owner().call() == DEFAULT_ACCOUNT

    tx_hash = token.mint(url, address, DEFAULT_ACCOUNT, 1_000_000_000)
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    token.transfer(url, address, ACCOUNT_1, 250_000_000)  # signed by account 0
    token.transfer(url, address, OUTSIDER, 50_000_000, private_key=ACCOUNT_1_KEY)
    assert token.token_balance(url, address, DEFAULT_ACCOUNT) == 750_000_000
    assert token.token_balance(url, address, ACCOUNT_1) == 200_000_000
    assert token.token_balance(url, address, OUTSIDER) == 50_000_000
    assert contract.functions.totalSupply().call() == 1_000_000_000

    with pytest.raises(ContractLogicError, match="insufficient balance"):
        token.transfer(url, address, OUTSIDER, 200_000_001, private_key=ACCOUNT_1_KEY)
    with pytest.raises(ContractLogicError, match="only owner"):
        token.mint(url, address, ACCOUNT_1, 1, private_key=ACCOUNT_1_KEY)
    assert token.token_balance(url, address, ACCOUNT_1) == 200_000_000

    # Skipping gas estimation puts the failing transfer on chain: the receipt says reverted.
    w3 = contract.w3
    account = token.Account.from_key(ACCOUNT_1_KEY)
    tx = contract.functions.transfer(OUTSIDER, 10**12).build_transaction(
        {"from": account.address, "gas": 100_000}
    )
    with pytest.raises(token.TokenError, match="reverted"):
        token.send_transaction(w3, account, token._without_fees(tx) | {"gas": 100_000})
    assert token.token_balance(url, address, OUTSIDER) == 50_000_000


def test_token_on_interval_mining(tmp_path: Path) -> None:
    from devnet import token

    with AnvilNode(ROOT, chain_id=1337, block_time=0.2, silent=False,
                   log_path=tmp_path / "anvil.log") as node:
        address = token.deploy_token(node.rpc_url, "USD Coin", "USDC", 6)
        token.mint(node.rpc_url, address, ACCOUNT_1, 42)
        assert token.token_balance(node.rpc_url, address, ACCOUNT_1) == 42
        pid = node.process.pid
    assert pid is not None and _wait_dead(pid)
    assert (tmp_path / "anvil.log").read_text()  # silent=False logs to the file
