"""The layout keeps its promises: the pure core loads no I/O library, dependencies point one
way, and the list of pure modules is the one docs/architecture.md gives."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ledger

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("duckdb", "pyarrow", "kafka", "fastapi", "uvicorn", "httpx")


def _documented() -> list[str]:
    """The pure modules docs/architecture.md lists, packages expanded to every module."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(
        r"<!-- pure modules:.*?-->(.*?)<!-- end of pure modules -->", text, flags=re.S
    )
    assert block, "docs/architecture.md lost its list of pure modules"
    modules: list[str] = []
    for name in re.findall(r"^\s*- `([\w.]+)`", block[1], flags=re.M):
        package = __import__(name, fromlist=["_"])
        modules.append(name)
        if hasattr(package, "__path__"):
            modules += [m.name for m in pkgutil.walk_packages(package.__path__, f"{name}.")]
    return modules


PURE = set(_documented())


def _loaded_by(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_documented_list_covers_the_pure_packages() -> None:
    for package in (
        "ledger.wire.verify",
        "ledger.log.proof",
        "ledger.rules.pointintime",
        "ledger.evidence.bundle",
        "ledger.errors",
    ):
        assert package in PURE


@pytest.mark.parametrize("module", sorted(PURE))
def test_a_pure_module_loads_no_io_library_and_only_pure_modules(module: str) -> None:
    loaded = _loaded_by(module)
    heavy = [m for m in HEAVY if m in loaded]
    assert not heavy, f"{module} loads {heavy}"
    parents = {p.rsplit(".", 1)[0] for p in PURE}  # packages, whose __init__ imports nothing
    impure = [m for m in loaded if m.startswith("ledger.") and m not in PURE | parents]
    assert not impure, f"{module} loads {impure}"


def test_nothing_in_the_library_imports_the_services() -> None:
    """consumers/ imports ledger/, never the reverse: at import time nothing under ledger/
    names consumers (the consume and demo commands load it when run)."""
    for path in (ROOT / "ledger").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^(from|import) consumers\b", line):
                pytest.fail(f"{path.relative_to(ROOT)}:{number} imports consumers at import time")


def test_every_package_ships_its_modules() -> None:
    """Every folder of the library is a package (discovered into the wheel)."""
    for folder in (ROOT / "ledger").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), folder
    assert ledger.__all__
