"""Benchmark: the ledger consumer against a bare kafka-python consumer, on the same topic.

1. signs N events (a process per core) and produces them to a fresh 3-partition topic;
2. (a) a bare kafka-python consumer reads the whole topic (assign, seek to beginning, poll,
   count): the rate Kafka and the client allow on this machine;
3. (b) the ledger consumer ingests the topic into a fresh DuckDB ledger, verifying every
   signature: time from start to its last commit, in a child process of its own so that
   its peak RSS (and its verification workers') is its own;
4. checks the ledger holds exactly N entries, seq 1..N, all ids distinct.

    python bench/ingest.py [--events 200000] [--bootstrap HOST:PORT] [--workers 2] [--json]

A benchmark, not a test: run it by hand; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emit import broker_bootstrap, build_events, keyring_for, make_signers

from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.keyring import Signer
from ledger.wire.verify import verify_message


def _seal_range(args: tuple[int, int, dict[str, bytes]]) -> list[tuple[bytes, bytes]]:
    start, count, pems = args
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    signers = {k: Signer(k, load_pem_private_key(p, None)) for k, p in pems.items()}  # type: ignore[arg-type]
    return [(e.partition_key, seal(e, signers[k])) for k, e in build_events(count, start=start)]


def produce(settings: KafkaSettings, n: int, signers: dict[str, Signer]) -> float:
    """Sign N events across the cores and produce them; returns the produce seconds."""
    pems = {k: s.private_pem() for k, s in signers.items()}
    cores = os.cpu_count() or 1
    step = -(-n // cores)
    with ProcessPoolExecutor(cores) as pool:
        parts = pool.map(_seal_range, [(i, min(step, n - i), pems) for i in range(0, n, step)])
        messages = [m for part in parts for m in part]
    producer = KafkaProducer(
        **settings.client_config(),
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        enable_idempotence=True,
    )
    t0 = time.perf_counter()
    for key, value in messages:
        producer.send(settings.topic, key=key, value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_child(params: dict[str, Any], out: Any) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=params["bootstrap"], enable_auto_commit=False, group_id=None
    )
    parts = [
        TopicPartition(params["topic"], p)
        for p in consumer.partitions_for_topic(params["topic"]) or ()
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    count, t0 = 0, time.perf_counter()
    while count < params["n"]:
        count += sum(len(r) for r in consumer.poll(timeout_ms=1000, max_records=5000).values())
    out.put({"seconds": time.perf_counter() - t0, "count": count, "peak_rss_mb": _peak_rss_mb()})


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ledger_child(params: dict[str, Any], out: Any) -> None:
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from consumers.ledger_consumer import LedgerConsumer
    from consumers.verification import Verifier
    from ledger.wire.keyring import Keyring

    workers_peak: list[float] = []
    close = Verifier.close

    def measure_then_close(self: Verifier) -> None:  # the workers' own peak, while alive
        workers_peak.extend(
            _vm_hwm_mb(p.pid) for p in multiprocessing.active_children() if p.pid is not None
        )
        close(self)

    Verifier.close = measure_then_close  # type: ignore[method-assign]
    consumer = LedgerConsumer(
        KafkaSettings(params["bootstrap"], params["topic"]),
        Path(params["db"]),
        Keyring.model_validate_json(params["keyring"]),
        workers=params["workers"],
        batch_size=params["batch_size"],
        group=None,
    )
    t0 = time.monotonic()
    stats = consumer.run(until_idle=params["until_idle"])
    assert stats.last_commit is not None
    out.put(
        {
            "seconds": stats.last_commit - t0,
            "accepted": stats.accepted,
            "quarantined": stats.quarantined,
            "peak_rss_mb": _peak_rss_mb(),
            "worker_peak_rss_mb": max(workers_peak, default=0.0),
        }
    )


def in_child(target: Any, params: dict[str, Any]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(params, queue))
    proc.start()
    result: dict[str, Any] = queue.get(timeout=3600)
    proc.join()
    return result


def single_core_verify_rate(signers: dict[str, Signer]) -> float:
    ring = keyring_for(signers)
    values = [seal(e, signers[k]) for k, e in build_events(2000, start=10**7)]
    t0 = time.perf_counter()
    for value in values:
        verify_message(value, ring, datetime.now(UTC))
    return len(values) / (time.perf_counter() - t0)


def check_ledger(db: Path, n: int) -> str:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows, lo, hi, ids = con.execute(
        "SELECT count(*), min(seq), max(seq), count(DISTINCT event_id) FROM entries"
    ).fetchall()[0]
    con.close()
    ok = rows == n and lo == 1 and hi == n and ids == n
    return f"{'OK' if ok else 'WRONG'}: {rows} entries, seq {lo}..{hi}, {ids} distinct ids"


def run(args: argparse.Namespace) -> dict[str, Any]:
    signers = make_signers()
    with broker_bootstrap(args.bootstrap) as bootstrap:
        settings = KafkaSettings(bootstrap, f"bench.ingest.{uuid.uuid4().hex[:8]}")
        ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
        produce_s = produce(settings, args.events, signers)
        common = {"bootstrap": bootstrap, "topic": settings.topic, "n": args.events}
        bare = in_child(bare_child, common)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "ledger.duckdb"
            ledger = in_child(
                ledger_child,
                common
                | {
                    "db": str(db),
                    "keyring": keyring_for(signers).model_dump_json(),
                    "workers": args.workers,
                    "batch_size": args.batch_size,
                    "until_idle": 3.0,
                },
            )
            check = check_ledger(db, args.events)
    bare_rate = bare["count"] / bare["seconds"]
    ledger_rate = ledger["accepted"] / ledger["seconds"]
    return {
        "events": args.events,
        "cores": os.cpu_count(),
        "workers": args.workers,
        "produce_events_per_s": round(args.events / produce_s),
        "bare_consume_per_s": round(bare_rate),
        "ledger_consume_per_s": round(ledger_rate),
        "ratio": round(ledger_rate / bare_rate, 3),
        "ledger_main_peak_rss_mb": round(ledger["peak_rss_mb"]),
        "ledger_worker_peak_rss_mb": round(ledger["worker_peak_rss_mb"]),
        "single_core_verify_per_s": round(single_core_verify_rate(signers)),
        "ledger_check": check,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", help="use this Kafka instead of the local broker")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name:>28}  {value}")
    return 0 if result["ledger_check"].startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main())
