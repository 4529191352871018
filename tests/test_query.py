"""Point-in-time queries over a real DuckDB ledger, with answers computed by hand."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient
from helpers import DIGEST_A, DIGEST_B, IMAGE_A, IMAGE_B, make_event, strictly_after
from ledger_builders import accepted

from ledger.api.app import create_app
from ledger.errors import QueryError
from ledger.log.chain import Witness
from ledger.rules.answers import TimelineEntry
from ledger.rules.pointintime import Fact, reconstruct
from ledger.rules.questions import search_terms
from ledger.store.batch import Received
from ledger.store.query import asof, diff, search, snapshot, streams, timeline
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


def append(writer: LedgerWriter, ring: Keyring, batch: Sequence[tuple[Signer, Event]]) -> None:
    """Chain one batch the way the consumer does (seal, verify, prepare, commit)."""
    offset = sum(o for o in writer.stored_offsets().values())
    messages = []
    for n, (signer, event) in enumerate(batch):
        value = seal(event, signer)
        received = Received("t", 0, offset + n, None, value, 0, Witness.CONSUMER)
        messages.append(accepted(writer, ring, value, received))
    writer.commit(writer.prepare(messages, {("t", 0): offset + len(batch)}))


def _last_ingested(writer: LedgerWriter) -> datetime:
    """When the writer's last entry was ingested (transaction time)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=writer.head_ingested_us)


@pytest.fixture
def history(
    tmp_path: Path, ci_signer: Signer, approver_signer: Signer, keyring: Keyring
) -> tuple[Path, datetime]:
    """checkout/prod and payments/prod; returns the file and a moment between two batches."""
    ci, cab = ci_signer, approver_signer
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    append(
        writer,
        keyring,
        [
            (ci, make_event("service.classified", time=at(9))),
            (
                cab,
                make_event(
                    "approval.granted",
                    time=at(9, 30),
                    change_ref="CHG-1",
                    approver="carol",
                    image=IMAGE_A,
                ),
            ),
            (
                ci,
                make_event("deployment.succeeded", time=at(10), change_ref="CHG-1", image=IMAGE_A),
            ),
            (
                ci,
                make_event(
                    "mutation.applied",
                    time=at(11),
                    target_kind="flag",
                    target="beta",
                    hash=DIGEST_A,
                    tool="consul",
                    actor="bob",
                ),
            ),
            (
                ci,
                make_event(
                    "mutation.applied",
                    time=at(11, 30),
                    target_kind="patch",
                    target="libssl",
                    instance="i-1",
                    hash=DIGEST_B,
                    tool="manual",
                    method="manual",
                    actor="dave",
                ),
            ),
            # Arrives before the failure it follows in valid time (out of order).
            (
                ci,
                make_event(
                    "deployment.rolled_back",
                    time=at(13),
                    change_ref="CHG-1",
                    image=IMAGE_A,
                    from_image=IMAGE_B,
                ),
            ),
            (
                ci,
                make_event(
                    "deployment.failed",
                    time=at(12),
                    change_ref="CHG-2",
                    image=IMAGE_B,
                    instances={"total": 4, "updated": 1},
                ),
            ),
            # Recorded before the deployment it approves, as an honest approval is.
            (
                cab,
                make_event(
                    "approval.granted",
                    time=at(9),
                    service="payments",
                    change_ref="CHG-9",
                    approver="alice",
                    image=IMAGE_B,
                ),
            ),
            (
                ci,
                make_event(
                    "deployment.succeeded",
                    time=at(10),
                    service="payments",
                    change_ref="CHG-9",
                    image=IMAGE_B,
                ),
            ),
        ],
    )
    between = strictly_after(_last_ingested(writer))
    strictly_after(between)
    # Learned late: a config change made at 11:45, ingested after `between`.
    append(
        writer,
        keyring,
        [
            (
                ci,
                make_event(
                    "mutation.applied",
                    time=at(11, 45),
                    target_kind="config",
                    target="app.yml",
                    hash=DIGEST_B,
                    tool="ansible",
                    source="ansible/site",
                    change_ref="CHG-3",
                ),
            ),
        ],
    )
    writer.close()
    return db, between


@pytest.fixture
def reader(history: tuple[Path, datetime]) -> Iterator[LedgerReader]:
    with LedgerReader(history[0]) as opened:
        yield opened


def test_mid_incident_answer(reader: LedgerReader) -> None:
    answer = asof(reader, "checkout", "prod", at(12, 30))
    assert answer.deployment is not None
    assert (answer.deployment.image, answer.deployment.seq) == (IMAGE_A, 3)
    assert answer.deployment.approved and answer.deployment.approval is not None
    assert answer.deployment.approval.seq == 2 and answer.deployment.approval.approver == "carol"
    assert answer.partial is not None
    assert (
        answer.partial.image,
        answer.partial.updated,
        answer.partial.total,
        answer.partial.seq,
    ) == (IMAGE_B, 1, 4, 7)
    live = {(m.target_kind, m.target, m.instance): m for m in answer.mutations}
    assert set(live) == {
        ("flag", "beta", None),
        ("patch", "libssl", "i-1"),
        ("config", "app.yml", None),
    }
    assert live[("flag", "beta", None)].unapproved_reason == "missing"
    assert live[("config", "app.yml", None)].unapproved_reason == "missing"  # no grant for CHG-3
    assert answer.classification is not None and answer.classification.model == "immutable"
    assert answer.evidence.entries == [1, 2, 3, 4, 5, 7, 10]
    assert answer.evidence.ledger_size == 10


def test_rollback_ends_the_partial_fleet_and_wipes_instance_local_changes(
    reader: LedgerReader,
) -> None:
    answer = asof(reader, "checkout", "prod", at(13, 30))
    assert answer.deployment is not None and answer.deployment.seq == 6
    assert answer.deployment.approved  # the CHG-1 grant was for the image rolled back to
    assert answer.partial is None
    assert {(m.target_kind, m.target) for m in answer.mutations} == {
        ("flag", "beta"),
        ("config", "app.yml"),
    }


def test_known_at_answers_with_what_the_ledger_had_recorded(
    history: tuple[Path, datetime], reader: LedgerReader
) -> None:
    _, between = history
    then = asof(reader, "checkout", "prod", at(12, 30), known_at=between)
    assert {m.target for m in then.mutations} == {"beta", "libssl"}
    assert then.evidence.ledger_size == 9
    assert then.known_at == between
    before_anything = asof(reader, "checkout", "prod", at(12, 30), known_at=DAY)
    assert before_anything.deployment is None and before_anything.evidence.ledger_size == 0


def test_before_the_first_deployment_nothing_is_live(reader: LedgerReader) -> None:
    answer = asof(reader, "checkout", "prod", at(9, 45))
    assert answer.deployment is None and answer.partial is None and answer.mutations == []
    assert answer.classification is not None


def test_snapshot_has_one_answer_per_service(reader: LedgerReader) -> None:
    estate = snapshot(reader, "prod", at(12, 30))
    assert [s.service for s in estate.services] == ["checkout", "payments"]
    payments = estate.services[1]
    assert payments.deployment is not None
    assert payments.deployment.unapproved_reason == "self_approved"  # alice approved alice
    assert estate.services[0] == asof(reader, "checkout", "prod", at(12, 30))
    assert snapshot(reader, "staging", at(12, 30)).services == []


def test_diff_lists_what_changed_between_two_moments(reader: LedgerReader) -> None:
    changes = diff(reader, "prod", at(10, 30), at(13, 30)).changes
    got = {(c.service, c.aspect, c.key): (c.before, c.after) for c in changes}
    assert got == {
        ("checkout", "mutation", "flag:beta"): (None, DIGEST_A),
        ("checkout", "approval", "flag:beta"): (None, "missing"),
        ("checkout", "mutation", "config:app.yml"): (None, DIGEST_B),
        ("checkout", "approval", "config:app.yml"): (None, "missing"),
    }
    assert diff(reader, "prod", at(12, 30), at(12, 30)).changes == []


def test_timeline_is_ordered_by_valid_time(reader: LedgerReader) -> None:
    entries = timeline(reader, "checkout", "prod", at(11), at(13))
    assert [e.seq for e in entries] == [4, 5, 10, 7, 6]
    assert [e.type for e in entries][-2:] == ["deployment.failed", "deployment.rolled_back"]


def test_search_by_image_digest_commit_and_change_ref(reader: LedgerReader) -> None:
    assert {h.seq for h in search(reader, search_terms(image=IMAGE_B))} == {6, 7, 8, 9}
    assert {h.seq for h in search(reader, search_terms(image=DIGEST_A))} == {2, 3, 6}
    assert [h.seq for h in search(reader, search_terms(change_ref="CHG-1"))] == [2, 3, 6]
    assert search(reader, search_terms(commit="deadbeef")) == []
    with pytest.raises(QueryError, match="exactly one"):
        search_terms(image=IMAGE_A, change_ref="CHG-1")


def test_search_by_a_short_digest_as_the_tables_show_it(
    history: tuple[Path, datetime], reader: LedgerReader
) -> None:
    """The tables print images as name@<12 hex>: that, a digest prefix with or without its
    algorithm, or a whole reference finds the same entries; another repository does not."""
    short = DIGEST_A.removeprefix("sha256:")[:12]
    whole = {h.seq for h in search(reader, search_terms(image=IMAGE_A))}
    assert whole == {2, 3, 6}
    for given in (
        f"checkout@{short}",
        short,
        DIGEST_A[:15],
        f"registry.example/checkout@{short}",
        DIGEST_A,
        short.upper(),
    ):
        assert {h.seq for h in search(reader, search_terms(image=given))} == whole, given
    assert search(reader, search_terms(image=f"billing@{short}")) == []
    # A path matches whole:
    assert search(reader, search_terms(image=f"example/checkout@{short}")) == []
    assert search(reader, search_terms(image="sha512:" + "a" * 12)) == []
    with pytest.raises(QueryError, match="tags are not evidence"):
        search_terms(image="registry.example/checkout:1.2")
    db, _ = history
    found = _cli("search", "--db", str(db), "--image", f"checkout@{short}")
    assert [h["seq"] for h in found] == [2, 3, 6]
    tag = subprocess.run(
        [sys.executable, "-m", "ledger", "search", "--db", str(db), "--image", "checkout:1.2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tag.returncode == 2 and "--image 'checkout:1.2': give a digest" in tag.stderr


def _cli(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "ledger", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_and_http_api_print_the_same_json(history: tuple[Path, datetime]) -> None:
    db, _ = history
    moment = at(12, 30).isoformat()
    cli_asof = _cli(
        "asof", "--db", str(db), "--service", "checkout", "--env", "prod", "--at", moment
    )
    cli_diff = _cli(
        "diff",
        "--db",
        str(db),
        "--env",
        "prod",
        "--from",
        at(10, 30).isoformat(),
        "--to",
        at(13, 30).isoformat(),
    )
    cli_search = _cli("search", "--db", str(db), "--change-ref", "CHG-1")
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    client = TestClient(create_app(con.cursor, "t0ken"))
    headers = {"Authorization": "Bearer t0ken"}
    api_asof = client.get(
        "/v1/asof", params={"service": "checkout", "env": "prod", "at": moment}, headers=headers
    )
    api_diff = client.get(
        "/v1/diff",
        params={"env": "prod", "from": at(10, 30).isoformat(), "to": at(13, 30).isoformat()},
        headers=headers,
    )
    api_search = client.get("/v1/search", params={"change_ref": "CHG-1"}, headers=headers)
    tag = client.get("/v1/search", params={"image": "checkout:1.2"}, headers=headers)
    assert tag.status_code == 400 and "tags are not evidence" in tag.json()["detail"]
    backwards = client.get(
        "/v1/timeline",
        headers=headers,
        params={"service": "checkout", "env": "prod", "from": moment, "to": at(11).isoformat()},
    )
    assert backwards.status_code == 400 and "earlier" in backwards.json()["detail"]
    backwards = client.get(
        "/v1/diff",
        headers=headers,
        params={"env": "prod", "from": moment, "to": at(11).isoformat()},
    )
    assert backwards.status_code == 400 and "earlier" in backwards.json()["detail"]
    con.close()
    assert api_asof.json() == cli_asof
    assert api_diff.json() == cli_diff
    assert api_search.json() == cli_search
    assert cli_asof["deployment"]["seq"] == 3 and cli_asof["partial"]["updated"] == 1


def _short(image: str) -> str:
    """How the tables print an image: its name and the first 12 hex digits of its digest."""
    name, _, digest = image.rsplit("/", 1)[-1].partition("@sha256:")
    return f"{name}@{digest[:12]}"


def test_snapshot_table_names_each_image_partial_fleet_and_unapproved_change(
    history: tuple[Path, datetime],
) -> None:
    db, _ = history
    args = ["snapshot", "--db", str(db), "--env", "prod", "--at", at(12, 30).isoformat()]
    answer = _cli(*args)
    shown = subprocess.run([sys.executable, "-m", "ledger", *args], capture_output=True,
                           text=True, timeout=60, env=os.environ | {"COLUMNS": "120"})  # fmt: skip
    lines = shown.stdout.splitlines()
    partial = [s for s in answer["services"] if s["partial"]]
    unapproved = [s for s in answer["services"] if any(not m["approved"] for m in s["mutations"])]
    assert partial and unapproved  # the history has both at this instant
    for service in answer["services"]:
        row = next(i for i, line in enumerate(lines) if line.startswith(service["service"] + " "))
        d, n = service["deployment"], len(service["mutations"])
        count = sum(not m["approved"] for m in service["mutations"])
        approval = (
            f"approved by {d['approval']['approver']}" if d["approved"] else d["unapproved_reason"]
        )
        model = service["classification"]["model"] if service["classification"] else "-"
        assert re.split(r" {2,}", lines[row].strip()) == [
            service["service"], _short(d["image"]), d["time"][:16].replace("T", " "), approval,
            f"{n}, {count} unapproved" if count else str(n), model]  # fmt: skip
        if service["partial"]:
            p = service["partial"]
            assert lines[row + 1].strip() == f"partial {p['updated']}/{p['total']}: " + _short(
                p["image"]
            )


def test_relative_times_and_bad_times_on_the_cli(history: tuple[Path, datetime]) -> None:
    db, _ = history
    now = _cli(
        "asof", "--db", str(db), "--service", "checkout", "--env", "prod", "--at", "1 hour ago"
    )
    assert datetime.fromisoformat(now["at"]) > datetime.now(UTC) - timedelta(hours=1, minutes=5)
    assert now["deployment"]["seq"] == 6
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger",
            "asof",
            "--db",
            str(db),
            "--service",
            "checkout",
            "--env",
            "prod",
            "--at",
            "2026-11-20T10:00:00",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "explicit UTC offset" in bad.stderr
    backwards = subprocess.run(
        [sys.executable, "-m", "ledger", "timeline", "--db", str(db), "--service", "checkout",
         "--env", "prod", "--from", at(13).isoformat(), "--to", at(11).isoformat()],
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert backwards.returncode == 2 and "--to is earlier than --from" in backwards.stderr


def test_a_misspelt_name_is_pointed_out_not_answered_as_nothing_deployed(
    history: tuple[Path, datetime], reader: LedgerReader
) -> None:
    """An empty answer is right for a stream with no entry, but to an auditor it reads as
    "nothing was deployed": the CLI says on stderr when no entry names what was asked."""
    db, _ = history
    assert streams(reader) == [("prod", "checkout"), ("prod", "payments")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", *args, "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    service = cli("asof", "--service", "checkuot", "--env", "prod", "--at", at(13).isoformat())
    assert service.returncode == 0 and json.loads(service.stdout)["deployment"] is None
    assert (
        "no entry names service 'checkuot' in prod; prod has checkout, payments" in service.stderr
    )
    env = cli("snapshot", "--env", "prdo", "--at", at(13).isoformat())
    assert json.loads(env.stdout)["services"] == []
    assert "no entry names environment 'prdo'; the ledger has prod" in env.stderr
    before = cli("timeline", "--service", "checkout", "--env", "prod", "--to", DAY.isoformat())
    assert json.loads(before.stdout) == [] and "note" not in before.stderr  # known, just empty


# --- the SQL narrowing never changes an answer ----------------------------------------------

PAIRS = [(s, e) for s in ("checkout", "payments", "Search") for e in ("prod", "staging")]


def _random_event(rng: random.Random, ci: Signer, cab: Signer) -> tuple[Signer, Event]:
    """Any kind of event, on a coarse time grid (ties on time), over a few refs and targets."""
    service, env = rng.choice(PAIRS)
    common: dict[str, Any] = {
        "time": at(9) + timedelta(minutes=rng.randrange(0, 240, 5)),
        "service": service,
        "environment": env,
        "actor": rng.choice(["alice", "bob", "carol"]),
    }
    ref = rng.choice([None, "CHG-1", "CHG-2"])
    kind = rng.choices(
        [
            "deployment.started",
            "deployment.succeeded",
            "deployment.failed",
            "deployment.rolled_back",
            "mutation.applied",
            "approval.granted",
            "approval.revoked",
            "service.classified",
        ],
        [1, 3, 2, 1, 6, 4, 2, 1],
    )[0]
    if kind.startswith("deployment."):
        data: dict[str, Any] = {"image": rng.choice([IMAGE_A, IMAGE_B]), "change_ref": ref}
        if kind == "deployment.failed":
            total = rng.randint(1, 4)
            data["instances"] = {"total": total, "updated": rng.randint(0, total)}
        return ci, make_event(kind, **common, **data)
    if kind == "mutation.applied":
        return ci, make_event(
            kind,
            **common,
            target_kind=rng.choice(["config", "flag", "file", "patch"]),
            target=rng.choice(["a.yml", "b.yml"]),
            instance=rng.choice([None, "i-1", "i-2"]),
            hash=rng.choice([DIGEST_A, DIGEST_B, None]),
            change_ref=ref,
            method=rng.choice(["pipeline", "manual"]),
        )
    if kind == "approval.granted":
        scope: dict[str, str | None] = rng.choice(
            [
                {},
                {},
                {"image": rng.choice([IMAGE_A, IMAGE_B])},
                {"image": None, "hash": rng.choice([DIGEST_A, DIGEST_B])},
            ]
        )
        until = rng.choice([None, common["time"] + timedelta(minutes=rng.randrange(0, 60, 5))])
        return cab, make_event(
            kind,
            **common,
            source="cab/servicenow",
            change_ref=ref or "CHG-1",
            approver=rng.choice(["alice", "carol"]),
            valid_until=until,
            **scope,
        )
    if kind == "approval.revoked":
        return cab, make_event(kind, **common, source="cab/servicenow", change_ref=ref or "CHG-2")
    return ci, make_event(kind, **common)


def _fact(entry: TimelineEntry) -> Fact:
    data = dict(entry.data)
    if data.get("valid_until") is not None:
        data["valid_until"] = datetime.fromisoformat(data["valid_until"])
    return Fact(
        entry.seq, entry.event_id, entry.type, entry.time, entry.actor, data, entry.ingested_at
    )


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "clustered", "runs"), [
    (1, (), 0),  # every fact derived from the entries (no run yet)
    (2, (0,), 1),  # one run, then a tail
    (3, (0, 1, 2, 3, 4), 2),  # five runs, the first four merged into one; no tail
])  # fmt: skip
def test_answers_equal_the_rules_applied_to_every_entry(
    tmp_path: Path,
    ci_signer: Signer,
    approver_signer: Signer,
    keyring: Keyring,
    seed: int,
    clustered: tuple[int, ...],
    runs: int,
) -> None:
    """``asof`` and ``snapshot`` read only the candidate entries, through the query index
    (runs and tail); the answer is the same as the rules (``reconstruct``) applied to every
    entry of the service, known or not yet."""
    rng = random.Random(seed)
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    for batch in range(5):
        if batch == 4:
            between = strictly_after(_last_ingested(writer))
            strictly_after(between)
        events = [_random_event(rng, ci_signer, approver_signer) for _ in range(42)]
        append(writer, keyring, events)
        if batch in clustered:
            assert writer.cluster(force=True) == 42
    writer.close()
    instants = [at(9) + timedelta(minutes=m) for m in range(-5, 250, 10)]
    instants += [moment + timedelta(minutes=2) for moment in instants[::4]]
    with LedgerReader(db) as reader:
        tables = reader.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, 'facts_run_')"
        ).fetchall()
        assert tables == [(runs,)]
        history = {pair: timeline(reader, *pair) for pair in PAIRS}
        for known_at in (None, between):
            known = {
                pair: [_fact(e) for e in entries if known_at is None or e.ingested_at <= known_at]
                for pair, entries in history.items()
            }
            size = sum(len(facts) for facts in known.values())
            for moment in instants:
                expected = {
                    pair: reconstruct(*pair, moment, facts, size, known_at)
                    for pair, facts in known.items()
                }
                for (service, env), answer in expected.items():
                    assert asof(reader, service, env, moment, known_at) == answer
                for env in ("prod", "staging"):
                    listed = {
                        a.service: a for a in snapshot(reader, env, moment, known_at).services
                    }
                    assert list(listed) == sorted(listed)  # "Search" before "checkout"
                    for (service, e), answer in expected.items():
                        if e != env:
                            continue
                        if service in listed:
                            assert listed[service] == answer
                        else:  # a service with nothing live is left out
                            assert answer.deployment is None and answer.partial is None
                            assert answer.mutations == [] and answer.classification is None
