"""What the failed-job tests share: students and bookings in SQL, a table that refuses writes, the stored rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from sqlalchemy import Engine, text

from antrian.jobs import failed_jobs
from antrian.jobs.keep_failed import describe
from tests.support import queue_depth, wait_until


def add_students(engine: Engine, idpersons: list[int]) -> None:
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO students (idperson, name) SELECT i, 'Siswa ' || i FROM unnest(:ids) i"),
                           {"ids": idpersons})


def add_due_booking(engine: Engine, *, seats: int = 2) -> int:
    """A tour and one pending booking past its deadline (the sweep's work); returns the booking's id."""
    with engine.begin() as connection:
        tour_id = connection.execute(text(
            "INSERT INTO tours (name, quota, price, starts_at) VALUES ('Ijen Blue Fire', 20, 750000, "
            "now() + interval '9 days') RETURNING id")).scalar_one()
        return connection.execute(text(
            "INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, expires_at) "
            "VALUES ('DUE1-0001', :tour, 'Sari', 'sari@example.com', :seats, 1500000, now() - interval '1 minute') "
            "RETURNING id"), {"tour": tour_id, "seats": seats}).scalar_one()


@contextmanager
def refusing(engine: Engine, table: str, operation: str = "UPDATE") -> Iterator[None]:
    """Make PostgreSQL refuse every ``operation`` on ``table`` (a trigger raising), as a broken database would."""
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE OR REPLACE FUNCTION antrian_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test: % on %', TG_OP, TG_TABLE_NAME; END $$"))
        connection.execute(text(
            f"CREATE TRIGGER antrian_test_refuse BEFORE {operation} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION antrian_test_refuse()"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TRIGGER IF EXISTS antrian_test_refuse ON {table}"))


def failed_rows(engine: Engine, where: str = "true", **parameters) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(
            text(f"SELECT * FROM failed_jobs WHERE {where} ORDER BY id"), parameters)]


def wait_for_failed(engine: Engine, count: int, *, timeout: float = 30, **where) -> list[dict]:
    clause = " AND ".join(f"{column} = :{column}" for column in where) or "true"
    return wait_until(lambda: (rows := failed_rows(engine, clause, **where)) and len(rows) >= count and rows,
                      timeout=timeout, what=f"{count} failed jobs {where}")


def dead_letters(*queues: str) -> int:
    """Messages waiting in the queues' RabbitMQ dead-letter queues (``.XQ``)."""
    return sum(queue_depth(f"{queue}.XQ") for queue in queues)


def start_run(web: str, auth: dict) -> int:
    response = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def run_state(web: str, auth: dict, run_id: int) -> dict:
    return requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=5).json()


def store(engine, contract, *args, exception=None, days_ago: int = 0) -> int:
    """Store a failed job as a worker would (3 attempts), failed ``days_ago`` days ago; returns its id."""
    try:
        raise exception or RuntimeError("boom")
    except Exception as raised:  # noqa: BLE001 - raised here for a real traceback
        failure = describe(raised, attempts=3)
    with engine.begin() as connection:
        job_id = failed_jobs.keep(connection, contract.message(*args), failure)
        connection.execute(text("UPDATE failed_jobs SET failed_at = now() - make_interval(days => :days) "
                                "WHERE id = :id"), {"days": days_ago, "id": job_id})
    return job_id
