"""``antrian jobs`` and ``antrian queues`` in the terminal: what failed and why, retried, flushed, one-line errors."""

from __future__ import annotations

import json
import subprocess

from antrian.messages import EMAILS_QUEUE, EXPIRE_UNPAID_BOOKINGS, SEND_ETICKET_EMAIL, SYNC_STUDENT_PAYMENT
from tests.jobs.helpers import failed_rows, store
from tests.support import BIN, ROOT, base_env, free_port, take_messages


def antrian(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(**env), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_jobs_failed_lists_what_failed_and_why_and_show_prints_the_traceback(clean):
    assert antrian("jobs", "failed").stdout == "no failed jobs\n"
    sync = store(clean, SYNC_STUDENT_PAYMENT, 12345, 7, exception=TimeoutError("upstream timed out after 30s"))
    store(clean, SEND_ETICKET_EMAIL, 3)
    result = antrian("jobs", "failed")
    assert result.returncode == 0, result.stderr
    header, *rows, footer = result.stdout.splitlines()
    assert header.split() == ["ID", "QUEUE", "JOB", "ATTEMPTS", "FAILED", "AT", "(UTC)", "EXCEPTION"]
    assert len(rows) == 2 and rows[1].split()[:4] == [str(sync), "sync-pembayaran", "sync_student_payment(12345,",
                                                      "7)"]
    assert rows[1].endswith("TimeoutError: upstream timed out after 30s")
    assert footer.startswith("2 failed jobs;")
    only = antrian("jobs", "failed", "--queue", "emails", "--json")
    [line] = only.stdout.splitlines()
    assert json.loads(line)["actor"] == "send_eticket_email"

    shown = antrian("jobs", "show", str(sync)).stdout
    assert f"id:          {sync}" in shown and "Traceback (most recent call last)" in shown
    assert "TimeoutError: upstream timed out after 30s" in shown


def test_jobs_retry_puts_jobs_back_on_their_queues_with_fresh_attempts(clean):
    first = store(clean, SEND_ETICKET_EMAIL, 1)
    store(clean, SEND_ETICKET_EMAIL, 2)
    sweep = store(clean, EXPIRE_UNPAID_BOOKINGS)
    result = antrian("jobs", "retry", str(first))
    assert (result.returncode, result.stdout) == (0, f"retried failed job {first}\n")
    [message] = take_messages(EMAILS_QUEUE)
    assert message["args"] == [1] and message["options"] == {"failed_job_id": first}
    assert antrian("jobs", "retry", "--all", "--queue", "emails").stdout == "retried 1 failed job\n"
    assert [m["args"] for m in take_messages(EMAILS_QUEUE)] == [[2]]
    assert [row["id"] for row in failed_rows(clean)] == [sweep]
    assert antrian("jobs", "retry", "--all").stdout == "retried 1 failed job\n"
    assert len(take_messages("booking-expiry")) == 1 and failed_rows(clean) == []


def test_jobs_retry_and_flush_refuse_bad_input_in_one_line_and_change_nothing(clean):
    store(clean, SEND_ETICKET_EMAIL, 1)
    before = failed_rows(clean)
    for args, code, says in [
        (("jobs", "retry", "999"), 1, "Error: failed job 999 not found"),
        (("jobs", "retry"), 2, "give failed job IDs or --all"),
        (("jobs", "retry", "1", "--all"), 2, "give failed job IDs or --all"),
        (("jobs", "retry", "abc"), 2, "'abc' is not a valid integer"),
        (("jobs", "retry", "1", "--queue", "emails"), 2, "--queue goes with --all"),
        (("jobs", "flush", "--older-than", "soon"), 2, "'soon' is not an age such as 7d"),
        (("jobs", "flush", "--queue", "nope"), 2, "'nope' is not one of"),
    ]:
        result = antrian(*args)
        assert result.returncode == code, (args, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert failed_rows(clean) == before
    # RabbitMQ unreachable: one line naming it, the job still stored
    result = antrian("jobs", "retry", "1", BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert result.returncode == 3 and result.stderr.startswith("antrian jobs retry: cannot reach the broker at")
    assert failed_rows(clean) == before


def test_jobs_flush_deletes_all_one_queues_or_the_old_failed_jobs(clean):
    store(clean, SEND_ETICKET_EMAIL, 1, days_ago=30)
    store(clean, SEND_ETICKET_EMAIL, 2)
    store(clean, EXPIRE_UNPAID_BOOKINGS, days_ago=1)
    assert antrian("jobs", "flush", "--older-than", "7d").stdout == "flushed 1 failed job\n"
    assert antrian("jobs", "flush", "--queue", "booking-expiry").stdout == "flushed 1 failed job\n"
    assert antrian("jobs", "flush").stdout == "flushed 1 failed job\n"
    assert failed_rows(clean) == []


def test_antrian_queues_shows_a_table_per_queue(clean):
    store(clean, SEND_ETICKET_EMAIL, 1)
    result = antrian("queues")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["QUEUE", "READY", "UNACKED", "DELAYED", "FAILED", "CONSUMERS", "IN/S", "OUT/S",
                              "WAIT-P50", "WAIT-P95", "STATE"]
    emails = next(row.split() for row in rows if row.startswith("emails"))
    assert emails[4] == "1"
    # Without the management API: what AMQP can tell, and a note saying what is missing
    fallback = antrian("queues", RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{free_port()}")
    assert fallback.returncode == 0 and "management API is unreachable" in fallback.stdout
    emails = next(row.split() for row in fallback.stdout.splitlines() if row.startswith("emails"))
    assert emails[1:5] == ["0", "-", "-", "1"]
