"""Secrets stay out of logs: tracebacks carry no local variables, and a chain's RPC URLs (which
may hold credentials or API keys) are not part of its repr."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from chains.registry import load_registry
from workers.logconfig import configure_logging

SECRET_URL = "https://rpcuser:hunter2pass@eth.example.com/v3/APIKEY-9f8e7d"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging binds the (captured) stderr of this test: undo it for the tests after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


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
