"""`ledger broker`: the bundled broker for the README's manual steps, in the foreground."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from consumer_helpers import REPO, cli_env, ledger_cli
from helpers import wait_for
from kafka import KafkaAdminClient

from ledger.transport.broker import free_port


def _start(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "ledger", "broker", "--port", str(port)],
                                cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=err)  # fmt: skip


def test_the_broker_serves_until_ctrl_c_and_says_how_to_use_it(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "broker.log"
    proc = _start(port, log)
    try:
        wait_for(lambda: "Ctrl-C stops it" in log.read_text() or proc.poll() is not None,
                 "the broker to say where it listens")  # fmt: skip
        said = log.read_text()
        assert f"listening on 127.0.0.1:{port}" in said and "in memory" in said
        assert f"export LEDGER_BOOTSTRAP=127.0.0.1:{port}" in said
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        admin.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped the broker" in log.read_text()
    with socket.socket() as sock:  # the broker's port is free again
        sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = ledger_cli("broker", "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} is in use" in result.stderr
