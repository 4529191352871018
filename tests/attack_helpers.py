"""Helpers shared by the attack tests: a ledger with a witness file (built with
ledger_builders, without Kafka), edits as an attacker with write access to the file would
make them (plain SQL, hashes and tree recomputed when the attack calls for it), and
`ledger verify` run on them.

Nothing here is a fixture; the test modules build what they need.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from consumer_helpers import cli_json, entries, ledger_cli
from helpers import make_event
from ledger_builders import append, signers

from ledger.errors import ChainBrokenError, CheckpointError
from ledger.evidence.bundle import PAYLOAD_TYPE as BUNDLE_PAYLOAD_TYPE
from ledger.log.chain import GENESIS, Origin, Witness, entry_hash, entry_hash_v2, micros
from ledger.log.chain import Witnessed as EntryWitnessed
from ledger.log.checkpoint import Checkpoint, TrustedKey, sign_checkpoint, verifier_key
from ledger.log.merkle import CompactRange, leaf_hash, root_at
from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.store.schema import ENTRY_COLUMNS
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.transport.witness import append_note
from ledger.wire.envelope import pae
from ledger.wire.keyring import Keyring, Signer

LEDGER_KEY = "ledger"  # the checkpoint signer's key name (its .pub file's stem)
EVENT_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # event n is dated n hours later


def entry(db: Path, seq: int) -> dict[str, Any]:
    """The stored row of entry ``seq``."""
    return next(r for r in entries(db) if r["seq"] == seq)


def execute(db: Path, statement: str, *params: Any) -> None:
    """One SQL statement on the file, in a connection of its own."""
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(statement, list(params))
    finally:
        con.close()


def replace_rows(db: Path, old_seqs: list[int], rows: list[dict[str, Any]]) -> None:
    """Delete rows by seq, then insert the given rows (all columns), in one transaction."""
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM entries WHERE seq IN (SELECT unnest(?))", [old_seqs])
        for values in rows:
            con.execute(
                f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in ENTRY_COLUMNS)})",
                [values[name] for name in ENTRY_COLUMNS],
            )
        con.execute("COMMIT")
    finally:
        con.close()


def row_hash(row: dict[str, Any], prev: bytes) -> bytes:
    """A stored row's chain hash on top of ``prev``, by its format's construction
    (docs/formats.md §6): what anyone who knows it computes from the row."""
    seq, ingested, envelope = row["seq"], micros(row["ingested_at"]), bytes(row["envelope"])
    if row["format"] == 1:
        return entry_hash(seq, ingested, prev, envelope)
    witnessed = EntryWitnessed(
        micros(row["witnessed_at"]), Witness(row["witness"]), Origin(row["origin"]),
        bytes(row["keyring"]), row["kafka_topic"] or "",
        -1 if row["kafka_partition"] is None else row["kafka_partition"],
        -1 if row["kafka_offset"] is None else row["kafka_offset"],
    )  # fmt: skip
    return entry_hash_v2(seq, ingested, prev, envelope, witnessed)


def rewrite_chain(db: Path, rows: list[dict[str, Any]]) -> bytes:
    """Replace every entry with ``rows``, renumbered 1..n, every hash and the whole tree
    recomputed: a chain rewritten consistently by someone who knows the construction.
    Returns the new tree's root."""
    prev = GENESIS
    for seq, values in enumerate(rows, 1):
        values["seq"], values["prev_hash"] = seq, prev
        values["hash"] = prev = row_hash(values, prev)
    replace_rows(db, [r["seq"] for r in entries(db)], rows)
    return rebuild_tree(db)


def rebuild_tree(db: Path) -> bytes:
    """Recompute every tree node from the stored entry hashes, as the writer would have;
    returns the root."""
    tree, nodes = CompactRange(), []
    for values in entries(db):
        last = tree.size
        completed = tree.append(leaf_hash(bytes(values["hash"])))
        nodes += [[level, last, node] for level, node in enumerate(completed)]
    con = duckdb.connect(str(db))
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM tree_nodes")
        con.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)", nodes)
        con.execute("COMMIT")
    finally:
        con.close()
    return tree.root()


def re_sign_checkpoints(db: Path, signer: Signer, pin: bool = True) -> None:
    """Replace every stored checkpoint by one of the same size, signed by ``signer`` over
    the current tree (sizes beyond the ledger are dropped); with ``pin``, pin ``signer`` as
    the ledger's key too, as an attacker holding the file would."""
    with LedgerReader(db) as reader:
        origin = reader.meta()["origin"]
        sizes = [size for size, _, _, _ in reader.checkpoints() if size <= reader.size()]
        roots = {size: root_at(reader.tree(), size) for size in sizes}
    vkey = verifier_key(signer.key_id, signer.public_raw)
    execute(db, "DELETE FROM checkpoints")
    for size in sizes:
        note = sign_checkpoint(Checkpoint(origin, size, roots[size]), signer)
        execute(db, "INSERT INTO checkpoints VALUES (?, ?, ?, ?, now())", size, roots[size], note,
            vkey)  # fmt: skip
    if pin:
        execute(db, "UPDATE meta SET value = ? WHERE key = 'ledger_key'", vkey)


def failure(
    db: Path, ring: Keyring | None, trusted: Signer | None = None,
    witness: Sequence[str] = (), workers: int = 1, batch_rows: int = 10_000,
) -> ChainBrokenError | CheckpointError:  # fmt: skip
    """The failure `ledger verify` reports (the test fails if the ledger verifies)."""
    key = TrustedKey(trusted.key_id, trusted.public_raw) if trusted is not None else None
    with LedgerReader(db) as reader:
        report = verify_ledger(
            reader, ring, trusted=key, workers=workers, batch_rows=batch_rows,
            external=[(f"witness#{i}", note) for i, note in enumerate(witness, 1)],
        )  # fmt: skip
    assert report.failure is not None, "the tampered ledger verified"
    # Drop the traceback: its frames would keep the file open read-only in this process.
    return report.failure.with_traceback(None)


# --- a ledger with signed checkpoints and a witness file ----------------------------------------


@dataclass(frozen=True)
class Witnessed:
    """A ledger with a checkpoint signed after each batch, and what is kept outside it."""

    db: Path
    ring: Keyring
    keyring: Path  # the producers' keyring, saved
    ledger_key: Signer  # signs the checkpoints
    pub: Path  # the ledger's public key, as a verifier keeps it (ledger.pub)
    witness: Path  # every checkpoint note, appended as the consumer does
    early: Path  # a copy of the ledger file after the first two batches
    notes: tuple[str, ...]

    def note(self, size: int) -> str:
        """The witnessed checkpoint note of this tree size."""
        return next(n for n in self.notes if n.splitlines()[1] == str(size))


def witnessed_ledger(home: Path, batches: int = 4, per_batch: int = 3) -> Witnessed:
    """``batches`` batches of CI deployments, event ``n`` dated ``EVENT_TIME + n`` hours,
    each batch followed by a signed checkpoint (sizes 3, 6, 9, 12 by default)."""
    ci, _, ring = signers()
    ledger_key = Signer.generate(LEDGER_KEY)
    paths = {name: home / name for name in ("ledger.duckdb", "keyring.json", "ledger.pub",
                                           "ledger.witness", "early.duckdb")}  # fmt: skip
    ring.save(paths["keyring.json"])
    paths["ledger.pub"].write_bytes(ledger_key.public_pem())
    notes = []
    for b in range(batches):
        values = [
            seal(make_event(time=EVENT_TIME + timedelta(hours=n), actor=f"user-{n}"), ci)
            for n in range(b * per_batch + 1, (b + 1) * per_batch + 1)
        ]
        writer = LedgerWriter(paths["ledger.duckdb"], checkpoint_signer=ledger_key)
        try:  # a writer per batch, so the file is complete (no WAL) between batches
            note = append(writer, ring, values, b * per_batch, checkpoint=True)
        finally:
            writer.close()
        assert note is not None
        append_note(paths["ledger.witness"], note)
        notes.append(note)
        if b == 1:
            shutil.copy(paths["ledger.duckdb"], paths["early.duckdb"])
    return Witnessed(paths["ledger.duckdb"], ring, paths["keyring.json"], ledger_key,
                     paths["ledger.pub"], paths["ledger.witness"], paths["early.duckdb"],
                     tuple(notes))  # fmt: skip


def verify_cli(witnessed: Witnessed, db: Path, *options: str) -> tuple[int, dict[str, Any]]:
    """``ledger verify --db DB --keyring K --json OPTIONS``: exit code and the JSON report."""
    result = ledger_cli("verify", "--db", str(db), "--keyring", str(witnessed.keyring),
                        "--json", *options)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, cli_json(result)


def with_witness(witnessed: Witnessed, witness: Path | None = None) -> tuple[str, ...]:
    """The command-line options that check the kept witness file under the trusted key."""
    return ("--trusted-key", str(witnessed.pub), "--checkpoint", str(witness or witnessed.witness))


def truncate(db: Path, size: int, *, tree: bool = True, checkpoints: bool = True) -> None:
    """Cut the ledger back to ``size`` entries; by default tidy the tree and the stored
    checkpoints too, as a careful attacker would."""
    execute(db, "DELETE FROM entries WHERE seq > ?", size)
    if tree:
        execute(db, "DELETE FROM tree_nodes WHERE last >= ?", size)
    if checkpoints:
        execute(db, "DELETE FROM checkpoints WHERE size > ?", size)


# --- evidence bundles, as an insider holding the ledger key edits them ----------------------

Statement = dict[str, Any]
"""A bundle's in-toto statement as plain JSON, to edit."""


def statement_of(data: bytes) -> Statement:
    """The statement inside a bundle file."""
    statement: Statement = json.loads(base64.b64decode(json.loads(data)["payload"]))
    return statement


def signed_statement(statement: Statement, key: Signer) -> bytes:
    """A DSSE envelope over the statement, as whoever holds ``key`` would write it."""
    payload = json.dumps(statement).encode()
    signature = key.sign(pae(BUNDLE_PAYLOAD_TYPE, payload))
    return json.dumps({
        "payloadType": BUNDLE_PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(signature).decode()}],
    }).encode()  # fmt: skip


def resigned(data: bytes, edit: Callable[[Statement], object], key: Signer) -> bytes:
    """The bundle with its statement edited, signed again by ``key``."""
    statement = statement_of(data)
    edit(statement)
    return signed_statement(statement, key)
