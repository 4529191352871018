"""`ledger consume`: verify events from Kafka and chain them into the ledger, until stopped."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from ledger.api.access import ApiTokens
from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    CheckpointTopicOpt,
    DbPath,
    EventTopic,
    JsonFlag,
    KeyringPath,
    LedgerKeyPath,
    console,
    fail,
    print_json,
    reporting_errors,
)
from ledger.cli._options import CONNECTION, Connection, shared
from ledger.errors import ConfigurationError
from ledger.transport.settings import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_TOPIC

log = logging.getLogger("ledger.consumer")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigurationError(
            f"listen address {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8787"
        )
    return host.strip("[]"), int(port)


def _log_handler() -> logging.Handler:
    """Rich on a terminal; otherwise one plain line per record with a UTC timestamp, as log
    collectors (docker logs, journald) take them: Rich wraps a record over several lines at
    80 columns, and each line would arrive as a record of its own."""
    if console.is_terminal:
        from rich.logging import RichHandler

        rich = RichHandler(console=console, show_path=False, log_time_format="[%Y-%m-%d %H:%M:%S]")
        rich.setFormatter(logging.Formatter("%(message)s"))
        return rich
    plain = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    plain.setFormatter(formatter)
    return plain


def _log_access_to(path: Path) -> None:
    """The API's access log to its own file, rotated; not to the consumer's log too."""
    from logging.handlers import RotatingFileHandler

    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=10)
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    access = logging.getLogger("ledger.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


@shared("connection", CONNECTION)
def consume(
    connection: Connection,
    topic: EventTopic = DEFAULT_TOPIC,
    db: DbPath = DEFAULT_DB,
    keyring: KeyringPath = DEFAULT_KEYRING,
    group: Annotated[
        str, typer.Option(envvar="LEDGER_GROUP", help="Consumer group for lag monitoring.")
    ] = "deploy-ledger",
    until_idle: Annotated[
        float | None,
        typer.Option(min=0, help="Exit 0 after this many seconds with no new message."),
    ] = None,
    connect_timeout: Annotated[
        float | None,
        typer.Option(
            min=1,
            envvar="LEDGER_CONNECT_TIMEOUT",
            help="Exit 3 if the broker has not answered after this many seconds; "
            "default: as long as --until-idle, else keep trying.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Messages per transaction.")] = 5000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Signature-verification processes; default: cores.")
    ] = None,
    serve: Annotated[
        str | None,
        typer.Option(
            envvar="LEDGER_SERVE",
            show_envvar=True,
            help="Serve the read-only HTTP API on HOST:PORT (token: LEDGER_API_TOKEN).",
        ),
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            "--api-token",
            envvar="LEDGER_API_TOKEN",
            show_envvar=True,
            help="Bearer token the HTTP API requires.",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            envvar="LEDGER_METRICS",
            show_envvar=True,
            help="Serve /metrics, /healthz and /readyz on HOST:PORT without the API (with "
            "--serve they are on its listener).",
        ),
    ] = None,
    api_tokens: Annotated[
        Path | None,
        typer.Option(
            "--api-tokens",
            envvar="LEDGER_API_TOKENS",
            show_envvar=True,
            help="Named API tokens and the routes each may ask (TOML; docs/operations.md), "
            "instead of the one shared token.",
        ),
    ] = None,
    access_log: Annotated[
        Path | None,
        typer.Option(
            envvar="LEDGER_ACCESS_LOG",
            help="Write the API's access log (who asked what, and the outcome) to this file, "
            "rotated at 10 MiB, ten kept; default: the consumer's log.",
        ),
    ] = None,
    ledger_key: LedgerKeyPath = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="LEDGER_CHECKPOINT_EVERY",
            help="Sign a checkpoint after this many new entries...",
        ),
    ] = 10_000,
    checkpoint_seconds: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="LEDGER_CHECKPOINT_SECONDS",
            help="...or once the newest entries are this many seconds old.",
        ),
    ] = 30.0,
    checkpoint_topic: CheckpointTopicOpt = DEFAULT_CHECKPOINT_TOPIC,
    witness: Annotated[
        Path | None,
        typer.Option(
            envvar="LEDGER_WITNESS",
            show_envvar=True,
            help="File every checkpoint is appended to; default: DB with .witness.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Verify signed events from Kafka and chain them into the ledger (runs until stopped).

    With --ledger-key, signed checkpoints of the Merkle tree go to the ledger, the
    checkpoint topic and the witness file (keep a copy of it away from the ledger).

    SIGHUP, or a change of the keyring file, reloads the keyring (recorded in the chain
    first); SIGTERM finishes the current batch and exits.

    Example: `ledger consume --bootstrap localhost:9092 --keyring keyring.json --ledger-key
    ledger.key --witness ledger.witness`"""
    from consumers.ledger_consumer import CheckpointPolicy, LedgerConsumer
    from ledger.wire.keyring import Keyring, Signer

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[_log_handler()])
    # kafka-python logs each failed connection at ERROR; the consumer says it once per retry.
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    with reporting_errors():
        listen = parse_listen(serve) if serve else None
        if api_token and api_tokens:
            fail("--api-token and --api-tokens both name who may read: give one")
        tokens = ApiTokens.load(api_tokens) if api_tokens else api_token
        if listen and not tokens:
            fail("--serve needs a token: set LEDGER_API_TOKEN (or --api-token), or give named "
                 "tokens with --api-tokens")  # fmt: skip
        if access_log is not None:
            _log_access_to(access_log)
        if listen and metrics:
            fail("--metrics serves the health routes alone: with --serve they are on its "
                 "listener already")  # fmt: skip
        metrics_listen = parse_listen(metrics) if metrics else None
        settings = connection.settings(topic)
        ring = Keyring.load(keyring)
        policy = None
        if ledger_key is not None:
            policy = CheckpointPolicy(
                Signer.from_file(ledger_key),
                witness or db.with_suffix(".witness"),
                checkpoint_topic,
                checkpoint_every,
                checkpoint_seconds,
            )
        elif witness is not None:
            fail("--witness needs --ledger-key (LEDGER_LEDGER_KEY)")
        else:
            log.warning(
                "no --ledger-key: no signed checkpoints, so truncation of the "
                "ledger cannot be detected"
            )
        if not ring.keys:
            log.warning(
                "keyring %s trusts no key: every event will be quarantined "
                "(unknown_key); add keys with `ledger keys trust`",
                keyring,
            )
        consumer = LedgerConsumer(
            settings,
            db,
            ring,
            group=group,
            batch_size=batch_size,
            workers=workers,
            serve=listen,
            api_token=tokens,
            checkpoints=policy,
            keyring_source=f"file {keyring}",
            connect_timeout=connect_timeout,
            metrics_listen=metrics_listen,
            keyring_path=keyring,
        )

        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s: finishing the current batch", signal.Signals(signum).name)
            consumer.stop.set()

        def _reload(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: reloading the keyring once the batches in hand are chained")
            consumer.reload.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, _reload)
        stats = consumer.run(until_idle=until_idle)
    if json_out:
        print_json(stats.as_dict())
    else:
        console.print(
            f"accepted {stats.accepted}, duplicates {stats.duplicates}, "
            f"quarantined {stats.quarantined}, checkpoints {stats.checkpoints}"
        )
