"""Rotating a producer key, and the honest flows around it: a key *retired* (its owner moved
to a new one) keeps a bounded grace for its events in flight; a key *revoked* (compromised)
keeps none. Judged by when the ledger witnessed each event, with the time the event claims
only ever narrowing (it must predate the retirement).

Each flow has a visible outcome: accepted, with the gap between claimed and witnessed time
kept, or refused with a reason that names the key, the date and the window.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from consumer_helpers import cli_json, ledger_cli
from helpers import make_event
from test_signature_attacks import refused

from ledger.errors import KeyExpiredError, KeyRetiredError, KeyRevokedError
from ledger.transport.producer import seal
from ledger.wire.keyring import RETIRED_KEY_GRACE, Keyring, Signer
from ledger.wire.verify import verify_message

RETIRED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
"""When the CI key is retired: its owner, the CI system, moved to its successor."""


@pytest.fixture
def retired(keyring: Keyring) -> Keyring:
    keyring.retire("ci-main", RETIRED)
    return keyring


def test_a_spool_flushed_within_the_grace_is_accepted(ci_signer: Signer, retired: Keyring) -> None:
    """Deployments made an hour before the retirement, spooled through an outage and
    delivered two days later: accepted, each placed at the time it claims."""
    event = make_event(time=RETIRED - timedelta(hours=1))
    verified = verify_message(seal(event, ci_signer), retired, RETIRED + timedelta(days=2))
    assert verified.event.time == RETIRED - timedelta(hours=1)


def test_a_spool_flushed_after_the_grace_is_refused_and_says_until_when(
    ci_signer: Signer, retired: Keyring
) -> None:
    event = make_event(time=RETIRED - timedelta(hours=1))
    late = RETIRED + RETIRED_KEY_GRACE
    message = refused(seal(event, ci_signer), retired, KeyRetiredError, "key_retired", late)
    assert "accepted until 2026-11-23T12:00:00Z" in message
    assert "witnessed this event at 2026-11-23T12:00:00Z" in message


def test_attack_retired_key_signs_an_event_dated_after_its_retirement(
    ci_signer: Signer, retired: Keyring
) -> None:
    """A retired key is not a valid key for anything new, whenever it arrives."""
    event = make_event(time=RETIRED + timedelta(minutes=1))
    witnessed = RETIRED + timedelta(minutes=2)
    message = refused(seal(event, ci_signer), retired, KeyRetiredError, "key_retired", witnessed)
    assert "not before it" in message


def test_attack_back_dated_event_by_a_retired_key_is_bounded_by_the_grace(
    ci_signer: Signer, retired: Keyring
) -> None:
    """Whoever still holds a retired key can date an event before the retirement: that buys
    at most the grace, a constant of the rules, never more (a key feared stolen is revoked)."""
    back_dated = make_event(time=RETIRED - timedelta(days=30))
    within = RETIRED + RETIRED_KEY_GRACE - timedelta(seconds=1)
    assert verify_message(seal(back_dated, ci_signer), retired, within).key_id == "ci-main"
    after = RETIRED + RETIRED_KEY_GRACE
    refused(seal(back_dated, ci_signer), retired, KeyRetiredError, "key_retired", after)


def test_attack_compromised_key_gets_no_grace(ci_signer: Signer, retired: Keyring) -> None:
    """Retired, then found to be stolen: the revocation wins, with no window at all."""
    retired.revoke("ci-main", RETIRED + timedelta(hours=1))
    event = make_event(time=RETIRED - timedelta(hours=1))
    witnessed = RETIRED + timedelta(hours=1)
    refused(seal(event, ci_signer), retired, KeyRevokedError, "key_revoked", witnessed)


def test_importing_a_history_signed_by_retired_keys_is_refused_by_name(
    ci_signer: Signer, retired: Keyring
) -> None:
    """A history signed months ago by a key retired since, imported now: refused
    (`key_retired`, quarantined with its bytes); docs/operations.md says how to import one
    (under a key trusted now, whose events keep the times they claim)."""
    history = [make_event(time=RETIRED - timedelta(days=90 - d)) for d in range(3)]
    now = RETIRED + timedelta(days=30)
    for event in history:
        refused(seal(event, ci_signer), retired, KeyRetiredError, "key_retired", now)
    importer = Signer.generate("import-2026")
    retired.trust(importer.key_id, importer.public_raw, types=["deployment.*"], sources=["ci/*"])
    for event in history:
        assert verify_message(seal(event, importer), retired, now).event.time < RETIRED


def test_a_backlog_after_an_outage_is_judged_when_it_arrives(
    ci_signer: Signer, keyring: Keyring
) -> None:
    """Consumer down for six hours: the backlog is judged as it arrives. A key still valid
    then accepts it; one that expired in between refuses it by name (`key_expired`)."""
    claimed = RETIRED - timedelta(hours=6)
    event = make_event(time=claimed)
    assert verify_message(seal(event, ci_signer), keyring, RETIRED).event.time == claimed
    keyring.trust("ci-main", ci_signer.public_raw, types=["deployment.*"], sources=["ci/*"],
                  not_after=RETIRED - timedelta(hours=1))  # fmt: skip
    message = refused(seal(event, ci_signer), keyring, KeyExpiredError, "key_expired", RETIRED)
    assert "expired at 2026-11-20T11:00:00Z" in message


def test_retiring_keeps_the_digest_of_a_keyring_that_retires_nothing(keyring: Keyring) -> None:
    """Entries commit to their keyring's digest: a keyring file written before retirement
    existed has the same bytes, and digest, read by this version."""
    assert b"retired_at" not in keyring.canonical()
    assert json.loads(keyring.canonical()) == keyring.model_dump(mode="json")
    keyring.retire("ci-main", RETIRED)
    assert (
        json.loads(keyring.canonical())["keys"]["ci-main"]["retired_at"] == "2026-11-20T12:00:00Z"
    )


def test_keys_retire_then_list(tmp_path: Path, ci_signer: Signer) -> None:
    pub = tmp_path / "ci-main.pub"
    pub.write_bytes(ci_signer.public_pem())
    ring = tmp_path / "keyring.json"
    result = ledger_cli("keys", "trust", "--keyring", str(ring), "--pub", str(pub),
                        "--types", "deployment.*", "--sources", "ci/*")  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = ledger_cli("keys", "retire", "--keyring", str(ring), "--id", "ci-main",
                        "--at", "2026-11-20T12:00:00Z")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accepted until 2026-11-23T12:00:00Z" in result.stdout + result.stderr
    listing = cli_json(ledger_cli("keys", "list", "--keyring", str(ring), "--json"))
    assert listing["ci-main"]["retired_at"] == "2026-11-20T12:00:00Z"
    assert listing["ci-main"]["revoked_at"] is None
    again = ledger_cli("keys", "trust", "--keyring", str(ring), "--pub", str(pub),
                       "--types", "deployment.*", "--sources", "ci/*")  # fmt: skip
    assert again.returncode == 2 and "was retired; trust its successor" in again.stderr
