"""Fuzz campaign: every parser of untrusted bytes, a million mutated inputs each.

The targets and their mutations are tests/fuzz_targets.py (the CI runs them a few hundred
times each in tests/test_fuzz_attacks.py). Each job builds its own seeds (real ledgers,
proofs, bundles) and runs its share of each target's inputs from its own random seed;
any exception other than a domain error is a finding, reported with its input (base64).

    python bench/fuzz.py [--inputs 1000000] [--jobs N] [--target NAME ...] [--json]

A benchmark, not a test: run it by hand; figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_targets import b64, build_targets


def _run(name: str, inputs: int, seed: int) -> dict[str, Any]:
    """``inputs`` inputs of target ``name`` from ``seed``: outcomes, and any findings."""
    import random

    with tempfile.TemporaryDirectory() as home:
        target = next(t for t in build_targets(Path(home)) if t.name == name)
        rng = random.Random(seed)
        outcomes: Counter[str] = Counter()
        findings: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        for _ in range(inputs):
            data = target.generate(rng)
            try:
                outcomes[target.run(data)] += 1
            except Exception as exc:  # a finding: anything but a domain error
                key = f"{type(exc).__name__}: {str(exc)[:120]}"
                found = findings.setdefault(
                    key,
                    {"count": 0, "input": b64(data), "traceback": traceback.format_exc()[-1500:]},
                )
                found["count"] += 1
        return {"seconds": time.perf_counter() - started, "outcomes": dict(outcomes),
                "findings": findings}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--target", action="append", help="only these targets")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        names = [t.name for t in build_targets(Path(home))]
    names = [n for n in names if not args.target or n in args.target]
    share = -(-args.inputs // args.jobs)
    report: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "python": platform.python_version(), "inputs": args.inputs,
                              "jobs": args.jobs, "targets": {}}  # fmt: skip
    with ProcessPoolExecutor(args.jobs) as pool:
        for name in names:
            started = time.perf_counter()
            parts = list(pool.map(_run, [name] * args.jobs, [share] * args.jobs,
                                  [args.seed + job for job in range(args.jobs)]))  # fmt: skip
            outcomes: Counter[str] = Counter()
            findings: dict[str, Any] = {}
            for part in parts:
                outcomes.update(part["outcomes"])
                findings.update(part["findings"])
            wall = time.perf_counter() - started
            total = sum(outcomes.values()) + sum(f["count"] for f in findings.values())
            report["targets"][name] = {
                "inputs": total, "wall_seconds": round(wall, 1),
                "per_second": round(total / wall), "outcomes": dict(outcomes.most_common()),
                "findings": findings,
            }  # fmt: skip
            summary = f"{len(outcomes)} outcomes, {len(findings)} findings"
            print(f"{name}: {total:,} inputs in {wall:,.0f} s ({total / wall:,.0f}/s), {summary}",
                  file=sys.stderr)  # fmt: skip
            for key, found in findings.items():
                print(f"  FINDING x{found['count']}: {key}", file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
