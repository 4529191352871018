"""The code stays lint-clean, formatted and type-checked (the settings live in pyproject.toml)."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("ledger", "consumers", "tests", "bench")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", *FOLDERS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted() -> None:
    """`ruff format` is the one layout (a `# fmt: skip` keeps a hand-aligned table)."""
    result = _run("ruff", "format", "--check", *FOLDERS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    """One strict run covers every Python file: the library, the services, the tests and the
    benchmarks (the configuration's `files`)."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    # glob, not Path.rglob: glob follows the link ledger/wire/schemas, as mypy does.
    files = [f for d in FOLDERS for f in glob.glob(f"{d}/**/*.py", root_dir=ROOT, recursive=True)]
    assert f"no issues found in {len(files)} source files" in result.stdout, result.stdout
