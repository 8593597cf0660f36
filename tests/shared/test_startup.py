"""A process that cannot run says why in one line and exits: no traceback wall."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import BIN, base_env

CLOSED_DATABASE = "postgresql://postgres@127.0.0.1:1/antrian"
CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=base_env(**env), capture_output=True, text=True, timeout=60)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("program", ["sync-api", "sync-worker"])
def test_unreachable_database_stops_the_process(program, infrastructure):
    result = run([str(BIN / program)], DATABASE_URL=CLOSED_DATABASE, UPSTREAM_BASE_URL="http://127.0.0.1:1")
    assert_one_line(result, 3, program, "database", "127.0.0.1:1")


@pytest.mark.parametrize("program", ["sync-api", "sync-worker"])
def test_unreachable_broker_stops_the_process(program, infrastructure):
    result = run([str(BIN / program)], BROKER_URL=CLOSED_BROKER, UPSTREAM_BASE_URL="http://127.0.0.1:1")
    assert_one_line(result, 3, program, "broker", "127.0.0.1:1")


def test_sync_api_needs_a_token(infrastructure):
    result = run([str(BIN / "sync-api")], API_TOKEN="")
    assert_one_line(result, 2, "sync-api", "API_TOKEN")


def test_sync_worker_needs_the_school_api(infrastructure):
    result = run([str(BIN / "sync-worker")])
    assert_one_line(result, 2, "sync-worker", "UPSTREAM_BASE_URL")


def test_a_wrong_value_stops_the_process(infrastructure):
    result = run([str(BIN / "sync-worker")], UPSTREAM_BASE_URL="http://x", UPSTREAM_TIMEOUT_S="soon")
    assert_one_line(result, 2, "UPSTREAM_TIMEOUT_S")
