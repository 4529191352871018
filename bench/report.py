"""Benchmark: `ledger report --format html` over a 90-day production window.

1. builds (or reuses, see --db) the query benchmark's ledger (``bench/query.py``'s builder);
2. runs the command end to end, ``ledger report --db DB --env prod --from … --to …
   --format html --out FILE`` (the findings beyond the HTML's top 50 per rule go beside it,
   as CSV and JSON), --runs times, under ``/usr/bin/time -v`` when it exists: wall time and
   peak RSS of the whole command, interpreter start included; and the stages the command
   reports (``report: …`` lines on stderr, timed as they arrive).

    python bench/report.py [--events 1000000] [--db /tmp/bc-1m.duckdb] [--runs 3] [--json]

A benchmark, not a test: run it by hand; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

ENV = "prod"
WINDOW = timedelta(days=90)


def _window(db: Path) -> tuple[str, str]:
    """The 90 days of ``prod`` that end at the ledger's last event time (RFC 3339)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        [(last,)] = con.execute(
            "SELECT max(time) FROM entries WHERE environment = $env", {"env": ENV}
        ).fetchall()
    finally:
        con.close()
    return (last - WINDOW).isoformat(), last.isoformat()


def _run(db: Path, start: str, end: str, out: Path) -> dict[str, Any]:
    """One `ledger report` run: wall, peak RSS (KiB) and when each stage began."""
    command = [sys.executable, "-m", "ledger", "report", "--db", str(db), "--env", ENV,
               "--from", start, "--to", end, "--format", "html", "--out", str(out)]  # fmt: skip
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if timer:
        command = [timer, "-v", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    began = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)  # fmt: skip
    assert proc.stderr is not None
    stages: list[tuple[str, float]] = []
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("report: "):
            stages.append((line[8:].strip(), round(time.perf_counter() - began, 2)))
    code = proc.wait()
    wall = time.perf_counter() - began
    if code != 0:
        raise SystemExit(f"ledger report exited {code}:\n{''.join(lines[-20:])}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", "".join(lines))
    return {"wall_s": round(wall, 2), "max_rss_kib": int(rss[1]) if rss else None,
            "stages": stages, "html_bytes": out.stat().st_size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/bc-1m.duckdb"))
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from query import ensure_ledger  # the query benchmark's builder

    build = ensure_ledger(args.db, args.events, args.batch)
    start, end = _window(args.db)
    with tempfile.TemporaryDirectory() as folder:
        runs = [_run(args.db, start, end, Path(folder) / f"report-{n}.html")
                for n in range(args.runs)]  # fmt: skip
    peak = max((r["max_rss_kib"] or 0) for r in runs)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "ledger": {"events": args.events, "db": str(args.db), "build": build},
        "window": {"from": start, "to": end},
        "runs": runs,
        "wall_s": sorted(r["wall_s"] for r in runs),
        "max_rss_kib": peak,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ledger report --format html, 90 days of {ENV} at {args.events:,} events: "
              f"wall {result['wall_s']} s, peak RSS {peak / 1024:.0f} MiB")  # fmt: skip
        for r in runs:
            print("  stages:", ", ".join(f"{name} @{at}s" for name, at in r["stages"]))


if __name__ == "__main__":
    main()
