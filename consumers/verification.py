"""Signature verification of received messages, inline or in the shared worker pool.

The pool (ledger/workers.py) is one spawned process per core holding the keyring; Ed25519
costs ~57 µs a core, so the workers verify batch N+1 while the consumer commits batch N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from ledger.wire.keyring import Keyring, Keyrings
from ledger.workers import Outcome, Received, spawn_pool, verify_values, verify_values_in_worker

__all__ = ["Verifier"]


class Verifier:
    """Verifies batches inline (one worker) or across a pool of processes."""

    def __init__(self, keyring: Keyring, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.reload(keyring)

    def reload(self, keyring: Keyring) -> None:
        """Judge what is submitted from now on under ``keyring`` (workers hold a copy: a new
        pool). Batches submitted before are judged under the keyring they were submitted
        under, whose digest their entries commit to."""
        self.close()
        self.keyrings = Keyrings(default=keyring)
        self.keyring_digest = keyring.digest()  # what each entry verified here commits to
        self._pool = spawn_pool(self.keyrings, self.workers) if self.workers > 1 else None

    def submit(self, values: Sequence[Received]) -> Callable[[], list[Outcome]]:
        """Start verifying a batch; the returned call waits for the outcomes, in order.

        The consumer fetches the next batch while the workers verify this one.
        """
        if self._pool is None or len(values) < 64:
            outcomes = verify_values(values, self.keyrings)
            return lambda: outcomes
        size = -(-len(values) // self.workers)
        futures = [
            self._pool.submit(verify_values_in_worker, values[i : i + size])
            for i in range(0, len(values), size)
        ]
        return lambda: [o for future in futures for o in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
