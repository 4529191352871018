"""Benchmark: `ledger verify` over a large ledger, stage by stage.

1. builds (or reuses, see --db) a ledger of N entries with signed checkpoints and a witness
   file: the events of the ledger ``bench/query.py`` builds (--source, 1,000,000 entries),
   re-signed with keys kept beside the new ledger (``query.py`` does not keep its keys, so
   its signatures cannot be checked later), chained by LedgerWriter.prepare/commit in
   batches of 50,000 with a checkpoint signed after each;
2. runs :func:`ledger.store.integrity.verify_ledger` on it, timing each stage: the hash and link
   checks (SQL), the tree check (SQL), the checkpoints, and the per-entry signature,
   authorization and decoded-column checks in a pool of one process per core;
3. measures, in the same run, the single-core rate of the raw Ed25519 check (PyNaCl
   ``VerifyKey.verify`` over the PAE of the same envelopes) and, for the breakdown, the
   single-core rate of the whole per-entry check.

    python bench/query.py --events 1000000 --db /tmp/bq-1m.duckdb   # the source, once
    python bench/verify.py [--source /tmp/bq-1m.duckdb] [--db /tmp/bench-verify.duckdb] [--json]

A benchmark, not a test: run it by hand; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emit import keyring_for, make_signers

from ledger.log.chain import NO_KEYRING, Witness
from ledger.log.checkpoint import TrustedKey, split_notes
from ledger.store.batch import Accepted, Received
from ledger.store.integrity import ENTRIES_SQL, verify_ledger
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.witness import append_note
from ledger.wire.columns import DecodedColumns
from ledger.wire.envelope import Envelope, pae
from ledger.wire.keyring import Keyring, Keyrings, Signer, load_public_key
from ledger.workers import check_entries

BATCH = 50_000
SAMPLE = 20_000  # entries timed on one core (raw Ed25519, whole per-entry check)
CHECKPOINT_KEY = "ledger"
_COLUMNS = ", ".join(f for f in DecodedColumns._fields if f != "time_us")


def _files(db: Path) -> dict[str, Path]:
    """Where the keys, keyring and witness of a bench ledger are kept."""
    home = db.with_name(db.name + ".keys")
    return {"home": home, "keyring": home / "keyring.json", "witness": home / "witness",
            "checkpoint_key": home / f"{CHECKPOINT_KEY}.key",
            "info": home / "build.json"}  # fmt: skip


def build(source: Path, db: Path) -> dict[str, Any]:
    """Re-sign every event of ``source`` with new, kept keys and chain them into ``db``."""
    files = _files(db)
    shutil.rmtree(files["home"], ignore_errors=True)
    files["home"].mkdir(parents=True)
    db.unlink(missing_ok=True)
    signers = make_signers()
    ring = keyring_for(signers)
    ring.save(files["keyring"])
    for key_id, signer in signers.items():
        (files["home"] / f"{key_id}.key").write_bytes(signer.private_pem())
    ledger_key = Signer.generate(CHECKPOINT_KEY)
    files["checkpoint_key"].write_bytes(ledger_key.private_pem())
    (files["home"] / f"{CHECKPOINT_KEY}.pub").write_bytes(ledger_key.public_pem())
    t0 = time.perf_counter()
    src = duckdb.connect(str(source), read_only=True)
    writer = LedgerWriter(db, memory_limit="4GB", checkpoint_signer=ledger_key)
    try:
        rows = src.sql(
            f"SELECT envelope, {_COLUMNS}, epoch_us(time) FROM entries ORDER BY seq"
        ).to_arrow_reader(BATCH)
        offset = 0
        for batch in rows:
            pending = []
            for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                envelope, *columns = row
                fields = dict(
                    zip(
                        DecodedColumns._fields[:2] + DecodedColumns._fields[3:],
                        columns[:-1],
                        strict=True,
                    )
                )
                decoded = DecodedColumns(**fields, time_us=columns[-1])
                payload = Envelope.from_bytes(envelope).payload
                value = Envelope.sign(payload, signers[decoded.key_id]).to_bytes()
                received = Received(
                    "bench", 0, offset, None, value, writer.clock.now_us(), Witness.CONSUMER
                )
                pending.append(Accepted(received, decoded, NO_KEYRING))
                offset += 1
            note = writer.commit(writer.prepare(pending, {}), checkpoint=True)
            if note is not None:
                append_note(files["witness"], note)
            print(f"  built {offset:,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    finally:
        writer.close()
        src.close()
    info = {"source": str(source), "events": offset, "build_s": round(time.perf_counter() - t0)}
    files["info"].write_text(json.dumps(info))
    return info


def ensure_ledger(source: Path, db: Path) -> dict[str, Any]:
    files = _files(db)
    if db.exists() and files["info"].exists():
        info: dict[str, Any] = json.loads(files["info"].read_text())
        return info | {"reused": True}
    return build(source, db) | {"reused": False}


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def verify_once(db: Path, workers: int) -> dict[str, Any]:
    """One full `ledger verify` (keyring, trusted key, witness file), timed per stage; the
    CPU seconds of the SQL stages are this process's (DuckDB's threads included)."""
    files = _files(db)
    ring = Keyring.load(files["keyring"])
    pub = files["home"] / f"{CHECKPOINT_KEY}.pub"
    trusted = TrustedKey(CHECKPOINT_KEY, load_public_key(pub))
    notes = split_notes(files["witness"].read_text())
    external = [(f"witness#{i}", note) for i, note in enumerate(notes, 1)]
    cpu: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage in ("chain", "tree"):
            cpu[stage] = _cpu_self() - cpu.get(stage, 0.0) if done else _cpu_self()

    with LedgerReader(db) as reader:
        t0 = time.perf_counter()
        report = verify_ledger(reader, ring, trusted=trusted, external=external,
                               workers=workers, progress=progress).check()  # fmt: skip
        total = time.perf_counter() - t0
    size, timings = report.size, report.timings
    return {
        "ok": report.ok, "size": size, "checkpoints": [report.checkpoints_stored,
                                                       report.checkpoints_external],
        "seconds": {**timings, "total": round(total, 2)},
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "hash_link_per_s": round(size / timings["chain"]),
        "tree_per_s": round(size / timings["tree"]),
        "signatures_per_s": round(size / timings["signatures"]),
        "load_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def single_core(db: Path) -> dict[str, Any]:
    """On one core, over the first SAMPLE entries: the raw Ed25519 rate (PyNaCl over each
    envelope's PAE, keys resolved beforehand) and the whole per-entry check's rate."""
    ring = Keyring.load(_files(db)["keyring"])
    with LedgerReader(db) as reader:
        batch = reader.con.sql(ENTRIES_SQL, params={"bound": SAMPLE + 1}).to_arrow_table()
    signed = []
    for value in batch.column("envelope").to_pylist():
        envelope = Envelope.from_bytes(value)
        signature = envelope.signatures[0]
        key = nacl.signing.VerifyKey(ring.keys[signature.keyid].public_raw)
        signed.append((key, pae(envelope.payload_type, envelope.payload), signature.sig))
    t0 = time.perf_counter()
    for key, message, sig in signed:
        key.verify(message, sig)
    raw = time.perf_counter() - t0
    batches = batch.to_batches(10_000)
    t0 = time.perf_counter()
    failures = [check_entries(b, Keyrings(default=ring)) for b in batches]
    whole = time.perf_counter() - t0
    assert failures == [None] * len(batches)
    return {"sample": batch.num_rows, "ed25519_per_s": round(batch.num_rows / raw),
            "entry_check_per_s": round(batch.num_rows / whole)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.db)
    info = ensure_ledger(Path(args.source), db)
    cores = os.cpu_count() or 1
    runs = []
    for _ in range(args.runs):
        load_before = round(os.getloadavg()[0], 2)
        one = {"load_before": load_before, **single_core(db), **verify_once(db, cores)}
        one["signatures_vs_raw"] = round(
            one["signatures_per_s"] / (cores * one["ed25519_per_s"]), 3
        )
        one["pool_efficiency"] = round(
            one["signatures_per_s"] / (cores * one["entry_check_per_s"]), 3
        )
        runs.append(one)
    median = {
        key: statistics.median(r[key] for r in runs)
        for key in ("hash_link_per_s", "tree_per_s", "signatures_per_s", "ed25519_per_s",
                    "entry_check_per_s", "signatures_vs_raw", "pool_efficiency")
    }  # fmt: skip
    return {
        "benchmark": "verify", "ledger": info, "cores": cores, "runs": runs, "median": median,
        "targets_met": {
            "hash_link_ge_1M_per_s": median["hash_link_per_s"] >= 1_000_000,
            "signatures_ge_0.9_x_cores_x_ed25519": median["signatures_vs_raw"] >= 0.9,
        },
        "python": platform.python_version(), "duckdb": duckdb.__version__,
        "pynacl": nacl.__version__,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--source",
        default="/tmp/bq-1m.duckdb",
        help="ledger whose events are re-signed (built by bench/query.py)",
    )
    parser.add_argument(
        "--db",
        default="/tmp/bench-verify.duckdb",
        help="bench ledger, reused when present (keys in DB.keys/)",
    )
    parser.add_argument("--runs", type=int, default=2, help="full verifications; medians")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for i, one in enumerate(result["runs"], 1):
        print(
            f"run {i}: load {one['load_before']} -> {one['load_after']}; "
            f"seconds {one['seconds']}; cpu {one['cpu_seconds']}"
        )
        print(
            f"  hash+link {one['hash_link_per_s']:>9,}/s   tree {one['tree_per_s']:>9,}/s   "
            f"signatures {one['signatures_per_s']:>7,}/s"
        )
        print(
            f"  one core: ed25519 {one['ed25519_per_s']:,}/s, whole entry check "
            f"{one['entry_check_per_s']:,}/s; signatures / (cores x ed25519) "
            f"{one['signatures_vs_raw']}, pool efficiency {one['pool_efficiency']}"
        )
    print(f"median      {result['median']}")
    print(f"targets     {result['targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
