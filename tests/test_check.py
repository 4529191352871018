"""`ledger check`: each rule finds what it should over a hand-computed history, and nothing
else; the approval verdicts are the point-in-time rules' (check and asof never disagree)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import cli_json, ledger_cli
from fastapi.testclient import TestClient
from ledger_builders import append

from ledger.api.app import create_app
from ledger.rules.catalogue import RULES
from ledger.store.check import check
from ledger.store.gate import ProposedChange, gate
from ledger.store.query import asof
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer

T0 = datetime(2026, 11, 2, tzinfo=UTC)
END = T0 + timedelta(days=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def image(name: str, fill: str) -> str:
    return f"registry.example/{name}@sha256:{fill * 64}"


def digest(fill: str) -> str:
    return "sha256:" + fill * 64


A, B, C, D, S = (image("checkout", "a"), image("checkout", "b"), image("payments", "c"),
                 image("payments", "d"), image("search", "e"))  # fmt: skip


def event(kind: str, service: str, when: datetime, env: str = "prod", actor: str = "alice",
          **data: Any) -> Event:  # fmt: skip
    source = "cab/servicenow" if kind.startswith("approval.") else "ci/github/acme"
    return event_from_mapping({"type": kind, "time": when, "source": source, "actor": actor,
                               "service": service, "environment": env, "data": data})  # fmt: skip


def deploy(service: str, when: datetime, img: str, ref: str | None = None, env: str = "prod",
           actor: str = "alice", kind: str = "deployment.succeeded",
           **data: Any) -> Event:  # fmt: skip
    return event(kind, service, when, env, actor, image=img, change_ref=ref, **data)


def mutate(service: str, when: datetime, kind: str, target: str, content: str, ref: str | None,
           method: str = "pipeline", instance: str | None = None,
           actor: str = "alice") -> Event:  # fmt: skip
    return event("mutation.applied", service, when, actor=actor, target_kind=kind, target=target,
                 hash=content, tool="ansible", method=method, instance=instance,
                 change_ref=ref)  # fmt: skip


def grant(service: str, when: datetime, ref: str, **scope: Any) -> Event:
    return event("approval.granted", service, when, actor="carol", change_ref=ref,
                 approver="carol", **scope)  # fmt: skip


def classify(service: str, state: str, criticality: str, model: str) -> Event:
    return event("service.classified", service, at(-24), state=state, criticality=criticality,
                 model=model)  # fmt: skip


def policy(preprod: Sequence[str], when: datetime | None = None, **data: Any) -> Event:
    return event("policy.recorded", "horizon-policy", when or at(-48), digest=digest("9"),
                 preprod=list(preprod), **data)  # fmt: skip


HISTORY: list[Event] = [
    policy(["staging"]),                                                             # 1
    classify("checkout", "stateless", "high", "immutable"),                          # 2
    classify("ledgerdb", "stateful", "high", "mutable"),                             # 3
    classify("payments", "stateless", "medium", "immutable"),                        # 4
    deploy("checkout", at(-2), A, env="staging"),                                    # 5
    grant("checkout", at(-1), "CHG-1", image=A),                                     # 6
    deploy("checkout", at(1), A, "CHG-1"),                                           # 7 clean
    deploy("checkout", at(2), B),                                  # 8 missing, promotion_skipped
    grant("checkout", at(2.5), "CHG-2", hash=digest("1")),                           # 9
    mutate("checkout", at(3), "file", "app.jar", digest("1"), "CHG-2", instance="i-1"),  # 10
    grant("checkout", at(3), "CHG-3", hash=digest("2")),                             # 11
    mutate("checkout", at(4), "config", "app.yaml", digest("2"), "CHG-3"),           # 12 untied
    grant("checkout", at(4), "CHG-4", hash=digest("3")),                             # 13
    deploy("checkout", at(5), A, "CHG-1"),                                           # 14 clean
    mutate("checkout", at(5.1), "config", "app.yaml", digest("3"), "CHG-4"),         # 15 tied
    grant("checkout", at(6), "CHG-5", image=A),                                      # 16
    deploy("checkout", at(6.5), A, "CHG-5", actor="carol"),                          # 17 self
    grant("ledgerdb", at(7), "CHG-6", hash=digest("4")),                             # 18
    mutate("ledgerdb", at(8), "config", "db.conf", digest("4"), "CHG-6"),            # 19 no canary
    grant("ledgerdb", at(8), "CHG-7", hash=digest("5")),                             # 20
    mutate("ledgerdb", at(9), "config", "db.conf", digest("5"), "CHG-7", instance="db-1"),  # 21
    mutate("ledgerdb", at(10), "config", "db.conf", digest("5"), "CHG-7"),           # 22 canaried
    grant("payments", at(10), "CHG-8", hash=digest("6")),                            # 23
    mutate("payments", at(11), "infra", "lb-weights", digest("6"), "CHG-8", "manual"),  # 24
    grant("payments", at(11), "CHG-9", hash=digest("7")),                            # 25
    mutate("payments", at(12), "infra", "lb-weights", digest("7"), "CHG-9"),         # 26 restores
    grant("payments", at(12), "CHG-10", hash=digest("8")),                           # 27
    mutate("payments", at(13), "infra", "dns", digest("8"), "CHG-10", "manual"),     # 28 open
    grant("payments", at(13), "CHG-11", image=C),                                    # 29
    deploy("payments", at(13.5), C, env="staging"),                                  # 30
    deploy("payments", at(14), C, "CHG-11", kind="deployment.failed",
           instances={"total": 5, "updated": 2}),                                    # 31 partial
    grant("payments", at(15), "CHG-12", image=D),                                    # 32
    deploy("payments", at(16), D, "CHG-12", kind="deployment.rolled_back", from_image=C),  # 33
    deploy("payments", at(18), C, "CHG-11", kind="deployment.failed",
           instances={"total": 5, "updated": 0}),                                    # 34
    deploy("payments", at(18.5), C, "CHG-11"),                                       # 35 clean
    grant("search", at(19), "CHG-13", image=S),                                      # 36
    deploy("search", at(19), S, env="staging"),                                      # 37
    deploy("search", at(20), S, "CHG-13"),                                           # 38 unclass.
    deploy("checkout", at(30), B),                                                   # 39 after
]  # fmt: skip

EXPECTED = [  # (rule, service, seqs cited, severity), in time order
    ("promotion_skipped", "checkout", [8], "high"),
    ("unapproved_change", "checkout", [8], "high"),
    ("horizon_violation", "checkout", [10, 2], "high"),
    ("config_not_tied_to_release", "checkout", [12], "medium"),
    ("unapproved_change", "checkout", [17, 16], "high"),
    ("no_canary", "ledgerdb", [19], "medium"),
    ("manual_change", "payments", [24, 26], "medium"),
    ("manual_change", "payments", [28], "high"),
    ("failed_change", "payments", [31, 33], "low"),
    ("partial_fleet", "payments", [31, 33], "high"),
    ("rollback", "payments", [33, 31], "info"),
    ("failed_change", "payments", [34, 35], "low"),
    ("unclassified_service", "search", [38], "medium"),
]


def signers() -> tuple[Signer, Signer, Keyring]:
    ci, cab = Signer.generate("ci-main"), Signer.generate("change-board")
    ring = Keyring()
    kinds = ["deployment.*", "mutation.*", "service.*", "policy.*"]
    ring.trust(ci.key_id, ci.public_raw, types=kinds, sources=["ci/*"])
    ring.trust(cab.key_id, cab.public_raw, types=["approval.*"], sources=["cab/*"])
    return ci, cab, ring


def build(path: Path, history: Sequence[Event], *, record_keyring: bool = False) -> Path:
    """A ledger of ``history`` in that order (entry n is its n-th event, unless the keyring
    is recorded first, as the consumer does)."""
    ci, cab, ring = signers()
    writer = LedgerWriter(path)
    try:
        if record_keyring:
            writer.record_keyring(ring, "tests")
        values = [seal(e, cab if e.type.startswith("approval.") else ci) for e in history]
        append(writer, ring, values, 0)
    finally:
        writer.close()
    return path


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("check") / "ledger.duckdb", HISTORY)


def _found(report: dict[str, Any]) -> list[tuple[str, str, list[int], str]]:
    return [
        (f["rule"], f["service"], [c["seq"] for c in f["entries"]], f["severity"])
        for f in report["findings"]
        if f["rule"] not in ("late_arrival", "quarantine_in_period")
    ]


def test_each_rule_finds_exactly_the_hand_computed_findings(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        report = check(reader, "prod", T0, END).model_dump(mode="json")
    assert _found(report) == EXPECTED
    by_rule = {f["rule"]: f for f in report["findings"]}
    assert set(by_rule) | {"quarantine_in_period"} == set(RULES)
    self_approved = [f for f in report["findings"] if f["details"].get("reason") == "self_approved"]
    assert self_approved and "PCI DSS 6.5.4" in self_approved[0]["requirements"]
    assert by_rule["promotion_skipped"]["requirements"][0] == "PCI DSS 6.5.3"
    partial = by_rule["partial_fleet"]["details"]
    assert (partial["duration_s"], partial["updated"], partial["total"]) == (7200, 2, 5)
    assert by_rule["rollback"]["details"]["time_to_restore_s"] == 7200
    restored = [
        f["details"]["restored"] for f in report["findings"] if f["rule"] == "failed_change"
    ]
    assert [(r["rolled_back"], r["time_to_restore_s"]) for r in restored] == [
        (True, 7200), (False, 1800)]  # fmt: skip
    assert report["counts"]["manual_change"] == 2 and report["counts"]["quarantine_in_period"] == 0
    assert report["policies"] == [{"seq": 1, "event_id": HISTORY[0].id,
                                   "time": at(-48).isoformat(), "digest": digest("9")}]  # fmt: skip


def test_every_finding_cites_entries_by_seq_and_event_id(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        report = check(reader, "prod", T0, END)
        ids = dict(reader.con.execute("SELECT seq, event_id FROM entries").fetchall())
    for f in report.findings:
        assert f.entries, f
        assert all(ids[c.seq] == c.event_id for c in f.entries)


def test_findings_are_byte_identical_for_the_same_ledger_and_flags(ledger: Path) -> None:
    args = ("check", "--db", str(ledger), "--env", "prod", "--from", T0.isoformat(), "--to",
            END.isoformat(), "--json")  # fmt: skip
    first, second = ledger_cli(*args), ledger_cli(*args)
    assert first.returncode == 1, first.stderr  # high findings: --fail-on high fails
    assert first.stdout == second.stdout
    times = [f["time"] for f in cli_json(first)["findings"]]
    assert times == sorted(times)


def test_fail_on_sets_the_exit_code_and_a_bad_severity_is_a_usage_error(ledger: Path) -> None:
    def run(*extra: str) -> int:
        window = ("--from", at(19.5).isoformat(), "--to", END.isoformat())
        return ledger_cli("check", "--db", str(ledger), "--env", "prod", *window,
                          *extra).returncode  # fmt: skip

    # Only the unclassified service (medium) and late arrivals (info) fall in this window.
    assert (run(), run("--fail-on", "medium"), run("--fail-on", "info")) == (0, 1, 1)
    assert run("--fail-on", "severe") == 2


def test_nothing_outside_the_period_is_found(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        report = check(reader, "prod", at(25), at(40)).model_dump(mode="json")
    assert _found(report) == [("promotion_skipped", "checkout", [39], "high"),
                              ("unapproved_change", "checkout", [39], "high")]  # fmt: skip


def test_the_partial_fleet_threshold_comes_from_the_flag_over_the_policy(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        longer = check(reader, "prod", T0, END, thresholds={"partial_after": 3 * 3600})
    assert "partial_fleet" not in {f.rule for f in longer.findings}


def test_the_policy_in_force_sets_severities_and_preprod(tmp_path: Path) -> None:
    history = [*HISTORY[:1], policy(["perf"], at(-47), severity={"promotion_skipped": "low"}),
               *HISTORY[1:]]  # fmt: skip
    db = build(tmp_path / "ledger.duckdb", history)
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END).model_dump(mode="json")
    skipped = [f for f in report["findings"] if f["rule"] == "promotion_skipped"]
    # nothing ran in "perf": each of the 6 production deployments skipped it; the policy: low
    assert {f["severity"] for f in skipped} == {"low"} and len(skipped) == 6
    assert [p["seq"] for p in report["policies"]] == [2]


def test_without_a_policy_promotion_is_not_checked_and_a_note_says_so(tmp_path: Path) -> None:
    db = build(tmp_path / "ledger.duckdb", HISTORY[1:])
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END)
    assert "promotion_skipped" not in {f.rule for f in report.findings}
    assert any("no horizon policy is recorded" in n for n in report.notes)


def test_late_arrivals_are_findings_by_service(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        report = check(reader, "prod", T0, END)
    late = {f.service: f for f in report.findings if f.rule == "late_arrival"}
    # every event here was witnessed weeks after the time it claims (written today)
    assert set(late) == {"checkout", "ledgerdb", "payments", "search"}
    assert late["search"].details["entries"] == 2 and late["search"].severity == "info"


def test_the_integrity_statement_checks_the_cited_signatures(tmp_path: Path) -> None:
    db = build(tmp_path / "ledger.duckdb", HISTORY, record_keyring=True)
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END)
    cited = {c.seq for f in report.findings for c in f.entries}
    assert report.integrity.cited_entries == len(cited)
    assert report.integrity.signatures_verified == len(cited) and report.integrity.failure is None
    assert "no verification of this ledger is recorded" in report.integrity.statement


def test_check_over_the_api_is_the_same_answer_in_pages(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        local = check(reader, "prod", T0, END).model_dump(mode="json")
    reader = LedgerReader(ledger)
    try:
        client = TestClient(create_app(lambda: reader.con.cursor(), "t0ken"))
        headers = {"Authorization": "Bearer t0ken"}
        query = {"env": "prod", "from": T0.isoformat(), "to": END.isoformat(), "limit": 5}
        pages, after = [], ""
        while True:
            page = client.get("/v1/check", params=query | {"after": after}, headers=headers)
            assert page.status_code == 200, page.text
            body = page.json()
            pages += body["findings"]
            after = body.pop("next_after", None)
            if after is None:
                break
        bad = client.get("/v1/check", params=query | {"partial_after": "soon"}, headers=headers)
    finally:
        reader.close()
    assert pages == local["findings"]
    assert bad.status_code == 400 and "partial_after" in bad.json()["detail"]


def _random_history(rng: random.Random) -> list[Event]:
    """Changes, grants (some by the actor, some for another image, some expiring) and
    revocations of a few refs, in a random ledger order."""
    history: list[Event] = [classify("svc", "stateless", "low", "immutable")]
    images = [image("svc", f) for f in "abc"]
    for _ in range(60):
        when = at(rng.uniform(0, 20))
        ref = f"CHG-{rng.randrange(6)}"
        roll = rng.random()
        if roll < 0.35:
            until = when + timedelta(hours=rng.choice([1, 30]))
            history.append(grant("svc", when, ref, image=rng.choice(images), valid_until=until))
        elif roll < 0.45:
            history.append(event("approval.revoked", "svc", when, actor="carol", change_ref=ref))
        else:
            history.append(deploy("svc", when, rng.choice(images), ref,
                                  actor=rng.choice(["alice", "carol"])))  # fmt: skip
    return history


@pytest.mark.parametrize("seed", range(4))
def test_check_and_gate_agree_with_asof_on_every_approval(tmp_path: Path, seed: int) -> None:
    history = _random_history(random.Random(seed))
    db = build(tmp_path / "ledger.duckdb", history)
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END)
        unapproved = {f.entries[0].seq: f.details["reason"] for f in report.findings
                      if f.rule == "unapproved_change"}  # fmt: skip
        rows = reader.con.execute(
            "SELECT seq, time FROM entries WHERE type = 'deployment.succeeded' ORDER BY seq"
        ).fetchall()
        for seq, when in rows:
            live = asof(reader, "svc", "prod", when).deployment
            if live is None or live.seq != seq:
                continue  # another deployment claims the same instant
            assert live.approved == (seq not in unapproved), seq
        final = asof(reader, "svc", "prod", END).deployment
        assert final is not None
        assert final.unapproved_reason == unapproved.get(final.seq)
        proposed = ProposedChange("svc", "prod", "alice", "CHG-1", image=image("svc", "a"))
        allowed = gate(reader, proposed)
    # the gate judges the next change as check does once it is recorded
    ci, _, ring = signers()
    writer = LedgerWriter(db)
    try:
        now = datetime.now(UTC)
        made = seal(deploy("svc", now, image("svc", "a"), "CHG-1"), ci)
        append(writer, ring, [made], len(history))
    finally:
        writer.close()
    with LedgerReader(db) as reader:
        after = check(reader, "prod", T0, now + timedelta(minutes=1))
        size = reader.size()
    judged = [f.details["reason"] for f in after.findings
              if f.rule == "unapproved_change" and f.entries[0].seq == size]  # fmt: skip
    assert judged == ([] if allowed.approved else [allowed.unapproved_reason])


def test_the_gate_reads_the_promotion_path_from_the_policy_in_force(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        seen = gate(reader, ProposedChange("checkout", "prod", "alice", "CHG-1", image=A))
        unseen = gate(reader, ProposedChange("checkout", "prod", "alice", "CHG-1", image=B))
        told = gate(reader, ProposedChange("checkout", "prod", "alice", "CHG-1", image=A), ["qa"])
    assert seen.allowed and seen.promotion == {"checked": True, "environments": ["staging"],
                                               "entries": [5], "policy": 1}  # fmt: skip
    assert not unseen.allowed
    assert any("never witnessed succeeding in staging" in r for r in unseen.reasons)
    assert not told.allowed and told.promotion["policy"] is None  # --preprod stands above it


def test_refused_messages_of_the_period_are_findings_by_reason(tmp_path: Path) -> None:
    from ledger.log.chain import Witness
    from ledger.store.batch import Plan, Received, Rejected

    db = build(tmp_path / "ledger.duckdb", HISTORY[:5])
    writer = LedgerWriter(db)
    try:
        junk = [Rejected(Received("ledger.events", 0, 100 + n, None, b"\x00junk", 0,
                                  Witness.CONSUMER), reason, "refused")
                for n, reason in enumerate(["malformed_envelope", "malformed_envelope",
                                            "bad_signature"])]  # fmt: skip
        writer.commit(Plan(quarantined=junk))
    finally:
        writer.close()
    now = datetime.now(UTC)
    with LedgerReader(db) as reader:
        report = check(reader, "prod", now - timedelta(hours=1), now + timedelta(minutes=1))
        earlier = check(reader, "prod", T0, END)
    refused = {f.details["reason"]: f for f in report.findings if f.rule == "quarantine_in_period"}
    assert {r: f.details["messages"] for r, f in refused.items()} == {
        "bad_signature": 1, "malformed_envelope": 2}  # fmt: skip
    assert refused["malformed_envelope"].details["quarantine_ids"] == [1, 2]
    assert "PCI DSS 10.7.2" in refused["bad_signature"].requirements
    assert not [f for f in earlier.findings if f.rule == "quarantine_in_period"]


def test_entries_of_a_key_reported_compromised_are_high_findings(tmp_path: Path) -> None:
    ci, cab, ring = signers()
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    try:
        writer.record_keyring(ring, "tests")
        values = [seal(e, cab if e.type.startswith("approval.") else ci) for e in HISTORY]
        append(writer, ring, values, 0)
        revoked = Keyring.from_json(ring.canonical(), "copy")
        revoked.revoke(ci.key_id, datetime.now(UTC) - timedelta(days=1))  # before it signed
        writer.record_keyring(revoked, "tests")
    finally:
        writer.close()
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END)
    marked = [f for f in report.findings if f.rule == "late_arrival" and f.details["compromised"]]
    # every production event of the period that the CI key signed: all but the approvals
    period = [e for e in HISTORY if T0 <= e.time <= END and e.environment == "prod"
              and not e.type.startswith("approval.")]  # fmt: skip
    assert len(marked) == len(period) and {f.severity for f in marked} == {"high"}
    assert {f.details["key_id"] for f in marked} == {ci.key_id}


def test_the_integrity_statement_proves_the_checkpoint_extends_the_verified_ledger(
    tmp_path: Path,
) -> None:
    from ledger.store.verified import VerificationRecord

    ci, cab, ring = signers()
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db, checkpoint_signer=Signer.generate("ledger"))
    try:
        values = [seal(e, cab if e.type.startswith("approval.") else ci) for e in HISTORY]
        append(writer, ring, values[:10], 0, checkpoint=True)
        append(writer, ring, values[10:], 10, checkpoint=True)
    finally:
        writer.close()
    verified = VerificationRecord(at=datetime.now(UTC), size=10, ok=True,
                                  signatures_checked=True)  # fmt: skip
    with LedgerReader(db) as reader:
        report = check(reader, "prod", T0, END, verified=verified)
    assert report.integrity.checkpoint is not None
    assert report.integrity.checkpoint["size"] == len(HISTORY)
    assert report.integrity.consistency == {"from": 10, "to": len(HISTORY), "verified": True}
    assert "extends the verified 10 entries" in report.integrity.statement


def test_entries_witnessed_when_they_claim_are_no_late_arrivals(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    fresh = [classify("checkout", "stateless", "high", "immutable"),
             grant("checkout", now - timedelta(minutes=2), "CHG-1", image=A),
             deploy("checkout", now - timedelta(minutes=1), A, "CHG-1")]  # fmt: skip
    db = build(tmp_path / "ledger.duckdb", fresh)
    with LedgerReader(db) as reader:
        report = check(reader, "prod", now - timedelta(hours=1), now + timedelta(minutes=1))
    assert [f.rule for f in report.findings] == []  # classified, approved, on time
