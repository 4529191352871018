"""Attacks by a producer who chooses the time its event claims: authority comes from what the
ledger witnessed (its order, its clock), never from a claimed time. Through a real ledger
file, the query path (SQL narrowing, then the rules) and an evidence bundle checked offline.

Each entry is chained in the order the test appends it (that is the ledger's order) and
recorded now; the times the events claim are November 2026.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from consumer_helpers import ledger_cli
from helpers import IMAGE_A, make_event
from ledger_builders import append, signers

from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery, verify_bundle
from ledger.log.checkpoint import TrustedKey
from ledger.rules.pointintime import AsOf
from ledger.store.query import asof, timeline
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
LEDGER_KEY = Signer.generate("ledger")


@pytest.fixture
def keys() -> tuple[Signer, Signer, Keyring]:
    return signers()


def _ledger(tmp_path: Path, ring: Keyring, history: Sequence[tuple[Signer, Event]]) -> Path:
    """A ledger holding ``history`` in this order, one batch per event."""
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db, checkpoint_signer=LEDGER_KEY)
    try:
        for n, (signer, event) in enumerate(history):
            append(writer, ring, [seal(event, signer)], n, checkpoint=True)
    finally:
        writer.close()
    return db


def _asked(db: Path, ring: Keyring, at: datetime) -> AsOf:
    """The answer to "what was live at ``at``", and the same answer from a bundle an
    auditor checks offline (it must not disagree)."""
    with LedgerReader(db) as reader:
        answer = asof(reader, "checkout", "prod", at)
        query = AsOfQuery(kind="asof", service="checkout", environment="prod", at=at)
        bundle, _ = build_bundle(reader, query, ring, LEDGER_KEY)
    report = verify_bundle(bundle, TrustedKey("ledger", LEDGER_KEY.public_raw))
    assert report.answer == answer.model_dump(mode="json") and report.rules == 2
    return answer


def _deploy(at: datetime, ref: str = "CHG-1") -> Event:
    return make_event(time=at, change_ref=ref, image=IMAGE_A, actor="alice")


def _grant(at: datetime, ref: str = "CHG-1", **data: object) -> Event:
    return make_event("approval.granted", time=at, change_ref=ref, approver="carol",
                      image=IMAGE_A, **data)  # fmt: skip


def test_attack_back_dated_grant_recorded_after_the_change(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """An approval emitted after the deployment was chained, dated a minute before it: it
    approves nothing (``recorded_late``), and the answer names it, so a late approval is
    told apart from a missing one."""
    ci, cab, ring = keys
    db = _ledger(tmp_path, ring, [(ci, _deploy(T)), (cab, _grant(T - timedelta(minutes=1)))])
    deployment = _asked(db, ring, T + timedelta(hours=1)).deployment
    assert deployment is not None
    assert (deployment.approved, deployment.unapproved_reason) == (False, "recorded_late")
    assert deployment.approval is None


def test_grants_synced_in_a_batch_after_fast_deploys_are_recorded_late_not_missing(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """An honest flow: an approval system that syncs its grants every few minutes, after
    two quick deployments. The same verdict as the attack (the ledger cannot tell them
    apart), and visible as such: `recorded_late`, with each grant among the evidence."""
    ci, cab, ring = keys
    history = [
        (ci, _deploy(T, "CHG-1")),
        (ci, _deploy(T + timedelta(minutes=2), "CHG-2")),
        (cab, _grant(T - timedelta(minutes=5), "CHG-1")),  # the batch: approved before,
        (cab, _grant(T - timedelta(minutes=4), "CHG-2")),  # recorded after
    ]
    db = _ledger(tmp_path, ring, history)
    early = _asked(db, ring, T + timedelta(minutes=1))
    late = _asked(db, ring, T + timedelta(hours=1))
    for answer, grant in ((early, 3), (late, 4)):
        assert answer.deployment is not None
        assert (answer.deployment.approved, answer.deployment.unapproved_reason) == (
            False, "recorded_late"
        )  # fmt: skip
        assert grant in answer.evidence.entries


def test_a_grant_recorded_before_the_change_approves_it(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    ci, cab, ring = keys
    db = _ledger(tmp_path, ring, [(cab, _grant(T - timedelta(minutes=1))), (ci, _deploy(T))])
    deployment = _asked(db, ring, T + timedelta(hours=1)).deployment
    assert deployment is not None and deployment.approved
    assert deployment.approval is not None and deployment.approval.seq == 1


def test_attack_back_dated_change_inside_a_grants_window(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """A grant valid until T + 1 h (long past when the change is recorded, now); the change
    claims T, inside the window: it is judged by when it was recorded, and has expired."""
    ci, cab, ring = keys
    grant = _grant(T - timedelta(hours=1), valid_until=T + timedelta(hours=1))
    db = _ledger(tmp_path, ring, [(cab, grant), (ci, _deploy(T))])
    deployment = _asked(db, ring, T + timedelta(minutes=30)).deployment
    assert deployment is not None
    assert (deployment.approved, deployment.unapproved_reason) == (False, "expired")


def test_attack_back_dated_change_before_a_grants_revocation(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """The grant was revoked (recorded, dated T + 2 h); a change recorded after that claims
    T, before the revocation's own time: the ledger's order says the grant was revoked by
    then, whatever instant is asked about, even one before the revocation's claimed time."""
    ci, cab, ring = keys
    revocation = make_event("approval.revoked", time=T + timedelta(hours=2), change_ref="CHG-1")
    history = [(cab, _grant(T - timedelta(hours=1))), (cab, revocation), (ci, _deploy(T))]
    db = _ledger(tmp_path, ring, history)
    for at in (T + timedelta(minutes=30), T + timedelta(hours=3)):
        deployment = _asked(db, ring, at).deployment
        assert deployment is not None
        assert (deployment.approved, deployment.unapproved_reason) == (False, "revoked"), at


def test_a_revocation_recorded_after_the_change_revokes_nothing_of_it(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """Dated between the grant and the change, but recorded after the change: what the
    ledger witnessed first stands (a back-dated revocation cannot unapprove a change)."""
    ci, cab, ring = keys
    revocation = make_event("approval.revoked", time=T - timedelta(minutes=30), change_ref="CHG-1")
    history = [(cab, _grant(T - timedelta(hours=1))), (ci, _deploy(T)), (cab, revocation)]
    db = _ledger(tmp_path, ring, history)
    deployment = _asked(db, ring, T + timedelta(hours=1)).deployment
    assert deployment is not None and deployment.approved


def test_a_back_dated_history_is_visible_never_silent(
    keys: tuple[Signer, Signer, Keyring], tmp_path: Path
) -> None:
    """Events claiming November, recorded now: accepted and placed by the time they claim,
    and the timeline shows when the ledger witnessed each (JSON and table)."""
    ci, _, ring = keys
    db = _ledger(tmp_path, ring, [(ci, _deploy(T))])
    with LedgerReader(db) as reader:
        (entry,) = timeline(reader, "checkout", "prod")
    assert entry.time == T and entry.witnessed_at is not None
    assert entry.witnessed_at - entry.time > timedelta(days=1)
    shown = ledger_cli("timeline", "--db", str(db), "--service", "checkout", "--env", "prod")
    assert shown.returncode == 0, shown.stderr
    assert "recorded +" in shown.stdout
