"""What several sync tests check: the expected outcome per student, and a run's exact end state."""

from __future__ import annotations

import requests
from sqlalchemy import Engine, text

from antrian.cli.demo import FIRST_IDPERSON
from dev.school_api import behaviour, payment_data
from tests.support import wait_until


def idpersons(count: int) -> list[int]:
    return [FIRST_IDPERSON + n for n in range(count)]


def expected_failures(count: int, *, transient_rate: float, permanent_rate: float) -> set[int]:
    """Students the development API refuses for good (transient ones succeed within 3 attempts)."""
    return {
        idperson
        for idperson in idpersons(count)
        if behaviour(idperson, transient_rate=transient_rate, permanent_rate=permanent_rate).kind == "permanent"
    }


def wait_for_run(web: str, auth: dict, run_id: int, *, timeout: float) -> dict:
    def finished():
        run = requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=5).json()
        return run if not run["isRunning"] else None

    return wait_until(finished, timeout=timeout, interval=0.25, what=f"sync run {run_id} to finish")


def assert_exact_outcome(engine: Engine, run: dict, count: int, failures: set[int]) -> None:
    """Counts, items and stored pembayaran all agree, with each student counted once."""
    assert run["status"] == "finished" and run["finished_at"] is not None
    assert run["total"] == count
    assert run["processed"] == count
    assert run["failed"] == len(failures)
    assert run["successCount"] == count - len(failures)
    assert run["percent"] == 100.0
    with engine.connect() as connection:
        items = dict(
            connection.execute(
                text("SELECT idperson, status FROM sync_items WHERE run_id = :id"), {"id": run["id"]}
            ).all()
        )
        students = {
            row.idperson: row
            for row in connection.execute(text("SELECT idperson, pembayaran, pembayaran_synced_at FROM students"))
        }
    assert len(items) == count
    assert {i for i, status in items.items() if status == "failed"} == failures
    assert {i for i, status in items.items() if status == "success"} == set(idpersons(count)) - failures
    for idperson, row in students.items():
        if idperson in failures:
            assert row.pembayaran is None and row.pembayaran_synced_at is None
        else:
            assert row.pembayaran == payment_data(idperson), idperson
            assert row.pembayaran_synced_at is not None
