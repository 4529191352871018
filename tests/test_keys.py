"""`ledger keys`: key files, the keyring they are trusted in, and what an entry authorizes."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import make_event
from typer.testing import CliRunner, Result

from ledger.cli import app
from ledger.errors import (
    ConfigurationError,
    KeyExpiredError,
    KeyNotAllowedForSourceError,
    KeyNotAllowedForTypeError,
    KeyRevokedError,
)
from ledger.transport.producer import seal
from ledger.wire.keyring import Keyring, Signer, key_fingerprint, load_public_key
from ledger.wire.verify import verify_message

runner = CliRunner()

WITNESSED = datetime(2026, 11, 20, 14, 4, tzinfo=UTC)
"""When the ledger witnesses the events these tests make (dated 14:03 by make_event)."""


def ledger(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = ledger(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    ok("keys", "generate", "--id", "ci-github", "--out", tmp_path / "keys")
    ok("keys", "generate", "--id", "cab", "--out", tmp_path / "keys")
    return tmp_path / "keys"


# --- generate ----------------------------------------------------------------------------------


def test_generate_writes_a_private_key_readable_only_by_its_owner(tmp_path: Path) -> None:
    result = ok("keys", "generate", "--id", "ci-github", "--out", tmp_path / "keys", "--json")
    key, pub = tmp_path / "keys" / "ci-github.key", tmp_path / "keys" / "ci-github.pub"

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    signer = Signer.from_file(key)
    assert signer.key_id == "ci-github"
    assert signer.public_raw == load_public_key(pub)

    report = json.loads(result.stdout)
    assert report["id"] == "ci-github"
    assert report["private_key"] == str(key)
    assert report["fingerprint"] == key_fingerprint(load_public_key(pub))


def test_generate_makes_a_new_key_each_time(tmp_path: Path) -> None:
    ok("keys", "generate", "--id", "a", "--out", tmp_path)
    ok("keys", "generate", "--id", "b", "--out", tmp_path)
    assert load_public_key(tmp_path / "a.pub") != load_public_key(tmp_path / "b.pub")


@pytest.mark.parametrize("existing", ["ci.key", "ci.pub"])
def test_generate_refuses_to_overwrite_a_key(tmp_path: Path, existing: str) -> None:
    ok("keys", "generate", "--id", "ci", "--out", tmp_path)
    (tmp_path / ("ci.pub" if existing == "ci.key" else "ci.key")).unlink()
    before = (tmp_path / existing).read_bytes()

    result = ledger("keys", "generate", "--id", "ci", "--out", tmp_path)

    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert (tmp_path / existing).read_bytes() == before


def test_generate_refuses_a_bad_id(tmp_path: Path) -> None:
    result = ledger("keys", "generate", "--id", "../escape", "--out", tmp_path)
    assert result.exit_code == 2
    assert "--id" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- trust -------------------------------------------------------------------------------------


def test_trust_writes_an_entry_that_authorizes_only_what_it_names(
    tmp_path: Path, keys_dir: Path
) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "ci-github.pub",
        "--types",
        "deployment.*, mutation.applied",
        "--sources",
        "ci/github/*",
    )

    ring = Keyring.load(ring_path)
    entry = ring.keys["ci-github"]
    assert entry.types == ["deployment.*", "mutation.applied"]
    assert entry.sources == ["ci/github/*"]
    assert entry.public_raw == load_public_key(keys_dir / "ci-github.pub")
    assert entry.revoked_at is None
    assert entry.added_at is not None

    signer = Signer.from_file(keys_dir / "ci-github.key")
    for kind in ("deployment.succeeded", "deployment.rolled_back", "mutation.applied"):
        event = make_event(kind, source="ci/github/acme/checkout")
        assert verify_message(seal(event, signer), ring, WITNESSED).key_id == "ci-github"
    for kind in ("approval.granted", "service.classified"):
        with pytest.raises(KeyNotAllowedForTypeError):
            verify_message(seal(make_event(kind, source="ci/github/acme"), signer), ring, WITNESSED)
    with pytest.raises(KeyNotAllowedForSourceError):
        verify_message(seal(make_event(source="ci/gitlab/acme/checkout"), signer), ring, WITNESSED)


def test_keyring_is_json_with_the_documented_fields(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "cab.pub",
        "--types",
        "approval.*",
        "--sources",
        "cab/*",
        "--not-after",
        "2027-01-01T01:00:00+01:00",
    )
    raw = json.loads(ring_path.read_text())
    assert raw["version"] == 1
    entry = raw["keys"]["cab"]
    assert set(entry) >= {"public_key", "types", "sources", "not_before", "not_after", "revoked_at"}
    assert entry["types"] == ["approval.*"]
    assert datetime.fromisoformat(entry["not_after"]) == datetime(2027, 1, 1, tzinfo=UTC)


def test_trust_not_after_expires_the_key(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "ci-github.pub",
        "--types",
        "deployment.*",
        "--sources",
        "ci/*",
        "--not-after",
        "2026-11-20T14:00:00Z",
    )
    signer = Signer.from_file(keys_dir / "ci-github.key")
    with pytest.raises(KeyExpiredError):
        verify_message(seal(make_event(), signer), Keyring.load(ring_path), WITNESSED)


def test_trust_defaults_the_id_to_the_file_name_and_accepts_an_explicit_id(
    tmp_path: Path, keys_dir: Path
) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "ci-github.pub")
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub", "--id", "board")
    assert set(Keyring.load(ring_path).keys) == {"ci-github", "board"}


def test_trusting_another_public_key_under_an_existing_id_is_refused(
    tmp_path: Path, keys_dir: Path
) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "ci-github.pub")
    before = ring_path.read_bytes()

    result = ledger(
        "keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub", "--id", "ci-github"
    )

    assert result.exit_code == 2
    assert "already trusted with another public key" in result.stderr
    assert ring_path.read_bytes() == before


def test_trusting_the_same_key_again_updates_its_authorization(
    tmp_path: Path, keys_dir: Path
) -> None:
    ring_path = tmp_path / "keyring.json"
    pub = keys_dir / "ci-github.pub"
    ok("keys", "trust", "--keyring", ring_path, "--pub", pub, "--types", "deployment.*")
    ok("keys", "trust", "--keyring", ring_path, "--pub", pub, "--types", "mutation.*")
    assert Keyring.load(ring_path).keys["ci-github"].types == ["mutation.*"]


def test_trust_refuses_a_private_key_or_a_missing_file(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    for pub in (keys_dir / "ci-github.key", tmp_path / "missing.pub"):
        result = ledger("keys", "trust", "--keyring", ring_path, "--pub", pub, "--id", "x")
        assert result.exit_code == 2
        assert str(pub) in result.stderr
    assert not ring_path.exists()


def test_trust_refuses_an_empty_pattern_list(tmp_path: Path, keys_dir: Path) -> None:
    result = ledger(
        "keys",
        "trust",
        "--keyring",
        tmp_path / "k.json",
        "--pub",
        keys_dir / "cab.pub",
        "--types",
        " , ",
    )
    assert result.exit_code == 2
    assert "--types" in result.stderr


def test_a_revoked_key_cannot_be_trusted_again(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub")
    ok("keys", "revoke", "--keyring", ring_path, "--id", "cab")
    result = ledger("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub")
    assert result.exit_code == 2
    assert "revoked" in result.stderr
    assert Keyring.load(ring_path).keys["cab"].revoked_at is not None


# --- revoke ------------------------------------------------------------------------------------


def test_revoke_at_sets_revoked_at_and_refuses_later_events(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "ci-github.pub",
        "--types",
        "deployment.*",
        "--sources",
        "ci/*",
    )
    result = ok(
        "keys",
        "revoke",
        "--keyring",
        ring_path,
        "--id",
        "ci-github",
        "--at",
        "2026-11-20T15:00:00+01:00",
        "--json",
    )

    assert json.loads(result.stdout)["revoked_at"].startswith("2026-11-20T14:00:00")
    ring = Keyring.load(ring_path)
    assert ring.keys["ci-github"].revoked_at == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)

    signer = Signer.from_file(keys_dir / "ci-github.key")
    event = make_event(time=datetime(2026, 11, 20, 13, 59, tzinfo=UTC))
    early = datetime(2026, 11, 20, 13, 59, 30, tzinfo=UTC)  # witnessed before the revocation
    assert verify_message(seal(event, signer), ring, early).event == event
    with pytest.raises(KeyRevokedError):  # the same event, witnessed after it
        verify_message(seal(event, signer), ring, datetime(2026, 11, 20, 14, 0, tzinfo=UTC))


def test_revoking_later_does_not_push_back_an_earlier_revocation(
    tmp_path: Path, keys_dir: Path
) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub")
    ok("keys", "revoke", "--keyring", ring_path, "--id", "cab", "--at", "2026-11-20T10:00:00Z")
    ok("keys", "revoke", "--keyring", ring_path, "--id", "cab", "--at", "2026-12-01T00:00:00Z")
    assert Keyring.load(ring_path).keys["cab"].revoked_at == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_revoke_without_at_revokes_now(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub")
    before = datetime.now(UTC)
    ok("keys", "revoke", "--keyring", ring_path, "--id", "cab")
    revoked_at = Keyring.load(ring_path).keys["cab"].revoked_at
    assert revoked_at is not None
    assert before <= revoked_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--id", "nobody"], "not in the keyring"),
        (["--id", "cab", "--at", "2026-11-20T10:00:00"], "offset"),
        (["--id", "cab", "--at", "yesterday"], "RFC 3339"),
    ],
)
def test_revoke_refusals(tmp_path: Path, keys_dir: Path, args: list[str], expected: str) -> None:
    ring_path = tmp_path / "keyring.json"
    ok("keys", "trust", "--keyring", ring_path, "--pub", keys_dir / "cab.pub")
    result = ledger("keys", "revoke", "--keyring", ring_path, *args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert Keyring.load(ring_path).keys["cab"].revoked_at is None


# --- list --------------------------------------------------------------------------------------


def test_list_json_shows_every_key_with_its_authorization(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "ci-github.pub",
        "--types",
        "deployment.*,mutation.*",
        "--sources",
        "ci/*",
    )
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "cab.pub",
        "--types",
        "approval.*",
        "--sources",
        "cab/*",
    )
    ok("keys", "revoke", "--keyring", ring_path, "--id", "cab", "--at", "2026-11-20T10:00:00Z")

    listing = json.loads(ok("keys", "list", "--keyring", ring_path, "--json").stdout)

    assert set(listing) == {"ci-github", "cab"}
    assert listing["ci-github"]["types"] == ["deployment.*", "mutation.*"]
    assert listing["ci-github"]["sources"] == ["ci/*"]
    assert listing["ci-github"]["revoked_at"] is None
    assert listing["ci-github"]["fingerprint"] == key_fingerprint(
        load_public_key(keys_dir / "ci-github.pub")
    )
    assert listing["cab"]["types"] == ["approval.*"]
    assert listing["cab"]["revoked_at"].startswith("2026-11-20T10:00:00")


def test_list_table_names_each_key(tmp_path: Path, keys_dir: Path) -> None:
    ring_path = tmp_path / "keyring.json"
    ok(
        "keys",
        "trust",
        "--keyring",
        ring_path,
        "--pub",
        keys_dir / "cab.pub",
        "--types",
        "approval.*",
    )
    assert "cab" in ok("keys", "list", "--keyring", ring_path).stdout


def test_list_of_a_missing_keyring_says_how_to_create_it(tmp_path: Path) -> None:
    result = ledger("keys", "list", "--keyring", tmp_path / "none.json")
    assert result.exit_code == 2
    assert "ledger keys trust" in result.stderr


def test_corrupt_keyring_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(
        '{"version": 1, "keys": {"x": {"public_key": "short", "types": ["*"], "sources": ["*"]}}}'
    )
    with pytest.raises(ConfigurationError, match="public_key"):
        Keyring.load(path)


@pytest.mark.parametrize(
    ("field", "value"), [("not_after", 1_893_456_000), ("version", "1"), ("types", "*")]
)
def test_a_keyring_value_of_the_wrong_kind_is_refused_not_converted(
    tmp_path: Path, field: str, value: object
) -> None:
    """A number is not a time (it was read as seconds since 1970), "1" is not 1."""
    entry: dict[str, object] = {"public_key": "A" * 43 + "=", "types": ["*"], "sources": ["*"]}
    document: dict[str, object] = {"version": 1, "keys": {"ci": entry}}
    (document if field == "version" else entry)[field] = value
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match=field):
        Keyring.load(path)


def test_a_keyring_that_is_not_json_or_not_a_file_is_named_plainly(tmp_path: Path) -> None:
    garbled = tmp_path / "keyring.json"
    garbled.write_text("not json")
    with pytest.raises(ConfigurationError) as exc:
        Keyring.load(garbled)
    assert exc.value.message.startswith(f"keyring {garbled}: Invalid JSON")
    result = ledger("keys", "list", "--keyring", tmp_path)  # a directory
    assert result.exit_code == 2
    assert f"cannot read keyring {tmp_path}" in result.stderr
