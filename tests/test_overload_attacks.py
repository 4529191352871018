"""Overload: readers never crash the writer, and no list answer is unbounded.

Under 200 parallel API requests the writer's COMMIT once ran out of memory (readers share
DuckDB's limit), its rollback raised in turn and the process exited, API and all; two
requests for a large quarantine both got 500.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from consumer_helpers import (
    assert_gap_free,
    cli_json,
    consume,
    emit,
    entries,
    event_entries,
    ledger_cli,
    produce_raw,
    verify,
)
from fastapi.testclient import TestClient
from helpers import make_event, wait_for
from ledger_builders import append

from consumers.ledger_consumer import LedgerConsumer
from ledger.api.app import create_app
from ledger.log.chain import Witness
from ledger.store.batch import Plan, Received, Rejected
from ledger.store.tree import insert_nodes
from ledger.store.writer import LedgerWriter
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer, seal
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer

TOKEN = "overload-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_an_out_of_memory_error_in_the_writers_commit_is_rolled_back_and_read_again(
    kafka: KafkaSettings,
    ci_signer: Signer,
    keyring: Keyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DuckDB ends the transaction itself when COMMIT runs out of memory; the rollback that
    followed raised in turn, and the consumer exited with the batch half-known."""
    real = insert_nodes
    calls = {"n": 0}

    def out_of_memory_once(con: duckdb.DuckDBPyConnection, nodes: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first batch of events (1: the keyring record)
            con.execute("ROLLBACK")  # as DuckDB does when COMMIT fails
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        real(con, nodes)

    monkeypatch.setattr("ledger.store.writer.insert_nodes", out_of_memory_once)
    ids = emit(kafka, ci_signer, [make_event(service=f"svc-{i % 5}") for i in range(40)])
    db = tmp_path / "ledger.duckdb"
    stats = consume(kafka, db, keyring, until_idle=4.0)
    assert calls["n"] > 2
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(ids)
    assert stats.accepted == 40
    assert_gap_free(entries(db))
    verify(db, keyring)
    assert "batch not committed (Out of Memory Error" in caplog.text


# --- the HTTP API ----------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, ci_signer: Signer, keyring: Keyring) -> Path:
    """A ledger file with a few entries and 5 quarantined messages, and no writer."""
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    try:
        append(writer, keyring, [seal(make_event(), ci_signer) for _ in range(3)], 0)
        refused = [Rejected(Received("ledger.events", 1, n, None, b"junk", 0, Witness.CONSUMER),
                            "malformed_envelope", "junk") for n in range(5)]  # fmt: skip
        writer.commit(Plan(quarantined=refused))
    finally:
        writer.close()
    return db


def test_questions_beyond_the_limit_get_503_with_retry_after(served: Path) -> None:
    con = duckdb.connect(str(served), read_only=True)
    inside, release = threading.Event(), threading.Event()

    def slow_cursor() -> duckdb.DuckDBPyConnection:
        inside.set()
        release.wait(30)
        return con.cursor()

    client = TestClient(create_app(slow_cursor, TOKEN, max_queries=1))
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(client.get("/v1/status", headers=AUTH)))
    thread.start()
    try:
        assert inside.wait(30)
        busy = client.get("/v1/status", headers=AUTH)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
    finally:
        release.set()
        thread.join(30)
        con.close()
    assert first[0].status_code == 200


def test_the_quarantine_comes_in_pages(served: Path) -> None:
    con = duckdb.connect(str(served), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, TOKEN))
        pages, after = [], 0
        while True:
            page = client.get("/v1/quarantine", params={"after": after, "limit": 2}, headers=AUTH)
            assert page.status_code == 200
            pages.append([row["id"] for row in page.json()])
            if len(pages[-1]) < 2:
                break
            after = pages[-1][-1]
        too_many = client.get("/v1/quarantine", params={"limit": 1001}, headers=AUTH)
    finally:
        con.close()
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(i for p in pages for i in p) == list(range(1, 6))
    assert too_many.status_code == 422
    local = ledger_cli("quarantine", "--db", str(served), "--after", "2", "--limit", "2", "--json")
    assert [row["id"] for row in cli_json(local)] == [3, 4]


def _pages(client: TestClient, path: str, params: dict[str, str]) -> list[list[int]]:
    """The seqs of each page of a list answer, two at a time, as the CLI asks for them."""
    pages, after = [], 0
    while True:
        page = client.get(path, params=params | {"after": str(after), "limit": "2"}, headers=AUTH)
        assert page.status_code == 200, page.text
        pages.append([row["seq"] for row in page.json()])
        if len(pages[-1]) < 2:
            return pages
        after = pages[-1][-1]


def test_timelines_and_searches_come_in_pages_in_their_order(tmp_path: Path) -> None:
    """Five deployments chained in the reverse of the times they claim (a backfill): pages
    follow (time, seq), the order of the answer, so none is skipped or repeated; the CLI
    reads them all through --api."""
    ci, ring = Signer.generate("ci"), Keyring()
    ring.trust("ci", ci.public_raw, types=["deployment.*"], sources=["ci/*"])
    db = tmp_path / "ledger.duckdb"
    times = [f"2026-11-20T1{4 - n}:00:00Z" for n in range(5)]
    writer = LedgerWriter(db)
    try:
        values = [seal(make_event(time=t, change_ref="CHG-7"), ci) for t in times]
        append(writer, ring, values, 0)
    finally:
        writer.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, TOKEN))
        timeline = _pages(client, "/v1/timeline", {"service": "checkout", "env": "prod"})
        search = _pages(client, "/v1/search", {"change_ref": "CHG-7"})
        too_many = client.get("/v1/timeline", params={"service": "checkout", "env": "prod",
                                                      "limit": "1001"}, headers=AUTH)  # fmt: skip
    finally:
        con.close()
    assert timeline == search == [[5, 4], [3, 2], [1]]
    assert too_many.status_code == 422
    whole = ledger_cli("timeline", "--db", str(db), "--service", "checkout", "--env", "prod",
                       "--json")  # fmt: skip
    assert [e["seq"] for e in cli_json(whole)] == [5, 4, 3, 2, 1]


def test_snapshots_and_diffs_come_in_pages_of_services(tmp_path: Path) -> None:
    """Five services: pages of two, by name, each naming where the next begins; the
    last names none. No service is skipped or repeated, and the diff pages likewise."""
    ci, ring = Signer.generate("ci"), Keyring()
    ring.trust("ci", ci.public_raw, types=["deployment.*"], sources=["ci/*"])
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    try:
        names = ["svc-e", "svc-a", "svc-d", "svc-b", "svc-c"]
        append(writer, ring, [seal(make_event(service=n, time="2026-11-20T10:00:00Z"), ci)
                              for n in names], 0)  # fmt: skip
    finally:
        writer.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, TOKEN))
        pages: dict[str, list[list[str]]] = {"/v1/snapshot": [], "/v1/diff": []}
        asked = {"/v1/snapshot": {"env": "prod", "at": "2026-11-21T00:00:00Z"},
                 "/v1/diff": {"env": "prod", "from": "2026-11-19T00:00:00Z",
                              "to": "2026-11-21T00:00:00Z"}}  # fmt: skip
        for path, field, key in (("/v1/snapshot", "services", "service"),
                                 ("/v1/diff", "changes", "service")):  # fmt: skip
            after: str | None = ""
            while after is not None:
                page = client.get(path, params=asked[path] | {"after": after, "limit": "2"},
                                  headers=AUTH).json()  # fmt: skip
                pages[path].append(sorted({row[key] for row in page[field]}))
                after = page.get("next_after")
    finally:
        con.close()
    expected = [["svc-a", "svc-b"], ["svc-c", "svc-d"], ["svc-e"]]
    assert pages == {"/v1/snapshot": expected, "/v1/diff": expected}


@pytest.mark.slow
def test_the_writer_keeps_chaining_under_read_load(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """600 questions from 12 threads on loopback while 300 events arrive: every event is
    chained once, and every answer is one (200) or a request to ask again (503)."""
    db = tmp_path / "ledger.duckdb"
    port = free_port()
    consumer = LedgerConsumer(kafka, db, keyring, workers=1, serve=("127.0.0.1", port),
                              api_token=TOKEN)  # fmt: skip
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    wait_for(lambda: consumer.api_url is not None, "the API to serve")
    url = f"http://127.0.0.1:{port}"
    paths = ["/v1/status", "/v1/snapshot?env=prod&at=2026-11-21T00:00:00Z",
             "/v1/quarantine", "/v1/timeline?service=svc-1&env=prod"]  # fmt: skip

    def ask(n: int) -> int:
        return httpx.get(url + paths[n % len(paths)], headers=AUTH, timeout=60).status_code

    ids: list[str] = []
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = pool.map(ask, range(600))
            with LedgerProducer(ci_signer, kafka) as producer:
                for i in range(300):
                    event = make_event(service=f"svc-{i % 7}")
                    producer.emit(event)
                    ids.append(event.id)
                producer.flush()
            produce_raw(kafka, [b"junk"] * 5)
            codes = list(answers)
        wait_for(lambda: consumer.stats.accepted == 300 and consumer.stats.quarantined == 5,
                 "every event chained")  # fmt: skip
    finally:
        consumer.stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert codes.count(200) > 0
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(ids)
    verify(db, keyring)
    assert consume(kafka, db, keyring).accepted == 0  # nothing left behind, nothing twice
