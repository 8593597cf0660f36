"""Operators for the access tests: tokens made with the real ``antrian tokens create`` command."""

from __future__ import annotations

import subprocess

from tests.support import BIN, ROOT, base_env


def antrian(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def create_token(name: str, role: str) -> str:
    """A new token's secret: the last line of ``antrian tokens create``'s standard output (SPEC)."""
    result = antrian("tokens", "create", name, "--role", role)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
