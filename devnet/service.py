"""The base of the devnet services (anvil, redis-server, postgres): one ManagedProcess, one temp dir.

A subclass implements ``start()`` (set ``self._process``, and ``self.dir`` if it needs one, then
return ``self``); the base gives it ``process``, ``stop()`` and the context manager, so a stopped
service never leaves its process or its directory behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar, Self

from devnet.processes import ManagedProcess


class Service:
    """A local service run as one ManagedProcess; ``with`` starts it and always stops it."""

    #: Used in the "<name> is not started" errors.
    name: ClassVar[str] = "service"

    def __init__(self) -> None:
        self.dir: Path | None = None  # temporary working directory, removed on stop
        self._process: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess:
        """The running process; raises RuntimeError before ``start()``."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._process

    def start(self) -> Self:
        """Start the process and block until it answers."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the process (idempotent) and remove the temp dir."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.stop()
