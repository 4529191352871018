"""Spawned worker processes that hold the keyring: where signatures are checked (pure core).

Ed25519 verification costs ~57 µs a core, so the consumer (each message) and
``ledger verify`` (each stored entry) spread it over one process per core. Workers are
spawned, not forked (the consumer runs Kafka and HTTP threads), and import only the pure
core. They ignore SIGINT and SIGTERM: stopping is the parent's job, which finishes what it
is doing and shuts the pool down; if the parent dies (even by SIGKILL), a watcher thread in
each worker sees it and the worker exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor

from ledger.wire.keyring import Keyring

__all__ = ["spawn_pool", "worker_keyring"]

_keyring: Keyring | None = None


def spawn_pool(keyring: Keyring, workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each with its own copy of ``keyring``."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(keyring.model_dump_json(),),
    )


def worker_keyring() -> Keyring:
    """The keyring this worker process was started with."""
    if _keyring is None:
        raise RuntimeError("not in a worker started by spawn_pool (no keyring)")
    return _keyring


def _init_worker(keyring_json: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _keyring
    _keyring = Keyring.model_validate_json(keyring_json)
    # A worker holds its own end of the task queue, so a parent killed with SIGKILL leaves
    # it waiting forever (and the resource tracker with it): watch the parent instead.
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent process is gone
        os._exit(0)
