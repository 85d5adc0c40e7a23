"""docker-compose.yml, parsed as YAML (no docker compose on the test machines): every queue has a
worker group, the API is there with a /ready healthcheck that runs on the image (python, no curl),
and every PARATRO service shares the secrets key and the metrics port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from workers.app import ALL_QUEUES
from paratro.cli import app as cli

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _paratro(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == "paratro-pipeline:latest"}


def _queues(command: list[str]) -> set[str]:
    for flag in ("--queues", "-Q"):
        if flag in command:
            return set(command[command.index(flag) + 1].split(","))
    return set(ALL_QUEUES)  # no --queues: every queue


def test_every_queue_has_a_worker_group(services: dict[str, Any]) -> None:
    workers = [s["command"] for s in _paratro(services).values() if s["command"][0] == "worker"]
    consumed = set().union(*(_queues(command) for command in workers))
    assert set(ALL_QUEUES) <= consumed, f"no worker for {sorted(set(ALL_QUEUES) - consumed)}"
    assert consumed <= set(ALL_QUEUES), f"unknown queues {sorted(consumed - set(ALL_QUEUES))}"
    assert ["worker", "--queues", "paratro.webhooks"] == services["worker-webhooks"]["command"][:3]
    assert ["worker", "--queues", "paratro.keys"] == services["worker-keys"]["command"][:3]


def test_api_service_and_its_ready_healthcheck(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["command"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(port).endswith("8000:8000") for port in api["ports"])
    test = api["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "http://127.0.0.1:8000/ready" in test[3]
    compile(test[3], "healthcheck", "exec")  # valid Python


def test_shared_environment(services: dict[str, Any]) -> None:
    paratro = _paratro(services)
    assert {"api", "beat", "migrate", "worker-webhooks", "worker-keys"} <= set(paratro)
    for name, service in paratro.items():
        env = service["environment"]
        assert env["PARATRO_SECRETS_KEY"].startswith("${PARATRO_SECRETS_KEY:?"), name
        assert int(env["PARATRO_METRICS_PORT"]) > 0, name
        assert "PROMETHEUS_MULTIPROC_DIR" not in env, name  # each `paratro worker` makes its own


def test_commands_exist_in_the_cli(services: dict[str, Any]) -> None:
    commands = set(get_command(cli).commands)  # type: ignore[attr-defined]
    for name, service in _paratro(services).items():
        assert service["command"][0] in commands, f"{name}: `paratro {service['command'][0]}` does not exist"
