"""The ledger as a user installs it: from its wheel, into a fresh virtual environment.

The other tests run an editable install, which sees every file of the source tree: a
package left out of the wheel (as ledger.api once was) passes them all and breaks every
command of an installed ledger. This builds the wheel, installs it with the `local` extra
where nothing else is, and runs what a new user runs first.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from helpers import cli_paths

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding the wheel built from this tree."""
    work = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--wheel-dir",
        work / "dist",
        ROOT,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("deploy_ledger-*.whl")
    venv.create(work / "venv", with_pip=True)
    bin_dir = work / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "--quiet", f"{wheel}[local]", cwd=work)
    return bin_dir


def test_the_wheel_holds_every_module_and_schema_of_the_tree(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(
        installed / "python",
        "-c",
        "import ledger, ledger.wire.avro as a; print(ledger.__file__); "
        "print(len(a.default_schemas().latest('Event').parsed['fields']))",
        cwd=tmp_path,
    ).stdout.split()
    site = Path(where[0]).parent.parent
    assert site.is_relative_to(installed.parent)  # the installed copy, not this tree
    assert int(where[1]) > 0
    shipped = [
        path.relative_to(ROOT)
        for folder in ("ledger", "consumers")
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    shipped += [Path("ledger/wire/schemas") / p.name for p in (ROOT / "schemas").glob("*.avsc")]
    missing = [str(path) for path in shipped if not (site / path).is_file()]
    assert not missing, f"not in the wheel: {missing}"


def test_every_command_answers_help(installed: Path, tmp_path: Path) -> None:
    for path in cli_paths():
        result = _run(installed / "ledger", *path.split()[1:], "--help", cwd=tmp_path)
        assert "Usage: ledger" in result.stdout, path


def test_a_new_user_generates_a_key_runs_the_demo_and_checks_its_bundle(
    installed: Path, tmp_path: Path
) -> None:
    generated = _run(
        installed / "ledger", "keys", "generate", "--id", "ci", "--out", "keys", cwd=tmp_path
    )
    assert (tmp_path / "keys" / "ci.key").exists(), generated.stderr
    demo = _run(installed / "ledger", "demo", cwd=tmp_path)
    assert "Evidence, checked offline" in demo.stdout
    checked = _run(
        installed / "ledger",
        "verify-bundle",
        "demo-evidence.json",
        "--trusted-key",
        "demo/keys/ledger.pub",
        cwd=tmp_path,
    )
    assert "OK" in checked.stderr
