"""The production-like setup (compose.yaml, consumers/Dockerfile) stays in step with the CLI.

No Docker engine runs here, so most of these read the files: every setting the consumer
service is given is one a `ledger` command reads, the topics the consumer uses are the ones
created, what it writes lives on volumes, and its read API is published. The last runs
the service's command with the service's settings (paths and addresses moved to this
machine) through the steps the README gives.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from consumer_helpers import CLI_TIMEOUT, cli_env, cli_json, emit, ledger_cli
from helpers import IMAGE_A, cli_command, make_event

from ledger.transport.broker import free_port
from ledger.transport.settings import DLQ_SUFFIX, KafkaSettings
from ledger.wire.keyring import Keyring, Signer

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _consumer() -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"]["ledger-consumer"]
    return service


def _options(command: str) -> dict[str, Any]:
    """The options of ``ledger <command>`` by the environment variable each reads."""
    params = cli_command(command).params
    return {p.envvar: p for p in params if isinstance(p.envvar, str)}


def _setting(name: str) -> str:
    """What the consumer runs with: the service's environment, else the option's default."""
    env = _consumer()["environment"]
    return str(env[name] if name in env else _options("consume")[name].default)


def test_every_setting_given_to_the_consumer_is_read_by_a_command() -> None:
    read = set(_options("consume")) | set(_options("verify"))
    given = set(_consumer()["environment"])
    assert given >= {"LEDGER_BOOTSTRAP", "LEDGER_DB", "LEDGER_KEYRING", "LEDGER_LEDGER_KEY"}
    assert not given - read, f"no ledger command reads {sorted(given - read)}"


def test_the_service_runs_the_consumer() -> None:
    assert _consumer()["command"] == ["consume"]
    assert 'ENTRYPOINT ["ledger"]' in (ROOT / "consumers" / "Dockerfile").read_text()


def test_the_topics_the_consumer_uses_are_created() -> None:
    script = "\n".join(_compose()["services"]["topics"]["command"])
    created = dict(re.findall(r"^\s*create (\S+) (\d+)$", script, flags=re.M))
    events = _setting("LEDGER_TOPIC")
    wanted = {events, events + DLQ_SUFFIX, _setting("LEDGER_CHECKPOINT_TOPIC")}
    assert wanted <= set(created), f"not created: {sorted(wanted - set(created))}"


def _mounts() -> list[tuple[str, str]]:
    """(source, target) of each of the consumer's volumes; a source may be ``${VAR:-path}``."""
    found = []
    for volume in _consumer()["volumes"]:
        match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::ro|:rw)?", volume)
        assert match, f"unexpected volume syntax {volume!r}"
        found.append((match[1], match[2]))
    return found


def test_the_ledger_and_the_witness_live_on_volumes() -> None:
    named = set(_compose()["volumes"])
    on_volumes = {target for source, target in _mounts() if source in named}
    for setting in ("LEDGER_DB", "LEDGER_WITNESS"):
        folder = str(Path(_setting(setting)).parent)
        assert folder in on_volumes, f"{setting} ({folder}) is not on a named volume"
    mounted = {target for _, target in _mounts()}
    for setting in ("LEDGER_KEYRING", "LEDGER_LEDGER_KEY", "LEDGER_TRUSTED_KEY"):
        assert _setting(setting) in mounted, f"{setting} is not mounted"


def test_the_read_api_is_served_and_published_with_a_token() -> None:
    host, port = _setting("LEDGER_SERVE").rsplit(":", 1)
    assert host == "0.0.0.0"  # inside the container; published on the host's loopback only
    assert f"127.0.0.1:{port}:{port}" in _consumer()["ports"]
    assert _setting("LEDGER_API_TOKEN").startswith("${LEDGER_API_TOKEN:?")


def test_no_port_is_published_beyond_the_hosts_loopback() -> None:
    """An unauthenticated broker published on every interface lets anyone write the topic
    (and the read API is the ledger's contents)."""
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_the_image_copies_what_exists_and_installs_the_wheel() -> None:
    dockerfile = (ROOT / "consumers" / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (?!--from=)(.+) \S+$", dockerfile, flags=re.M)
               for s in line.split()]  # fmt: skip
    assert sources and all((ROOT / s).exists() for s in sources), sources
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile


def test_the_service_settings_run_the_readme_steps(
    kafka: KafkaSettings, keyring: Keyring, ci_signer: Signer, tmp_path: Path
) -> None:
    """up -d, emit, ask through the API while it writes, stop, run verify, as documented."""
    token, port = "compose-test-token", free_port()
    moved = {"/data": tmp_path / "data", "/config": tmp_path / "config",
             "/witness": tmp_path / "witness"}  # fmt: skip
    for folder in moved.values():
        folder.mkdir()
    env: dict[str, str] = {}
    for name, value in _consumer()["environment"].items():
        value = str(value)
        for inside, here in moved.items():
            value = value.replace(inside + "/", f"{here}/")
        env[name] = value
    host = env["LEDGER_SERVE"].rsplit(":", 1)[0]
    env |= {"LEDGER_BOOTSTRAP": kafka.bootstrap, "LEDGER_TOPIC": kafka.topic,
            "LEDGER_CHECKPOINT_TOPIC": kafka.topic + ".checkpoints",  # one per test here
            "LEDGER_SERVE": f"{host}:{port}", "LEDGER_API_TOKEN": token}  # fmt: skip
    keyring.save(Path(env["LEDGER_KEYRING"]))
    ledger_key = Signer.generate("ledger")
    ledger_key.save(Path(env["LEDGER_LEDGER_KEY"]))
    Path(env["LEDGER_TRUSTED_KEY"]).write_bytes(ledger_key.public_pem())

    log = tmp_path / "consumer.log"  # a file, not a pipe nobody reads while it runs
    with open(log, "wb") as err:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "ledger", *_consumer()["command"]], cwd=tmp_path,
            env=cli_env(**env), stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        emit(kafka, ci_signer, [make_event(service="checkout", environment="prod")])
        asked = ["asof", "--api", f"http://127.0.0.1:{port}", "--service", "checkout",
                 "--env", "prod", "--json"]  # fmt: skip
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and consumer.poll() is None:
            result = ledger_cli(*asked, LEDGER_API_TOKEN=token)
            if result.returncode == 0 and cli_json(result)["deployment"] is not None:
                answer = cli_json(result)
                break
            time.sleep(0.5)
        assert answer is not None, "no answer through the API while the consumer ran"
        assert answer["deployment"]["image"] == IMAGE_A
    finally:
        consumer.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        consumer.wait(timeout=60)
    assert consumer.returncode == 0, log.read_text()

    # `timeout` named, so that the spread `**env` (variables only) cannot stand for it.
    verified = ledger_cli("verify", "--checkpoint-topic", env["LEDGER_CHECKPOINT_TOPIC"],
                          "--json", timeout=CLI_TIMEOUT, **env)  # fmt: skip
    report = cli_json(verified)
    assert verified.returncode == 0, verified.stderr
    assert report["size"] == 1 + 1 and report["signatures_checked"]  # keyring, event
    assert report["checkpoints"]["trusted_key"] and report["checkpoints"]["external"] >= 1
