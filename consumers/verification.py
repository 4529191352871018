"""Signature verification spread over worker processes (Ed25519 costs ~57 µs a core).

Workers are spawned (not forked: the consumer runs Kafka and HTTP threads) and import only
the pure verification core. They ignore SIGINT and SIGTERM: stopping is the parent's job,
which finishes its batch and then shuts the pool down; if the parent dies (even by
SIGKILL), a watcher thread in each worker sees it and the worker exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from ledger.entries import DecodedColumns, decoded_columns
from ledger.errors import RejectedMessage
from ledger.keys import Keyring
from ledger.verify import verify_message

__all__ = ["Outcome", "Verifier"]

Outcome = tuple[DecodedColumns | None, str, str]
"""(columns of the verified event, or None with the refusal reason and detail)."""

_worker_keyring: Keyring | None = None


def _init_worker(keyring_json: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _worker_keyring
    _worker_keyring = Keyring.model_validate_json(keyring_json)
    # A worker holds its own end of the task queue, so a parent killed with SIGKILL leaves
    # it waiting forever (and the resource tracker with it): watch the parent instead.
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent process is gone
        os._exit(0)


def _verify_in_worker(values: Sequence[bytes]) -> list[Outcome]:
    if _worker_keyring is None:
        raise RuntimeError("verification worker started without a keyring")
    return verify_all(values, _worker_keyring)


def verify_all(values: Sequence[bytes], keyring: Keyring) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for value in values:
        try:
            verified = verify_message(value, keyring)
        except RejectedMessage as exc:
            outcomes.append((None, exc.reason, exc.message))
        else:
            outcomes.append((decoded_columns(verified.event, verified.key_id), "", ""))
    return outcomes


class Verifier:
    """Verifies batches inline (one worker) or across a pool of processes."""

    def __init__(self, keyring: Keyring, workers: int) -> None:
        self.keyring = keyring
        self.workers = workers
        self._pool = (
            ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(keyring.model_dump_json(),),
            )
            if workers > 1
            else None
        )

    def submit(self, values: Sequence[bytes]) -> Callable[[], list[Outcome]]:
        """Start verifying a batch; the returned call waits for the outcomes, in order.

        The consumer fetches the next batch while the workers verify this one.
        """
        if self._pool is None or len(values) < 64:
            outcomes = verify_all(values, self.keyring)
            return lambda: outcomes
        size = -(-len(values) // self.workers)
        futures = [self._pool.submit(_verify_in_worker, values[i : i + size])
                   for i in range(0, len(values), size)]
        return lambda: [o for future in futures for o in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
