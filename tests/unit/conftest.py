"""Fixtures for the pipeline and signer unit tests: a migrated SQLite file per test, no services.

The schema is built once per session by the real Alembic migrations (`pipeline.migrate.upgrade`)
into a template file, which each test copies; so every DB test runs on the migrated schema.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.registry import Registry, load_registry
from pipeline.db import Database
from pipeline.migrate import upgrade
from signer.local import LocalKeySigner, new_master_key
from tests.unit.fakes import World


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "pipeline.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry("devnet")


@pytest.fixture
def master_key() -> str:
    return new_master_key()


@pytest.fixture
def local_signer(db: Database, master_key: str) -> LocalKeySigner:
    signer = LocalKeySigner(db.engine, master_key)
    signer.install()
    return signer


@pytest.fixture
def world(db: Database, registry: Registry, local_signer: LocalKeySigner) -> World:
    return World(db, registry, local_signer)
