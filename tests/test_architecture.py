"""The house rules a newcomer relies on, checked on every run: layers, one reader of the environment, no
number typed twice.

Fast tier: reads the source, starts nothing but import-linter.
"""

from __future__ import annotations

import ast
import re
import subprocess

import pytest

from tests.support import BIN, ROOT

pytestmark = pytest.mark.fast

#: Every folder of production code, and the development launcher and stand-ins.
CODE = [ROOT / "shared" / "antrian", *sorted((ROOT / "services").glob("*/*/")), ROOT / "dev"]


def python_files() -> list:
    files = [path for folder in CODE for path in folder.rglob("*.py") if "/build/" not in str(path)]
    assert len(files) > 90
    return files


def test_the_import_contracts_hold():
    # .importlinter: no cycle at any level, services apart, shared below them, each package's layers downwards
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout


def _reads_the_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "putenv", "unsetenv", "environb"}:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
            alias.name in {"environ", "getenv", "putenv"} for alias in node.names
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.keyword) and node.arg in {"envvar", "auto_envvar_prefix"}:
            lines.append(node.lineno)  # click reading a variable behind config's back
    return lines


def test_config_is_the_only_reader_and_writer_of_the_environment():
    config = ROOT / "shared" / "antrian" / "config.py"
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for path in python_files()
        if path != config
        for line in _reads_the_environment(ast.parse(path.read_text()))
    }
    assert found == set(), "read the environment through antrian.config instead"
    assert _reads_the_environment(ast.parse(config.read_text()))  # the check itself finds what it looks for


def test_no_attempts_count_is_typed_as_text():
    # "after 3 attempts" comes from the retry policy (RetryPolicy.after_all), so it cannot drift from the count
    typed = {
        f"{path.relative_to(ROOT)}:{number}"
        for path in python_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"after \d+ attempts?\b", line) and not line.lstrip().startswith(("#", '"""', "``"))
    }
    assert typed == set()
