"""antrian-worker-probe: a worker is live while its threads beat, and ready only while it consumes from RabbitMQ."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.proxy import FreezableProxy
from tests.support import BIN, BROKER_URL, base_env, wait_until


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def test_the_probe_passes_while_the_worker_consumes_and_fails_when_it_cannot_or_is_stuck(
    clean, start_dramatiq, smtp_server, tmp_path, request
):
    proxy = FreezableProxy(5672)
    request.addfinalizer(proxy.close)
    env = {"TMPDIR": str(tmp_path), "ANTRIAN_HEARTBEAT_INTERVAL_S": "0.5"}
    mailer = start_dramatiq("mailer", threads=1, BROKER_URL=BROKER_URL.replace(":5672/", f":{proxy.port}/"),
                           **smtp_server.env(), **env)

    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "antrian-worker-probe"), "mailer", *args], env=base_env(**env),
                              capture_output=True, text=True, timeout=30)

    wait_until(lambda: probe("--ready").returncode == 0, timeout=30, what="the worker consuming")
    assert probe().returncode == 0

    # RabbitMQ out of reach: still live (a restart would not help), no longer ready
    proxy.close()
    not_ready = wait_until(lambda: (result := probe("--ready")).returncode == 1 and result, timeout=30,
                           what="the probe to see the consumer gone")
    assert "is not consuming (no connection to RabbitMQ)" in not_ready.stderr
    assert probe().returncode == 0

    # The worker process stuck (stopped): its beats stop, and liveness fails
    workers = children(mailer.process.pid)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        stuck = wait_until(lambda: (result := probe("--max-age", "2")).returncode == 1 and result, timeout=30,
                           what="the liveness probe to fail")
        assert "last beat" in stuck.stderr and stuck.stderr.startswith("antrian-worker-probe mailer: ")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def test_the_probe_fails_before_any_worker_beat(tmp_path):
    result = subprocess.run([str(BIN / "antrian-worker-probe"), "sync-worker"], env=base_env(TMPDIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "no worker process has beaten" in result.stderr
