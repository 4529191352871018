"""Benchmark: point-in-time queries (asof, snapshot, diff) over a large ledger.

1. builds (or reuses, see --db) a ledger of N genuine signed events over 2,000
   service/environment pairs (500 services x 4 environments) spread over one year: events
   are generated, sealed and verified in a process pool (one per core), and the main
   process feeds LedgerWriter.prepare/commit in large batches, keeping the query index
   (ledger.store.index) as the consumer does;
2. measures p50/p99 latency of ``asof`` (random service/env/instant), ``snapshot`` of a
   500-service environment and ``diff`` over random one-week windows, in-process (ledger.store.query
   over one LedgerReader) and over HTTP (the read-only API, uvicorn in a thread, httpx).

    python bench/query.py [--events 10000000] [--db /tmp/bench-query.duckdb] [--json]

A benchmark, not a test: run it by hand; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import httpx
import uvicorn
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emit import ACTORS, TYPE_WEIGHTS, event, keyring_for, make_signers

from ledger.api.app import create_app
from ledger.log.chain import NO_KEYRING, Witness
from ledger.store.batch import Accepted, Received
from ledger.store.query import asof, diff, snapshot
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.columns import DecodedColumns, decoded_columns
from ledger.wire.events import event_from_mapping
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

SERVICES = 500
ENVIRONMENTS = ("dev", "staging", "canary", "prod")  # 500 x 4 = 2,000 pairs
PAIRS = SERVICES * len(ENVIRONMENTS)
START = datetime(2025, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=365)
CHUNK = 10_000  # events per pool task
REF_BUCKET = 20_000  # events sharing a change ref per pair (about ten events of one pair)
TOKEN = "bench-query-token"


def _raw(rng: random.Random, n: int, total: int, kind: str) -> tuple[str, dict[str, Any]]:
    """(signing key id, JSON-shaped event) for event number ``n`` of ``total``."""
    pair = rng.randrange(PAIRS)
    service, env = f"svc-{pair % SERVICES:03d}", ENVIRONMENTS[pair // SERVICES]
    bucket = n // REF_BUCKET
    version = bucket + rng.randint(0, 1)
    actor = rng.choice(ACTORS)
    # Spread over a year, a little out of order (late arrivals are placed by time).
    when = START + SPAN * (n / total) + timedelta(seconds=rng.uniform(-3600, 3600))
    return event(rng, n, kind, service=service, env=env, when=when,
                 change_ref=f"CHG-{pair}-{bucket}", version=version, actor=actor)  # fmt: skip


_SIGNERS: dict[str, Signer] = {}
_RING: list[Keyring] = []


def _init_worker(pems: dict[str, bytes]) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for key_id, pem in pems.items():
        _SIGNERS[key_id] = Signer(key_id, load_pem_private_key(pem, None))  # type: ignore[arg-type]
    _RING.append(keyring_for(_SIGNERS))


def _sealed_chunk(task: tuple[int, int, int]) -> list[tuple[bytes, DecodedColumns]]:
    """Generate, seal and verify events ``start .. start + count - 1`` (in a worker)."""
    start, count, total = task
    rng = random.Random(start)
    kinds, weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())
    out = []
    for n in range(start, start + count):
        key, raw = _raw(rng, n, total, rng.choices(kinds, weights)[0])
        value = seal(event_from_mapping(raw), _SIGNERS[key])
        verified = verify_message(value, _RING[0], datetime.now(UTC))
        out.append((value, decoded_columns(verified.event, verified.key_id)))
    return out


def build(db: Path, total: int, batch: int) -> dict[str, Any]:
    """Write ``total`` signed, verified entries to a fresh ledger at ``db``."""
    partial = db.with_name(db.name + ".partial")
    partial.unlink(missing_ok=True)
    pems = {k: s.private_pem() for k, s in make_signers().items()}
    tasks = [(i, min(CHUNK, total - i), total) for i in range(0, total, CHUNK)]
    writer = LedgerWriter(partial, memory_limit="4GB")
    t0 = time.perf_counter()
    pending: list[Accepted] = []
    offset = 0

    def flush() -> None:
        writer.commit(writer.prepare(pending, {}))
        writer.cluster()  # the query index, kept as the consumer keeps it
        pending.clear()

    with ProcessPoolExecutor(
        os.cpu_count() or 1, initializer=_init_worker, initargs=(pems,)
    ) as pool:
        for chunk in pool.map(_sealed_chunk, tasks):
            for value, columns in chunk:
                received = Received(
                    "bench", 0, offset, None, value, writer.clock.now_us(), Witness.CONSUMER
                )
                pending.append(Accepted(received, columns, NO_KEYRING))
                offset += 1
            if len(pending) >= batch:
                flush()
                if offset % 500_000 < batch:
                    print(
                        f"  built {offset:,} / {total:,} ({time.perf_counter() - t0:.0f} s)",
                        file=sys.stderr,
                    )
        if pending:
            flush()
    writer.close()
    seconds = time.perf_counter() - t0
    partial.rename(db)
    info = {"events": total, "build_s": round(seconds, 1),
            "build_events_per_s": round(total / seconds), "batch": batch,
            "db_bytes": db.stat().st_size}  # fmt: skip
    _sidecar(db).write_text(json.dumps(info))
    return info


def _sidecar(db: Path) -> Path:
    return db.with_name(db.name + ".build.json")


def ensure_ledger(db: Path, total: int, batch: int) -> dict[str, Any]:
    """The build info of a ledger at ``db`` with ``total`` entries, building it if needed."""
    if db.exists() and _sidecar(db).exists():
        info: dict[str, Any] = json.loads(_sidecar(db).read_text())
        con = duckdb.connect(str(db), read_only=True)
        size = con.execute("SELECT count(*) FROM entries").fetchall()[0][0]
        con.close()
        if info.get("events") == total and size == total:
            # A ledger built before the query index existed gets it here, as the consumer
            # would add it on its next run.
            start = time.perf_counter()
            writer = LedgerWriter(db, memory_limit="4GB")
            indexed = writer.cluster()
            writer.close()
            if indexed:
                info["index_s"] = round(time.perf_counter() - start, 1)
                _sidecar(db).write_text(json.dumps(info))
            return info | {"reused": True}
    db.unlink(missing_ok=True)
    return build(db, total, batch) | {"reused": False}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(_pct(ms, 0.5), 2), "p99_ms": round(_pct(ms, 0.99), 2),
            "max_ms": round(max(ms), 2)}  # fmt: skip


def _timed(calls: list[Callable[[], str]], warmup: int = 3) -> tuple[dict[str, float], str]:
    """Latency summary of the calls, and a digest of their answers."""
    for call in calls[:warmup]:
        call()
    digest = hashlib.sha256()
    seconds = []
    for call in calls:
        t0 = time.perf_counter()
        answer = call()
        seconds.append(time.perf_counter() - t0)
        digest.update(answer.encode())
    return _summary(seconds), digest.hexdigest()[:16]


def _workload(seed: int, n_asof: int, n_snap: int, n_diff: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)

    def instant() -> datetime:
        return START + timedelta(seconds=rng.uniform(0, SPAN.total_seconds()))

    def week() -> tuple[datetime, datetime]:
        t1 = START + timedelta(seconds=rng.uniform(0, (SPAN - timedelta(days=7)).total_seconds()))
        return t1, t1 + timedelta(days=7)

    return {
        "asof": [(f"svc-{rng.randrange(SERVICES):03d}", rng.choice(ENVIRONMENTS), instant())
                 for _ in range(n_asof)],
        "snapshot": [instant() for _ in range(n_snap)],
        "diff": [week() for _ in range(n_diff)],
    }  # fmt: skip


def _cursor_factory(con: duckdb.DuckDBPyConnection) -> Callable[[], duckdb.DuckDBPyConnection]:
    lock = threading.Lock()

    def cursor() -> duckdb.DuckDBPyConnection:
        with lock:
            cur = con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    return cursor


def _json(query: Callable[..., BaseModel], *args: Any) -> str:
    return query(*args).model_dump_json()


def in_process(db: Path, work: dict[str, list[Any]], env: str) -> dict[str, Any]:
    with LedgerReader(db) as reader:
        asof_s, asof_d = _timed([
            partial(_json, asof, reader, s, e, t)
            for s, e, t in work["asof"]
        ])  # fmt: skip
        snap_s, snap_d = _timed([
            partial(_json, snapshot, reader, env, t) for t in work["snapshot"]
        ], warmup=1)  # fmt: skip
        diff_s, diff_d = _timed([
            partial(_json, diff, reader, env, a, b) for a, b in work["diff"]
        ], warmup=1)  # fmt: skip
    return {"asof": asof_s, "snapshot": snap_s, "diff": diff_s,
            "answers": {"asof": asof_d, "snapshot": snap_d, "diff": diff_d}}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _served(db: Path) -> Iterator[str]:
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET enable_progress_bar = false")
    port = _free_port()
    config = uvicorn.Config(create_app(_cursor_factory(con), TOKEN), host="127.0.0.1",
                            port=port, log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        con.close()


def over_http(db: Path, work: dict[str, list[Any]], env: str) -> dict[str, Any]:
    with (
        _served(db) as base,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
        ) as client,
    ):

        def get(path: str, params: dict[str, str]) -> str:
            response = client.get(path, params=params)
            response.raise_for_status()
            return response.text

        asof_s, _ = _timed([
            partial(get, "/v1/asof", {"service": s, "env": e, "at": t.isoformat()})
            for s, e, t in work["asof"]
        ])  # fmt: skip
        snap_s, _ = _timed([
            partial(get, "/v1/snapshot", {"env": env, "at": t.isoformat()})
            for t in work["snapshot"]
        ], warmup=1)  # fmt: skip
        diff_s, _ = _timed([
            partial(get, "/v1/diff", {"env": env, "from": a.isoformat(), "to": b.isoformat()})
            for a, b in work["diff"]
        ], warmup=1)  # fmt: skip
    return {"asof": asof_s, "snapshot": snap_s, "diff": diff_s}


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = Path(args.db)
    info = ensure_ledger(db, args.events, args.batch)
    env = "prod"
    work = _workload(args.seed, args.asof, args.snapshots, args.diffs)
    local = in_process(db, work, env)
    http = over_http(db, work, env)
    met = {
        "asof_p99_le_20ms": {"in_process": local["asof"]["p99_ms"] <= 20,
                             "http": http["asof"]["p99_ms"] <= 20},
        "snapshot_p99_le_200ms": {"in_process": local["snapshot"]["p99_ms"] <= 200,
                                  "http": http["snapshot"]["p99_ms"] <= 200},
    }  # fmt: skip
    return {
        "benchmark": "query", "events": args.events, "pairs": PAIRS,
        "snapshot_env": f"{env} ({SERVICES} services)", "build": info,
        "in_process": local, "http": http, "targets_met": met,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "duckdb": duckdb.__version__,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000_000, help="ledger size")
    parser.add_argument(
        "--db",
        default="/tmp/bench-query.duckdb",
        help="ledger file, reused when it holds --events entries",
    )
    parser.add_argument("--batch", type=int, default=50_000, help="entries per commit")
    parser.add_argument("--asof", type=int, default=200, help="asof queries")
    parser.add_argument("--snapshots", type=int, default=20, help="snapshot queries")
    parser.add_argument("--diffs", type=int, default=20, help="diff queries")
    parser.add_argument("--seed", type=int, default=7, help="seed of the query workload")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    build_info = result["build"]
    print(f"ledger      {result['events']:,} events over {PAIRS:,} service/env pairs, "
          f"{build_info['db_bytes'] / 1e9:.2f} GB; build {build_info['build_s']:.0f} s "
          f"({build_info['build_events_per_s']:,} events/s"
          f"{', reused' if build_info['reused'] else ''})")  # fmt: skip
    for where in ("in_process", "http"):
        for query in ("asof", "snapshot", "diff"):
            s = result[where][query]
            print(
                f"{where:<10}  {query:<8}  n={s['n']:<4} p50 {s['p50_ms']:>8.2f} ms  "
                f"p99 {s['p99_ms']:>8.2f} ms  max {s['max_ms']:>8.2f} ms"
            )
    print(f"answers     {result['in_process']['answers']}")
    print(f"targets     {result['targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
