"""A throwaway PostgreSQL server on a free loopback port, for integration tests and CI.

Why: SQLite hides the concurrency that matters here (row locks in lock_funds, unique
idempotency keys under racing workers), so the ledger is also tested against a real server.
The cluster lives in a temporary directory under /tmp, is tuned for speed over durability
(fsync, synchronous_commit and full_page_writes off: it is thrown away anyway), trusts local
connections, and is removed on stop. PostgreSQL refuses to run as root, so when we are root the
one-shot tools (initdb, pg_ctl) run as the ``postgres`` system user via ``runuser -u postgres --``
and the server itself is started directly as that user (so it stays our direct child).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

SUPERUSER = "paratro"
DATABASE = "paratro"
RUN_AS = "postgres"
_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresError(RuntimeError):
    """PostgreSQL is missing or would not start."""


def find_postgres_bindir() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres: PATH first, then /usr/lib/postgresql/*/bin."""
    on_path = [shutil.which(name) for name in _BINARIES]
    if all(on_path):
        return Path(on_path[0]).resolve().parent  # type: ignore[arg-type]
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: _version_key(Path(p).parent.name),
        reverse=True,
    )
    for candidate in candidates:
        if all((Path(candidate) / name).is_file() for name in _BINARIES):
            return Path(candidate)
    return None


def _version_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def ensure_postgres() -> Path:
    """Return the PostgreSQL bin dir, installing ``postgresql`` with apt-get when missing
    (only when root and apt-get exist)."""
    bindir = find_postgres_bindir()
    if bindir is not None:
        return bindir
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise PostgresError(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in "
            "/usr/lib/postgresql/*/bin. On Debian/Ubuntu run `apt-get update && apt-get install "
            "-y postgresql`; elsewhere install PostgreSQL >= 15 and put its bin dir on PATH."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "postgresql"]):
        print(f"devnet: running {' '.join(cmd)}", file=sys.stderr)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise PostgresError(f"{' '.join(cmd)} failed:\n{tail}")
    bindir = find_postgres_bindir()
    if bindir is None:
        raise PostgresError("apt-get installed postgresql but no initdb/pg_ctl/postgres was found")
    return bindir


class PostgresServer(Service):
    """A PostgreSQL cluster with superuser ``paratro`` and database ``paratro``.

    ``.url`` is the SQLAlchemy URL (``postgresql+psycopg://...``), ``.dsn`` the libpq one.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        bindir: Path | None = None,
        timeout: float = 30.0,
        max_connections: int = 300,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.port = port
        self.bindir = bindir
        self.timeout = timeout
        self.max_connections = max_connections
        self.extra_settings = dict(extra_settings or {})
        self._as_root = os.geteuid() == 0

    # -- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{LOOPBACK}:{self._port()}/{DATABASE}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self._port()}/{DATABASE}"

    def _port(self) -> int:
        if self.port is None:
            raise RuntimeError("postgres is not started")
        return self.port

    @property
    def data_dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("postgres is not started")
        return self.dir / "data"

    # -- helpers -----------------------------------------------------------------------------
    def _cmd(self, binary: str, *args: str) -> list[str]:
        assert self.bindir is not None
        argv = [str(self.bindir / binary), *args]
        if self._as_root:
            return ["runuser", "-u", RUN_AS, "--", *argv]
        return argv

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, timeout=self.timeout
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise PostgresError(f"{what} failed (exit {result.returncode}):\n{tail}")

    def _make_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="paratro-pg-", dir="/tmp"))
        if self._as_root:
            try:
                user = pwd.getpwnam(RUN_AS)
            except KeyError as exc:
                shutil.rmtree(path, ignore_errors=True)
                raise PostgresError(
                    f"running as root needs the `{RUN_AS}` system user to run PostgreSQL "
                    "(it refuses root); install the postgresql package or run as non-root"
                ) from exc
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "PostgresServer":
        self.bindir = self.bindir or find_postgres_bindir()
        if self.bindir is None:
            raise PostgresError(
                "PostgreSQL binaries not found; call devnet.postgres.ensure_postgres() or install "
                "PostgreSQL >= 15 (Debian/Ubuntu: apt-get install -y postgresql)"
            )
        self.port = self.port or free_port()
        self.dir = self._make_dir()
        try:
            self._initdb()
            self._start_server()
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        self._run(
            self._cmd(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER,
                "-E", "UTF8", "--locale=C", "--no-sync",
            ),
            "initdb",
        )

    def _start_server(self) -> None:
        assert self.dir is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
            **self.extra_settings,
        }
        args = ["-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        dsn = f"host={LOOPBACK} port={self.port} user={SUPERUSER} dbname=postgres connect_timeout=1"

        def ready() -> bool:
            import psycopg

            with psycopg.connect(dsn) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        # The server runs as the direct child (dropping to the postgres user in the child, not
        # via runuser), so it gets the parent-death signal and dies with a SIGKILLed test run.
        self._process = ManagedProcess(
            [str(self.bindir / "postgres"), *args],
            user=RUN_AS if self._as_root else None,
            name="postgres",
            ready=ready,
            log_path=self.dir / "postgres.log",
            timeout=self.timeout,
            grace=5.0,
            cwd=self.dir,
            on_stop=self._remove_dir,
        )
        self._process.start()

    def _create_database(self) -> None:
        import psycopg

        dsn = f"host={LOOPBACK} port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        """``pg_ctl stop`` first (a clean, quick shutdown), then the base stop."""
        if self._process is not None and self._process.is_running():
            try:
                self._run(
                    self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate",
                              "-w", "-t", "10"),
                    "pg_ctl stop",
                )
            except (PostgresError, subprocess.TimeoutExpired):
                pass  # ManagedProcess.stop below signals the whole group anyway
        super().stop()
