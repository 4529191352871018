"""Spawned worker processes that hold the keyring: where signatures are checked.

Ed25519 verification costs ~57 µs a core, so the consumer (each message) and
``ledger verify`` (each stored entry) spread it over one process per core. Workers are
spawned, not forked (the consumer runs Kafka and HTTP threads), and import only the pure
core: this module and ledger.wire. They ignore SIGINT and SIGTERM: stopping is the
parent's job, which finishes what it is doing and shuts the pool down; if the parent dies
(even by SIGKILL), a watcher thread in each worker sees it and the worker exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ledger.errors import RejectedMessage
from ledger.log.chain import NO_KEYRING, Origin
from ledger.wire.columns import DecodedColumns, decoded_columns
from ledger.wire.keyring import Keyrings
from ledger.wire.verify import verify_entry, verify_message, verify_record_entry

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "EntryFailure",
    "Outcome",
    "Received",
    "check_entries",
    "check_entries_in_worker",
    "spawn_pool",
    "verify_values",
    "verify_values_in_worker",
]

Outcome = tuple[DecodedColumns | None, str, str]
"""A received message's verdict: (columns of the verified event, "", "") or (None, the
refusal reason, detail)."""

EntryFailure = tuple[int, str, str]
"""(seq, check, message) of a stored entry that failed one of ``ledger verify``'s checks
6-8 (or ``keyring``: judged under a keyring the ledger does not record)."""

_keyrings: Keyrings | None = None


def spawn_pool(keyrings: Keyrings, workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each with its own copy of ``keyrings``."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(keyrings.model_dump_json(),),
    )


Received = tuple[bytes | None, int]
"""A received message value (None: a record without one) and when the ledger witnessed it
(µs since the epoch)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def verify_values(messages: Sequence[Received], keyrings: Keyrings) -> list[Outcome]:
    """The consumer's check of received messages, in order, under ``keyrings.default``."""
    keyring = keyrings.default
    if keyring is None:
        raise RuntimeError("the consumer's workers judge under one keyring, the default")
    outcomes: list[Outcome] = []
    for value, witnessed_us in messages:
        try:
            verified = verify_message(value, keyring, _EPOCH + timedelta(microseconds=witnessed_us))
        except RejectedMessage as exc:
            outcomes.append((None, exc.reason, exc.message))
        else:
            outcomes.append((decoded_columns(verified.event, verified.key_id), "", ""))
    return outcomes


def check_entries(batch: pa.RecordBatch, keyrings: Keyrings) -> EntryFailure | None:
    """``ledger verify``'s checks 6-8 over a batch of stored entries, whose columns are
    seq, envelope, the witnessed time (µs), the keyring digest, the origin (all null for
    format 1) and the :class:`DecodedColumns` fields: the failure at the lowest seq.

    An entry judged under a recorded keyring is checked under it; one of format 1, or
    judged under none the ledger recorded (its digest zeros: a ledger written by the
    library, not the consumer), under the keyring given, and not at all without one.
    """
    columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    first: EntryFailure | None = None
    given = keyrings.default
    for seq, envelope, witnessed_us, digest, origin, *values in zip(*columns, strict=True):
        if first is not None and seq > first[0]:
            continue
        stored = DecodedColumns(*values)
        witnessed = None if witnessed_us is None else _EPOCH + timedelta(microseconds=witnessed_us)
        if origin == Origin.LEDGER:
            failure = verify_record_entry(seq, envelope, stored)
        elif digest is None or digest == NO_KEYRING:  # format 1, or judged under no record
            if given is None:
                continue  # no keyring given to check it under
            failure = verify_entry(seq, envelope, stored, given, witnessed)
        elif (keyring := keyrings.recorded.get(digest.hex())) is None:
            failure = ("keyring", f"entry {seq}: judged under keyring {digest.hex()[:16]}…, "
                       "which the ledger does not record")  # fmt: skip
        else:
            failure = verify_entry(seq, envelope, stored, keyring, witnessed)
        if failure is not None:
            first = (seq, *failure)
    return first


def verify_values_in_worker(messages: Sequence[Received]) -> list[Outcome]:
    """:func:`verify_values` under the keyrings this worker was started with."""
    return verify_values(messages, _worker_keyrings())


def check_entries_in_worker(batch: pa.RecordBatch) -> EntryFailure | None:
    """:func:`check_entries` under the keyrings this worker was started with."""
    return check_entries(batch, _worker_keyrings())


def _worker_keyrings() -> Keyrings:
    if _keyrings is None:
        raise RuntimeError("not in a worker started by spawn_pool (no keyrings)")
    return _keyrings


def _init_worker(keyrings_json: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _keyrings
    _keyrings = Keyrings.model_validate_json(keyrings_json)
    # A worker holds its own end of the task queue, so a parent killed with SIGKILL leaves
    # it waiting forever (and the resource tracker with it): watch the parent instead.
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent process is gone
        os._exit(0)
