"""Benchmark: `ledger check` over a 90-day production window, and `ledger gate`.

1. builds (or reuses, see --db) the query benchmark's ledger (``bench/query.py``'s builder:
   N genuine signed events over 500 services x dev/staging/canary/prod, one year from
   2025-11-01, with the query index);
2. runs :func:`ledger.store.check.check` in process over the 90 days of ``prod`` that end at
   the ledger's last event time: one warm-up run, then --runs runs, each in a fresh spawned
   process (so one run's peak RSS cannot hide another's): wall time, time per stage (the
   ``progress`` callback's messages: the time from each to the next, the last to the end),
   the JSON dump of the report, facts read, findings by rule, cited entries and the child's
   peak RSS (``VmHWM``, else ``ru_maxrss``);
3. runs the command once end to end, ``ledger check --db DB --env prod --from ... --to ...
   --json > /dev/null``, under ``/usr/bin/time -v`` when it exists (wall, max RSS);
4. measures ``ledger gate`` in process (:func:`ledger.store.gate.gate`): p50/p99 over
   --gates random proposed deployments to prod (a service and change ref from the ledger's
   prod grants, an image seen in the ledger, a random actor), with the policy in force
   (this ledger records none: promotion unchecked) and with ``preprod`` given;
5. times the per-entry signature check ``ledger check`` runs on each cited entry
   (:func:`ledger.wire.verify.verify_entry`) over a sample of freshly signed events: the
   bench ledger's entries are judged under no recorded keyring, so ``check`` re-verifies
   none of them, while a ledger the consumer wrote would have each cited entry checked.

    python bench/check.py [--events 10000000] [--db /tmp/bench-query.duckdb] [--runs 3] [--json]

A benchmark, not a test: run it by hand; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ledger.store.check import check
from ledger.store.gate import ProposedChange, gate
from ledger.store.reader import LedgerReader

# The query benchmark's builder and generator (bench/query.py, bench/emit.py) are imported
# where they are used: each measured check runs in a spawned process that imports this
# module, and should hold what `ledger check` holds, not uvicorn, httpx or Kafka besides.
sys.path.insert(0, str(Path(__file__).resolve().parent))

ENV = "prod"
WINDOW = timedelta(days=90)
PREPROD = ["staging", "canary"]
STAGES = {
    "reading": "read",  # the SQL of the period's facts, and building the Fact objects
    "judging": "judge",  # the rules, promotion and release lookups, late arrivals, sort
    "checking": "integrity",  # cited entries' signatures, checkpoint, the CheckReport
}
"""The ``progress`` messages of :func:`ledger.store.check.check`, by first word; the time
before the first is ``setup`` (the window check, the policy records)."""
SIGNATURE_SAMPLE = 2_000


def _window(db: Path) -> tuple[datetime, datetime]:
    """The 90 days of ``prod`` that end at the ledger's last event time."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute("SELECT max(time) FROM entries WHERE environment = $env",
                          {"env": ENV}).fetchall()  # fmt: skip
    finally:
        con.close()
    end: datetime = row[0][0].astimezone(UTC)
    return end - WINDOW, end


def _peak_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM``, which starts afresh at exec, rather than
    ``ru_maxrss``, which Linux carries over from the forked parent (the builder's)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _check_once(db: str, start: datetime, end: datetime) -> dict[str, Any]:
    """One `ledger check` in this (fresh) process: wall, stages, what it found, peak RSS."""
    baseline_kib = _peak_kib()
    marks: list[tuple[float, str]] = []
    with LedgerReader(Path(db)) as reader:
        t0 = time.perf_counter()
        report = check(
            reader, ENV, start, end, progress=lambda s: marks.append((time.perf_counter(), s))
        )
        t1 = time.perf_counter()
    dumped = report.model_dump(mode="json")  # what the command prints (then json.dumps)
    t2 = time.perf_counter()
    stages = {"setup": marks[0][0] - t0 if marks else t1 - t0}
    for (at, stage), (following, _) in zip(marks, [*marks[1:], (t1, "")], strict=True):
        stages[STAGES.get(stage.split()[0], stage)] = following - at
    judging = next((s for _, s in marks if s.startswith("judging")), "")
    facts = re.match(r"judging ([\d,]+) facts of ([\d,]+) services", judging)
    integrity = report.integrity
    return {
        "wall_s": round(t1 - t0, 3),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "dump_s": round(t2 - t1, 3),
        "facts_read": int(facts.group(1).replace(",", "")) if facts else None,
        "services": int(facts.group(2).replace(",", "")) if facts else None,
        "findings": len(report.findings),
        "by_rule": {rule: n for rule, n in report.counts.items() if n},
        "cited_entries": integrity.cited_entries,
        "signatures_verified": integrity.signatures_verified,
        "json_bytes": len(json.dumps(dumped, default=str)),
        "peak_rss_mb": round(_peak_kib() / 1024),
        "rss_before_mb": round(baseline_kib / 1024),
    }


def in_process(db: Path, start: datetime, end: datetime, runs: int) -> list[dict[str, Any]]:
    """One warm-up and ``runs`` measured checks, each in a fresh spawned process."""
    results = []
    for i in range(runs + 1):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            one = pool.submit(_check_once, str(db), start, end).result()
        if i:
            results.append(one | {"load_before": round(os.getloadavg()[0], 2)})
    return results


def _time_v(stderr: str, label: str) -> str | None:
    match = re.search(rf"^\s*{re.escape(label)}: (.+)$", stderr, re.MULTILINE)
    return match.group(1).strip() if match else None


def _clock(value: str) -> float:
    """``/usr/bin/time``'s elapsed time, ``[h:]m:ss.ss``, in seconds."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def command(db: Path, start: datetime, end: datetime) -> dict[str, Any]:
    """The command once, end to end: ``ledger check ... --json > /dev/null``."""
    ledger = shutil.which("ledger", path=str(Path(sys.executable).parent)) or "ledger"
    argv = [ledger, "check", "--db", str(db), "--env", ENV, "--from", start.isoformat(),
            "--to", end.isoformat(), "--json"]  # fmt: skip
    timer = shutil.which("time", path="/usr/bin")
    t0 = time.perf_counter()
    done = subprocess.run([timer, "-v", *argv] if timer else argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {"argv": " ".join(argv[1:]), "exit": done.returncode}
    elapsed = _time_v(done.stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss)")
    rss = _time_v(done.stderr, "Maximum resident set size (kbytes)")
    if timer and elapsed and rss:
        cpu = {k: float(_time_v(done.stderr, f"{k.title()} time (seconds)") or 0)
               for k in ("user", "system")}  # fmt: skip
        result |= {"wall_s": round(_clock(elapsed), 2), "max_rss_mb": round(int(rss) / 1024),
                   "cpu_s": cpu}  # fmt: skip
    else:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result |= {"wall_s": round(wall, 2), "max_rss_mb": round(children / 1024)}
    if done.returncode not in (0, 1):  # 1: a finding at or above --fail-on (high)
        result["stderr"] = done.stderr[-2000:]
    return result


def _gate_workload(reader: LedgerReader, n: int, seed: int) -> list[ProposedChange]:
    """Deployments to prod proposed by a random actor, for the service and change ref of a
    random prod grant, half with the image it names (when it names one), half with an image
    seen anywhere in the ledger."""
    from emit import ACTORS

    rng = random.Random(seed)
    grants = reader.con.execute(
        "SELECT service, change_ref, image FROM facts WHERE environment = $env "
        "AND type = 'approval.granted' AND change_ref IS NOT NULL",
        {"env": ENV},
    ).fetchall()
    images = [image for (image,) in reader.con.execute(
        "SELECT image FROM facts WHERE type = 'deployment.succeeded' "
        "USING SAMPLE reservoir(2000 ROWS) REPEATABLE (7)").fetchall()]  # fmt: skip
    changes = []
    for _ in range(n):
        service, ref, granted = rng.choice(grants)
        image = granted if granted and rng.random() < 0.5 else rng.choice(images)
        changes.append(ProposedChange(service, ENV, rng.choice(ACTORS), ref, image=image))
    return changes


def gates(db: Path, n: int, seed: int) -> dict[str, Any]:
    """p50/p99 of ``gate`` in process, with the policy in force and with ``preprod`` given."""
    from query import _summary

    out: dict[str, Any] = {}
    with LedgerReader(db) as reader:
        work = _gate_workload(reader, n, seed)
        for label, preprod in (("policy", None), ("preprod", PREPROD)):
            for change in work[:5]:
                gate(reader, change, preprod)
            seconds, allowed, approved = [], 0, 0
            for change in work:
                t0 = time.perf_counter()
                answer = gate(reader, change, preprod)
                seconds.append(time.perf_counter() - t0)
                allowed += answer.allowed
                approved += answer.approved
            out[label] = _summary(seconds) | {"allowed": allowed, "approved": approved}
    return out


def signature_cost(n: int) -> dict[str, Any]:
    """µs per cited entry of ``check``'s signature check (``verify_entry``: decode, compare
    the columns, Ed25519, authorization), over ``n`` freshly signed events on one core."""
    from emit import keyring_for, make_signers
    from query import _raw

    from ledger.transport.producer import seal
    from ledger.wire.columns import decoded_columns
    from ledger.wire.events import event_from_mapping
    from ledger.wire.verify import verify_entry, verify_message

    signers = make_signers()
    ring = keyring_for(signers)
    rng = random.Random(11)
    now = datetime.now(UTC)
    entries = []
    for i in range(n):
        key, raw = _raw(rng, i, n, rng.choice(["deployment.succeeded", "mutation.applied",
                                               "approval.granted"]))  # fmt: skip
        value = seal(event_from_mapping(raw), signers[key])
        verified = verify_message(value, ring, now)
        entries.append((i + 1, value, decoded_columns(verified.event, verified.key_id)))
    t0 = time.perf_counter()
    failures = [verify_entry(seq, value, stored, ring, now) for seq, value, stored in entries]
    seconds = time.perf_counter() - t0
    assert failures == [None] * n, failures[:3]
    return {"sample": n, "us_per_entry": round(seconds / n * 1e6, 1)}


def _code() -> dict[str, Any]:
    """Which code was measured: the commit, and a digest of ledger/'s sources as they are
    (others may be editing the tree: uncommitted changes count)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted((root / "ledger").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return {"commit": head or None, "ledger_sources_sha256": digest.hexdigest()[:16]}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def run(args: argparse.Namespace) -> dict[str, Any]:
    from query import ensure_ledger

    code = _code()
    db = Path(args.db)
    info = ensure_ledger(db, args.events, args.batch)
    start, end = _window(db)
    runs = in_process(db, start, end, args.runs)
    cli = command(db, start, end)
    gate_figures = gates(db, args.gates, args.seed)
    signatures = signature_cost(SIGNATURE_SAMPLE)
    walls = [r["wall_s"] for r in runs]
    stages = {
        stage: round(_median([r["stages_s"].get(stage, 0.0) for r in runs]), 3)
        for stage in runs[0]["stages_s"]
    }
    cited = runs[-1]["cited_entries"]
    cores = os.cpu_count() or 1
    limit_s = 3.0 if args.events <= 1_000_000 else 10.0
    peak = max(r["peak_rss_mb"] for r in runs)
    if _code() != code:
        code["changed_during_run"] = True
    met = {
        f"check_le_{limit_s:g}s": {"in_process_max": max(walls) <= limit_s,
                                   "command": cli["wall_s"] <= limit_s},
        "check_rss_le_1GB": {"in_process": peak <= 1024, "command": cli["max_rss_mb"] <= 1024},
        "gate_p99_le_50ms": gate_figures["policy"]["p99_ms"] <= 50
        and gate_figures["preprod"]["p99_ms"] <= 50,
    }  # fmt: skip
    return {
        "benchmark": "check", "events": args.events, "build": info, "environment": ENV,
        "from": start.isoformat(), "to": end.isoformat(),
        "check": {"runs": runs, "wall_p50_s": round(_median(walls), 3),
                  "wall_max_s": round(max(walls), 3), "stages_p50_s": stages,
                  "peak_rss_mb": peak},
        "command": cli, "gate": gate_figures,
        "signature_check": signatures | {
            "cited_entries": cited,
            "projected_one_core_s": round(cited * signatures["us_per_entry"] / 1e6, 2),
            "projected_pool_s": round(cited * signatures["us_per_entry"] / 1e6 / cores, 2)},
        "targets_met": met, "code": code, "cpus": cores, "python": platform.python_version(),
        "duckdb": duckdb.__version__,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000_000, help="ledger size")
    parser.add_argument(
        "--db",
        default="/tmp/bench-query.duckdb",
        help="ledger file (bench/query.py's default), reused when it holds --events entries",
    )
    parser.add_argument("--batch", type=int, default=50_000, help="entries per commit (build)")
    parser.add_argument("--runs", type=int, default=3, help="measured checks, after a warm-up")
    parser.add_argument("--gates", type=int, default=200, help="proposed changes for gate")
    parser.add_argument("--seed", type=int, default=7, help="seed of the gate workload")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    build_info, figures = result["build"], result["check"]
    print(f"ledger      {result['events']:,} events, {build_info['db_bytes'] / 1e9:.2f} GB"
          f"{' (reused)' if build_info['reused'] else ''}; "
          f"{ENV} from {result['from']} to {result['to']}")  # fmt: skip
    for i, one in enumerate(figures["runs"], 1):
        stages = ", ".join(f"{k} {v:.2f}" for k, v in one["stages_s"].items())
        print(f"check #{i}    {one['wall_s']:.2f} s ({stages}; dump {one['dump_s']:.2f}), "
              f"{one['facts_read']:,} facts, {one['findings']:,} findings, "
              f"{one['cited_entries']:,} cited, peak RSS {one['peak_rss_mb']} MB")  # fmt: skip
    print(f"by rule     {figures['runs'][-1]['by_rule']}")
    cli = result["command"]
    print(f"command     {cli['wall_s']:.2f} s, max RSS {cli['max_rss_mb']} MB, exit {cli['exit']}")
    for label, s in result["gate"].items():
        print(f"gate        {label:<8} n={s['n']} p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f}"
              f" ms  max {s['max_ms']:.2f} ms  approved {s['approved']}")  # fmt: skip
    sig = result["signature_check"]
    print(
        f"signatures  {sig['us_per_entry']} us per cited entry on one core: "
        f"{sig['projected_one_core_s']} s for {sig['cited_entries']:,} "
        f"({sig['projected_pool_s']} s on {result['cpus']} workers; not checked here)"
    )
    print(f"targets     {result['targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
