"""Secrets stay out of logs: tracebacks carry no local variables, a chain's RPC URLs (which may
hold credentials or API keys) are not part of its repr, and every log line - ours through
structlog, any library's through the logging module - passes the redactor."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from chains.registry import load_registry
from pipeline.settings import get_settings
from workers.logconfig import configure_logging, redact, url_secrets

SECRET_URL = "https://rpcuser:hunter2pass@eth.example.com/v3/APIKEY-9f8e7d"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging binds the (captured) stderr of this test: undo it for the tests after."""
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    logging.captureWarnings(False)
    redact.reset()
    get_settings.cache_clear()


def _fail_with_a_secret_in_scope() -> None:
    endpoint = SECRET_URL  # a local, as a ChainSpec or a decrypted key would be
    raise RuntimeError(f"node said no ({len(endpoint)} chars)")


@pytest.mark.parametrize("json_lines", [False, True], ids=["console", "json"])
def test_a_logged_exception_shows_the_traceback_but_no_local_values(capsys: pytest.CaptureFixture[str], json_lines: bool) -> None:
    configure_logging("INFO", json_lines=json_lines)
    log = structlog.get_logger("test")
    try:
        _fail_with_a_secret_in_scope()
    except RuntimeError:
        log.exception("step.held", tx="tx_x")
    err = capsys.readouterr().err
    assert "node said no" in err and "_fail_with_a_secret_in_scope" in err  # still diagnosable
    assert "hunter2pass" not in err and "APIKEY" not in err


def test_a_chain_spec_repr_hides_its_rpc_urls() -> None:
    spec = load_registry("devnet").with_rpc_urls({"ethereum": SECRET_URL}).chain("ethereum")
    assert spec.rpc_url == SECRET_URL
    assert "hunter2pass" not in repr(spec) and "hunter2pass" not in str(spec)


# -- the redactor ----------------------------------------------------------------------------------
RPC = "http://rpcuser:s3cretPassw0rd@127.0.0.1:8545/v3/PATHKEY0a1b2c3d4e5f/?apikey=QUERYKEY77x&net=main"
TRON_RPC = "https://tron.example.com/TRONKEY9z8y7x6w5v"


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("PARATRO_RPC_URLS", json.dumps({"ethereum": RPC, "tron": TRON_RPC}))
    monkeypatch.setenv("PARATRO_CHAIN_REGISTRY", "devnet")
    get_settings.cache_clear()


LEAKS = ("rpcuser", "s3cretPassw0rd", "PATHKEY0a1b2c3d4e5f", "QUERYKEY77x", "TRONKEY9z8y7x6w5v", "main&")


def assert_clean(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked: {text}"


@pytest.mark.parametrize("line", [
    f"Making request HTTP. URI: {RPC}, Method: eth_chainId",  # web3 at DEBUG
    'http://127.0.0.1:8545 "POST /v3/PATHKEY0a1b2c3d4e5f/?apikey=QUERYKEY77x&net=main HTTP/1.1" 200 41',  # urllib3
    "Starting new HTTPS connection (1): tron.example.com:443 GET /TRONKEY9z8y7x6w5v/wallet/getnowblock",
    f"HTTP Request: POST {RPC} \"HTTP/1.1 200 OK\"",  # httpx at INFO
    "Max retries exceeded with url: /v3/PATHKEY0a1b2c3d4e5f/?apikey=QUERYKEY77x",  # an exception message
    "redis://rpcuser:s3cretPassw0rd@10.0.0.1:6379/0 and postgresql+psycopg://rpcuser:s3cretPassw0rd@db/p",
    "quoted: http%3A%2F%2F127.0.0.1%2Fv3%2FPATHKEY0a1b2c3d4e5f",
])
def test_the_redactor_masks_userinfo_query_values_and_known_path_keys(secret_settings: None, line: str) -> None:
    configure_logging("DEBUG")
    assert_clean(redact(line))


def test_the_redactor_leaves_ordinary_lines_alone(secret_settings: None) -> None:
    configure_logging("INFO")
    line = "step.done tx=tx_01JAAAAAAAAAAAAAAAAAAAAAAA stage=SIGNED outcome=advanced paratro.broadcast"
    assert redact(line) == line
    assert url_secrets("postgresql+psycopg://paratro:paratro@postgres/paratro") >= {"paratro"}
    configure_logging("INFO")
    assert redact("paratro.sweep") == "paratro.sweep"  # a short user name is not blanked out of every line


@pytest.mark.parametrize("json_lines", [False, True], ids=["console", "json"])
def test_every_librarys_log_records_are_redacted(secret_settings: None, capsys: pytest.CaptureFixture[str],
                                                 json_lines: bool) -> None:
    configure_logging("DEBUG", json_lines=json_lines)
    # libraries log through the logging module at DEBUG/INFO, with %-args, as they really do
    logging.getLogger("urllib3.connectionpool").debug('%s://%s:%s "%s %s %s" %s %s', "http", "127.0.0.1", 8545, "POST",
                                                      "/v3/PATHKEY0a1b2c3d4e5f/?apikey=QUERYKEY77x&net=main",
                                                      "HTTP/1.1", 200, 41)
    logging.getLogger("web3.providers.HTTPProvider").debug("Making request HTTP. URI: %s, Method: %s", RPC, "eth_call")
    logging.getLogger("httpx").info("HTTP Request: %s %s", "POST", RPC)
    logging.getLogger("celery.worker.consumer").warning("consumer: Cannot connect to %s", RPC)
    try:
        raise ConnectionError(f"Max retries exceeded with url: {RPC}")
    except ConnectionError:
        logging.getLogger("requests").exception("request failed")
    # a library logger that does not propagate and has its own handler and formatter
    own = logging.getLogger("some.sdk")
    own.propagate = False
    own.addHandler(logging.StreamHandler(sys.stderr))
    try:
        own.warning("retrying %s", RPC)
    finally:
        own.handlers.clear()
        own.propagate = True
    structlog.get_logger("ours").warning("rpc.failed", url=RPC, tx="tx_x")
    err = capsys.readouterr().err
    assert "Making request HTTP" in err and "HTTP Request" in err and "rpc.failed" in err and "retrying" in err
    assert "Max retries exceeded" in err and "127.0.0.1" in err  # still diagnosable
    assert_clean(err)


def test_a_python_warning_goes_through_the_redactor(secret_settings: None, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    configure_logging("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"insecure request to {RPC}", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "insecure request" in err
    assert_clean(err)


def test_the_secrets_and_master_keys_of_the_settings_are_masked(secret_settings: None, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.sealing import new_secrets_key
    from signer.local import new_master_key

    secrets_key, master_key = new_secrets_key(), new_master_key()
    monkeypatch.setenv("PARATRO_SECRETS_KEY", secrets_key)
    monkeypatch.setenv("PARATRO_SIGNER_MASTER_KEY", master_key)
    get_settings.cache_clear()
    configure_logging("INFO")
    logging.getLogger("some.lib").warning("config dump: secrets=%s master=%s", secrets_key, master_key)
    structlog.get_logger("ours").warning("boot", secrets=secrets_key)
    err = capsys.readouterr().err
    assert "config dump" in err and "boot" in err
    assert secrets_key not in err and master_key not in err
