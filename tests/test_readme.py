"""The README works pasted in order: its shell blocks, run one after another in one shell
in an empty directory, against the bundled broker, exit 0.

A block preceded by ``<!-- readme: skip (REASON) -->`` is skipped, its reason printed. The
broker the README starts on 127.0.0.1:9092 (``ledger broker``, a block that runs until
stopped) is the test's own, on a free port: the address is the only text changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from consumer_helpers import REPO

from ledger.transport.settings import KafkaSettings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

README = REPO / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme: skip \((?P<skip>[^)]*)\) -->\n)?```sh\n(?P<body>.*?)```",
                    re.S)  # fmt: skip


def readme_blocks() -> list[tuple[str | None, str]]:
    """(the reason it is skipped, or None; the shell text) of each ```sh block, in order."""
    return [(m["skip"], m["body"]) for m in _BLOCK.finditer(README.read_text())]


def test_the_readme_marks_what_it_skips_and_runs_the_rest() -> None:
    blocks = readme_blocks()
    skipped = [reason for reason, _ in blocks if reason]
    assert skipped and all(reason.strip() for reason in skipped)
    assert len(blocks) - len(skipped) >= 6


def test_the_readme_runs_pasted_in_order(kafka: KafkaSettings, tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for n, (skip, body) in enumerate(readme_blocks(), 1):
        if skip:
            print(f"README block {n} skipped: {skip}")
            continue
        script += [f"echo '--- README block {n}' >&2", body.replace("127.0.0.1:9092",
                                                                     kafka.bootstrap)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LEDGER_TOPIC"] = kafka.topic  # a topic of this test's own on the shared broker
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, f"{result.stderr[-4000:]}\n{result.stdout[-2000:]}"
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "registry.acme.example/checkout@sha256:4f1c2b3a" in out  # asof names the image
    assert "approved by carol" in out
    assert (tmp_path / "bundle.json").exists() and (tmp_path / "entry-2.json").exists()
