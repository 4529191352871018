"""The public API: everything in ``ledger.__all__`` resolves, and nothing else is promised."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ledger


@pytest.mark.parametrize("name", ledger.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(ledger, name) is not None


def test_unknown_names_are_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ledger.nope


def test_the_verification_core_loads_without_kafka_duckdb_or_arrow() -> None:
    """Verification workers import only the pure core: small processes, fast start."""
    code = (
        "import sys, consumers.verification; "
        "print(sorted(m for m in ('kafka', 'duckdb', 'pyarrow', 'fastapi') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
