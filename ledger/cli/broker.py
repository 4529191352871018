"""`ledger broker`: the bundled Kafka-compatible broker in the foreground, for local runs."""

from __future__ import annotations

import signal
import socket
from types import FrameType
from typing import Annotated

import typer

from ledger.cli._common import Exit, JsonFlag, console, fail, print_json, reporting_errors

DEFAULT_PORT = 9092


def broker(
    port: Annotated[
        int,
        typer.Option(min=1, max=65535, envvar="LEDGER_BROKER_PORT",
                     help="Port to listen on, on the loopback interface."),
    ] = DEFAULT_PORT,
    json_out: JsonFlag = False,
) -> None:  # fmt: skip
    """Run the bundled Kafka-compatible broker until Ctrl-C, for local runs.

    The broker is Tansu, shipped with the `local` extra. It listens on the loopback
    interface and keeps its state in memory: everything on it is gone when it stops.

    Then, in another terminal: `export LEDGER_BOOTSTRAP=127.0.0.1:9092`. With --json, one
    line says where it listens once it answers.

    Example: `ledger broker --port 9092`"""
    from ledger.transport.broker import LocalBroker

    _check_free(port)
    local = LocalBroker(port)
    with reporting_errors():
        local.start()
    # SIGTERM (docker stop, systemd, kill) stops it as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    if json_out:
        print_json({"bootstrap": local.bootstrap, "state": "in memory"})
    console.print(
        f"Kafka-compatible broker (Tansu) listening on {local.bootstrap}; its state is in "
        "memory and is lost when it stops.\n"
        f"Use it from another terminal: export LEDGER_BOOTSTRAP={local.bootstrap}\n"
        "Ctrl-C stops it."
    )
    try:
        code = local.wait()
    except KeyboardInterrupt:
        local.stop()
        console.print("stopped the broker")
        return
    fail(f"the broker exited by itself (code {code})", Exit.UNREACHABLE)


def _check_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            fail(f"port {port} is in use on 127.0.0.1 (a broker already running?): "
                 "stop it, or pass --port")  # fmt: skip


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
