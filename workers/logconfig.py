"""Structured logs for workers and the CLI: key=value on a console, JSON lines when asked; and one
redactor that every log line passes, ours and every library's.

Log lines carry ids, stages and error summaries; never settings, keys, payload bytes or secrets.
Libraries do not share that rule: at INFO or DEBUG, urllib3 logs request paths and queries (where
RPC providers put API keys), web3 logs full endpoint URLs (user:password included), httpx logs
URLs, and an exception message may quote a URL. So:

- every stdlib log record is redacted when it is created (a LogRecord factory: whatever logger made
  it, whichever handler prints it, its message, arguments and traceback text are already clean),
  and the root handler's formatter redacts the final line once more;
- structlog's rendered line (ours) is redacted as its last processor;
- the CLI's one-line errors go through `redact` too.

What is removed: the userinfo of any URL (`scheme://user:pw@host` -> `scheme://***@host`), the value
of any query parameter (`?apikey=...` -> `?apikey=***`), and every secret the settings know (path
keys and query values of the configured RPC, database and broker URLs, their passwords, the signer
master key), wherever they appear, even without the rest of their URL.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import structlog

MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@'\"<>]+@")
_QUERY_VALUE = re.compile(r"(?P<lead>[?&;][A-Za-z0-9_.\-\[\]]{1,64}=)[^&\s'\"#<>]+")
MIN_LITERAL = 8  # shorter "secrets" (a user name like "paratro") would blank ordinary words out of every line


def _looks_like_key(segment: str) -> bool:
    """A URL path segment that is a credential rather than a route: long, or mixing letters and digits."""
    return len(segment) >= 16 or (len(segment) >= MIN_LITERAL and any(c.isdigit() for c in segment)
                                  and any(c.isalpha() for c in segment))


def url_secrets(url: str) -> set[str]:
    """The parts of `url` that are credentials: user, password, query values, key-like path segments."""
    try:
        parts = urlsplit(url)
        found = {parts.username or "", parts.password or ""}
    except ValueError:
        return set()
    found |= {value for _, _, value in (item.partition("=") for item in parts.query.split("&"))}
    found |= {segment for segment in parts.path.split("/") if _looks_like_key(segment)}
    return {unquote(s) for s in found} | found


class Redactor:
    """Masks credentials in text; `add` teaches it literal secrets (from the settings)."""

    def __init__(self) -> None:
        self._literals: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_LITERAL:
                    self._literals |= {value, quote(value, safe="")}
            ordered = sorted(self._literals, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def reset(self) -> None:
        with self._lock:
            self._literals, self._pattern = set(), None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _URL_USERINFO.sub(r"\g<scheme>" + MASK + "@", text)
        return _QUERY_VALUE.sub(r"\g<lead>" + MASK, text)


redact = Redactor()


def settings_secrets() -> set[str]:
    """Every secret the current settings (and the chain registry they name) hold; none if unreadable."""
    found: set[str] = set()
    try:
        from pipeline.settings import get_settings

        settings = get_settings()
    except Exception:  # noqa: BLE001 - bad settings are reported by whoever reads them, not by logging
        return found
    urls = [*settings.rpc_url_list(), settings.database_url, settings.broker_url]  # every URL of every list
    try:
        from chains.registry import load_registry

        registry = load_registry(settings.chain_registry)
        urls += [url for name in registry.names() for url in registry.chain(name).rpc_urls]
    except Exception:  # noqa: BLE001 - a bad registry is reported where it is loaded
        pass
    for url in urls:
        found |= url_secrets(url)
    for key in (settings.signer_master_key, settings.secrets_key):
        if key is not None:
            found.add(key.get_secret_value())
    return found


# -- the standard logging module: every logger, every handler -------------------------------------
_base_factory = logging.getLogRecordFactory()


def _redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    try:
        record.msg, record.args = redact(record.getMessage()), None
    except Exception:  # noqa: BLE001 - a malformed record: logging reports it when it is formatted
        return record
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFormatter(logging.Formatter):
    """The root handler's formatter: the final line, traceback included, is redacted once more."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    return redact(rendered) if isinstance(rendered, str) else rendered


def install_redaction() -> None:
    """Learn the settings' secrets and redact every stdlib log record from now on (idempotent)."""
    redact.add(settings_secrets())
    logging.setLogRecordFactory(_redacting_record_factory)
    logging.captureWarnings(True)  # warnings too go through logging, hence through the redactor


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    install_redaction()
    # Plain tracebacks only: rich's default formatter prints every frame's local variables, which
    # would put RPC credentials (a ChainSpec's URLs) or key material into the log.
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([structlog.processors.format_exc_info] if json_lines else []),
        renderer,
        _redact_rendered,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(handler.formatter._fmt if handler.formatter else None))
    # httpx logs every request's full URL at INFO: a webhook URL's path may hold the receiver's
    # token, which no pattern can tell from a path. Only DEBUG (a developer's choice) shows them.
    logging.getLogger("httpx").setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING)
