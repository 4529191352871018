"""The CI templates (ci/): every YAML file parses; the GitHub action's steps run here as the
runner would run them, with the variables GitHub sets (recorded in tests/data/ci), against
a real broker and consumer; the GitLab job and the Jenkins step run their shell with
recorded variables. docs/integrations.md documents them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci_runner import JobResult, run_action, run_steps
from consumer_helpers import event_entries, ledger_cli
from helpers import IMAGE_A, data_of, make_event

from consumers.ledger_consumer import LedgerConsumer
from ledger.integrations import ci
from ledger.integrations.ids import ingest_id
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import decode_event
from ledger.wire.envelope import Envelope
from ledger.wire.events import DeploymentData
from ledger.wire.keyring import Keyring, Signer, generate_key_files, load_public_key

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "ci"
ACTION = ROOT / "ci" / "github" / "action.yml"
FLUSH_WORKFLOW = ROOT / "ci" / "github" / "flush-workflow.yml"
GITLAB = ROOT / "ci" / "gitlab" / "deploy-ledger.gitlab-ci.yml"
JENKINS = ROOT / "ci" / "jenkins" / "deployLedger.groovy"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
TOKEN = "test-api-token"
GITHUB_TOKEN = "ghs_recordedtoken"
_CI_VARIABLE = re.compile(
    r"^(CI|CI_.*|GITHUB_.*|GITLAB_.*|JENKINS_.*|BUILD_.*|GIT_.*|JOB_.*|RUNNER_.*|LEDGER_.*|"
    r"DEPLOY_LEDGER_.*|INPUT_.*|WORKSPACE)$"
)


def recorded(name: str) -> dict[str, str]:
    variables: dict[str, str] = json.loads((DATA / f"{name}.json").read_text())
    return variables


def clean_env() -> dict[str, str]:
    """This process's environment without CI or ledger variables (the tests may run in CI),
    the venv's scripts first on PATH, and pip kept off the network (the package is
    installed already: the install steps find it so)."""
    env = {k: v for k, v in os.environ.items() if not _CI_VARIABLE.match(k)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PIP_NO_INDEX"] = "1"
    return env


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- every YAML file -------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    skip = {".venv", "build", ".git", "node_modules", "__pycache__"}
    return sorted(
        p
        for pattern in ("*.yml", "*.yaml")
        for p in ROOT.rglob(pattern)
        if not skip & set(p.relative_to(ROOT).parts)
    )


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert {ACTION, FLUSH_WORKFLOW, GITLAB} <= set(files)
    for path in files:
        assert load(path) is not None, path


def test_the_docs_yaml_examples_parse() -> None:
    text = (ROOT / "docs" / "integrations.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    parsed = [yaml.safe_load(block) for block in blocks]
    assert all(isinstance(document, dict) for document in parsed)
    github, gitlab = parsed[0], parsed[1]
    steps = github["jobs"]["deploy"]["steps"]
    uses = [s["uses"] for s in steps if "/ci/github@" in s.get("uses", "")]
    inputs = set(load(ACTION)["inputs"])
    assert len(uses) == 2
    for step in steps:
        if "/ci/github@" in step.get("uses", ""):
            assert set(step["with"]) <= inputs, set(step["with"]) - inputs
    assert gitlab["include"][0]["file"] == str(GITLAB.relative_to(ROOT))
    assert all(gitlab[job].get("extends") for job in ("ledger-gate", "ledger-deployed"))
    assert str(JENKINS.relative_to(ROOT)) in text and "deployLedger(" in text


# --- the GitHub action: its shape --------------------------------------------------------------


def test_the_action_is_a_composite_action_with_documented_inputs() -> None:
    action = load(ACTION)
    assert action["runs"]["using"] == "composite"
    names = set(action["inputs"])
    assert {"service", "env", "image", "status", "change-ref", "key", "bootstrap", "spool-dir",
            "gate"} <= names  # fmt: skip
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert "default" in spec or spec.get("required"), name
    steps = action["runs"]["steps"]
    used = {step["uses"].split("@")[0] for step in steps if "uses" in step}
    assert used == {"actions/setup-python", "actions/upload-artifact"}
    for step in steps:
        if "run" in step:
            assert step["shell"] == "bash", step["name"]
            # Inputs reach scripts through env:, never spliced into the script's text.
            assert "${{" not in step["run"], f"{step['name']}: an expression in run:"
            given = set(step.get("env") or {})
            read = set(re.findall(r"\$\{?(DL_[A-Z_]+)", step["run"]))
            assert read <= given, f"{step['name']} reads {read - given} it is not given"
    referenced = set(re.findall(r"inputs\.([\w-]+)", ACTION.read_text()))
    assert referenced <= names, referenced - names


def test_the_flush_workflow_is_scheduled_and_flushes_the_spool_artifacts() -> None:
    workflow = load(FLUSH_WORKFLOW)
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads on: as True
    assert triggers["schedule"] and "workflow_dispatch" in triggers
    assert workflow["permissions"]["actions"] == "write"
    script = "\n".join(s.get("run", "") for s in workflow["jobs"]["flush"]["steps"])
    assert "deploy-ledger-spool-" in script and "ledger spool flush" in script


# --- the GitHub action, run ------------------------------------------------------------------


class FakeGitHubApi:
    """GitHub's REST API for one run attempt (the recorded answer, its start time moved to
    ``started``), on the loopback; every request's path and token are kept."""

    def __init__(self, started: datetime) -> None:
        answer = json.loads((DATA / "github-run-attempt.json").read_text())
        answer["run_started_at"] = started.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps(answer).encode()
        self.requests: list[tuple[str, str | None]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append((self.path, self.headers.get("Authorization")))
                good = self.headers.get("Authorization") == f"Bearer {GITHUB_TOKEN}"
                if self.path == "/repos/acme/checkout/actions/runs/1658821493/attempts/1" and good:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404 if good else 401)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def started() -> datetime:
    """When the recorded run attempt started: ten minutes ago, to the second (an event in
    the ledger's future would be refused)."""
    return (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)


@pytest.fixture
def github_api(started: datetime) -> Iterator[FakeGitHubApi]:
    api = FakeGitHubApi(started)
    yield api
    api.close()


class Runner:
    """Runs the action as a workflow step would, with the variables GitHub sets."""

    def __init__(self, tmp_path: Path, api_url: str) -> None:
        self.tmp = tmp_path
        self.artifacts = tmp_path / "artifacts"
        self.artifacts.mkdir()
        self.runs = 0
        self.api_url = api_url

    def env(self) -> dict[str, str]:
        temp = self.tmp / f"runner-temp-{self.runs}"  # a retried job gets a fresh runner
        temp.mkdir(exist_ok=True)
        return (
            clean_env()
            | recorded("github")
            | {
                "GITHUB_EVENT_PATH": str(DATA / "github-push-event.json"),
                "GITHUB_API_URL": self.api_url,
                "GITHUB_ACTION_PATH": str(ACTION.parent),
                "GITHUB_WORKSPACE": str(self.tmp),
                "RUNNER_TEMP": str(temp),
            }
        )

    def upload(self, given: dict[str, str], env: dict[str, str]) -> int:
        """actions/upload-artifact@v4: the path's files kept under the name."""
        path = Path(given["path"])
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        if not files:
            return 1 if given.get("if-no-files-found") == "error" else 0
        shutil.copytree(path, self.artifacts / given["name"])
        return 0

    def setup_python(self, given: dict[str, str], env: dict[str, str]) -> int:
        assert given["python-version"]
        return 0  # the python on PATH is this venv's

    def run(self, **inputs: str) -> JobResult:
        self.runs += 1
        env = self.env()
        workdir = Path(env["RUNNER_TEMP"])
        uses = {"actions/upload-artifact": self.upload, "actions/setup-python": self.setup_python}
        github = {"token": GITHUB_TOKEN, "run_id": env["GITHUB_RUN_ID"]}
        return run_action(load(ACTION), {"package": "deploy-ledger"} | inputs, env, workdir,
                          uses, github)  # fmt: skip


def _deployment_inputs(key: Path, **more: str) -> dict[str, str]:
    return {
        "service": "checkout",
        "env": "prod",
        "image": IMAGE_A,
        "change-ref": "CHG-1042",
        "key": key.read_text(),
        "key-id": "ci-github",
    } | more


def _expected_id(started: datetime, status: str = "succeeded") -> str:
    run = ("github", "acme/checkout", "1658821493", "1")
    return ingest_id(started, "ci", run, ("checkout", "prod", status, IMAGE_A))


def _wait(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Signer]:
    """The CI's key (trusted for deployments from ci/github/*), its keyring, and a change
    board's signer (trusted for approvals from cab/*)."""
    key, pub = generate_key_files("ci-github", tmp_path / "keys")
    board = Signer.generate("change-board")
    ring = Keyring()
    ring.trust("ci-github", load_public_key(pub), types=["deployment.*"], sources=["ci/github/*"])
    ring.trust(board.key_id, board.public_raw, types=["approval.*"], sources=["cab/*"])
    path = tmp_path / "keyring.json"
    ring.save(path)
    return key, path, board


@contextmanager
def serving(kafka: KafkaSettings, db: Path, keyring: Path) -> Iterator[tuple[LedgerConsumer, str]]:
    """A consumer chaining the topic into ``db`` and serving its API, until the block ends."""
    port = free_port()
    consumer = LedgerConsumer(kafka, db, Keyring.load(keyring), workers=1,
                              serve=("127.0.0.1", port), api_token=TOKEN)  # fmt: skip
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: consumer.api_url is not None, "the consumer's API")
        yield consumer, f"http://127.0.0.1:{port}"
    finally:
        consumer.stop.set()
        thread.join(30)


@pytest.mark.kafka
def test_the_action_records_the_deployment_and_a_retried_job_records_nothing_twice(
    kafka: KafkaSettings,
    tmp_path: Path,
    keys: tuple[Path, Path, Signer],
    github_api: FakeGitHubApi,
    started: datetime,
) -> None:
    key, keyring_path, _ = keys
    db = tmp_path / "ledger.duckdb"
    runner = Runner(tmp_path, github_api.url)
    inputs = _deployment_inputs(key, bootstrap=kafka.bootstrap, topic=kafka.topic)
    with serving(kafka, db, keyring_path) as (consumer, url):
        first = runner.run(**inputs)
        assert not first.failed, first.log
        assert first.outputs == {"event-id": _expected_id(started), "spooled": "false",
                                 "artifact": ""}  # fmt: skip
        assert not first.step("Gate").ran and not first.step("Upload the spool").ran
        assert github_api.requests == [
            ("/repos/acme/checkout/actions/runs/1658821493/attempts/1", f"Bearer {GITHUB_TOKEN}")
        ]
        _wait(lambda: consumer.stats.accepted >= 1, "the deployment")

        shown = ledger_cli("asof", "--api", url, "--service", "checkout", "--env", "prod",
                           "--at", "now", "--json", LEDGER_API_TOKEN=TOKEN)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        deployment = json.loads(shown.stdout)["deployment"]
        assert deployment["image"] == IMAGE_A
        assert deployment["event_id"] == first.outputs["event-id"]
        assert deployment["change_ref"] == "CHG-1042"

        # A retried job (the same run attempt, a fresh runner): the same event, chained once.
        again = runner.run(**inputs)
        assert not again.failed, again.log
        assert again.outputs["event-id"] == first.outputs["event-id"]
        _wait(lambda: consumer.stats.duplicates >= 1, "the retried job's event")
        assert (consumer.stats.accepted, consumer.stats.quarantined) == (1, 0)
    rows = [r for r in event_entries(db) if r["type"].startswith("deployment")]
    assert [r["event_id"] for r in rows] == [first.outputs["event-id"]]
    event = decode_event(Envelope.from_bytes(rows[0]["envelope"]).payload)
    data = data_of(event, DeploymentData)
    assert (event.source, event.actor, event.time) == ("ci/github/acme/checkout", "monalisa",
                                                       started)  # fmt: skip
    assert data.commit == SHA
    assert data.commit_time == datetime(2026, 11, 20, 14, 41, 7, tzinfo=UTC)  # head_commit
    assert data.run_url == "https://github.com/acme/checkout/actions/runs/1658821493/attempts/1"


@pytest.mark.kafka
def test_the_action_gate_stops_an_unapproved_change_and_passes_an_approved_one(
    kafka: KafkaSettings,
    tmp_path: Path,
    keys: tuple[Path, Path, Signer],
    github_api: FakeGitHubApi,
) -> None:
    key, keyring_path, board = keys
    runner = Runner(tmp_path, github_api.url)
    with serving(kafka, tmp_path / "ledger.duckdb", keyring_path) as (consumer, url):
        gate = {"gate": "true", "api-url": url, "api-token": TOKEN}
        inputs = _deployment_inputs(key, bootstrap=kafka.bootstrap, topic=kafka.topic, **gate)
        refused = runner.run(**inputs)
        assert not refused.step("Record the deployment").ran
        assert refused.step("Gate").code == 1, refused.log
        assert "refused" in refused.step("Gate").stderr

        with LedgerProducer(board, kafka) as producer:
            producer.emit(make_event("approval.granted", change_ref="CHG-1042", approver="carol",
                                     image=IMAGE_A))  # fmt: skip
        _wait(lambda: consumer.stats.accepted >= 1, "the approval")
        allowed = runner.run(**inputs)
        assert not allowed.failed, allowed.log
        _wait(lambda: consumer.stats.accepted >= 2, "the deployment")


def test_a_dry_run_prints_the_event_and_needs_no_key_nor_broker(
    tmp_path: Path, github_api: FakeGitHubApi, started: datetime
) -> None:
    runner = Runner(tmp_path, github_api.url)
    result = runner.run(service="checkout", env="prod", image=IMAGE_A, **{"dry-run": "true"})
    assert not result.failed, result.log
    line = json.loads(result.step("Record the deployment").stdout.splitlines()[0])
    assert line["id"] == result.outputs["event-id"] == _expected_id(started)
    assert line["time"] == started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert line["source"] == "ci/github/acme/checkout" and line["actor"] == "monalisa"
    assert not result.step("Upload the spool").ran


def test_a_bad_image_fails_the_job_before_anything_is_sent(
    tmp_path: Path, github_api: FakeGitHubApi
) -> None:
    runner = Runner(tmp_path, github_api.url)
    result = runner.run(service="checkout", env="prod", image="registry.example/checkout:latest",
                        bootstrap=f"127.0.0.1:{free_port()}")  # fmt: skip
    step = result.step("Record the deployment")
    assert step.code == 2, result.log
    assert "error: --image" in step.stderr and "not pinned by digest" in step.stderr
    assert not (Path(runner.tmp) / "runner-temp-1" / "deploy-ledger-spool").exists()


@pytest.mark.kafka
@pytest.mark.slow
def test_without_a_broker_the_event_is_spooled_uploaded_and_flushed_by_the_flush_workflow(
    kafka: KafkaSettings,
    tmp_path: Path,
    keys: tuple[Path, Path, Signer],
    github_api: FakeGitHubApi,
    started: datetime,
) -> None:
    key, keyring_path, _ = keys
    runner = Runner(tmp_path, github_api.url)
    closed = f"127.0.0.1:{free_port()}"
    result = runner.run(**_deployment_inputs(key, bootstrap=closed, topic=kafka.topic))

    # The ledger command exited 5: spooled, uploaded, and the job fails (no flush workflow).
    emit = result.step("Record the deployment")
    assert emit.code == 0, result.log
    assert "spooled: 1 signed event(s)" in emit.stderr
    assert result.outputs["spooled"] == "true"
    artifact = result.outputs["artifact"]
    assert artifact.startswith("deploy-ledger-spool-1658821493-1-deploy-")
    assert result.step("Upload the spool").code == 0
    uploaded = list((runner.artifacts / artifact).glob("spool-*.jsonl"))
    assert len(uploaded) == 1
    assert json.loads(uploaded[0].read_text().splitlines()[0])["event_id"] == _expected_id(started)
    last = result.step("Fail unless the flush workflow delivers the spool")
    assert last.code == 5 and result.failed
    assert "::error::" in last.stdout and artifact in last.stdout

    # With the flush workflow installed (flush-workflow: true) the same step only warns.
    step = next(s for s in load(ACTION)["runs"]["steps"] if s["name"] == last.name)
    outputs = {"spooled": "true", "artifact": artifact}
    context = {"inputs": {"flush-workflow": "true"}, "steps": {"emit": {"outputs": outputs}}}
    [warned] = run_steps([step], context, runner.env(), tmp_path, {})
    assert warned.code == 0 and "::warning::" in warned.stdout

    # The flush workflow: lists the spool artifacts, downloads, flushes, deletes.
    listing = tmp_path / "artifacts.json"
    listing.write_text(json.dumps({"total_count": 3, "artifacts": [
        {"id": 71, "name": artifact, "expired": False, "workflow_run": {"id": 1658821493}},
        {"id": 72, "name": "test-results", "expired": False, "workflow_run": {"id": 1658821493}},
        {"id": 73, "name": "deploy-ledger-spool-1-1-deploy-x", "expired": True,
         "workflow_run": {"id": 1}},
    ]}))  # fmt: skip
    fake_bin = _fake_gh(tmp_path, listing, runner.artifacts)
    workflow = load(FLUSH_WORKFLOW)
    env = clean_env() | recorded("github") | {"GITHUB_REPOSITORY": "acme/checkout"}
    env["PATH"] = os.pathsep.join([str(fake_bin), env["PATH"]])
    workdir = tmp_path / "flush"
    workdir.mkdir()
    context = {"github": {"token": GITHUB_TOKEN}, "vars": {"LEDGER_BOOTSTRAP": kafka.bootstrap}}
    uses = {"actions/setup-python": lambda given, env: 0}
    flushed = run_steps(workflow["jobs"]["flush"]["steps"], context, env, workdir, uses)
    assert all(step.code == 0 for step in flushed), [(s.name, s.stdout, s.stderr) for s in flushed]
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert f"run download 1658821493 --repo acme/checkout --name {artifact} --dir " \
           f"spools/{artifact}" in calls  # fmt: skip
    assert "api -X DELETE repos/acme/checkout/actions/artifacts/71" in calls
    # neither another artifact (72) nor an expired spool (73) is touched: by id, by name
    assert not any(c.endswith(("/artifacts/72", "/artifacts/73")) for c in calls)
    assert not any(c.startswith("run download") and ("--name test-results " in c or
                   "--name deploy-ledger-spool-1-1-deploy-x " in c) for c in calls)  # fmt: skip

    ledger = tmp_path / "ledger.duckdb"
    from consumer_helpers import consume

    stats = consume(kafka, ledger, Keyring.load(keyring_path))
    assert (stats.accepted, stats.quarantined) == (1, 0)
    [row] = [r for r in event_entries(ledger) if r["type"] == "deployment.succeeded"]
    assert row["event_id"] == _expected_id(started)


def _fake_gh(tmp_path: Path, listing: Path, artifacts: Path) -> Path:
    """A `gh` that answers the flush workflow from recorded data: the artifact list through
    the real jq, downloads from what the action uploaded; every call logged."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
echo "$*" >> {tmp_path / "gh.log"}
if [ "$1" = api ] && [ "$2" = --paginate ]; then
    jq -r "$5" {listing}
elif [ "$1 $2" = "run download" ]; then
    cp -R "{artifacts}/$7/." "$9"
elif [ "$1 $2" = "api -X" ]; then
    :
else
    echo "fake gh: unexpected $*" >&2; exit 1
fi
""")
    gh.chmod(0o755)
    return bin_dir


def test_neither_delivered_nor_spooled_fails_the_job(
    tmp_path: Path, keys: tuple[Path, Path, Signer], github_api: FakeGitHubApi
) -> None:
    """A spool that cannot be written (a file where its directory should be) and no
    broker: the evidence would be lost, so the job fails and nothing is uploaded."""
    key, _, _ = keys
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    runner = Runner(tmp_path, github_api.url)
    result = runner.run(**_deployment_inputs(key, bootstrap=f"127.0.0.1:{free_port()}",
                                             **{"spool-dir": str(blocker / "spool")}))  # fmt: skip
    emit = result.step("Record the deployment")
    assert emit.code == 3, result.log
    assert "could be neither delivered nor spooled" in emit.stdout
    assert not result.step("Upload the spool").ran


# --- GitLab CI ---------------------------------------------------------------------------------


def test_the_gitlab_template_is_one_hidden_job_keeping_the_spool_as_an_artifact() -> None:
    template = load(GITLAB)
    assert list(template) == [".deploy-ledger"]  # included, it adds no job by itself
    job = template[".deploy-ledger"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["paths"] == [".deploy-ledger-spool/"]
    script = "\n".join(job["script"])
    assert '--spool "$CI_PROJECT_DIR/.deploy-ledger-spool"' in script
    read = set(re.findall(r"\$\{?(DEPLOY_LEDGER_[A-Z_]+)", script))
    assert read <= set(job["variables"]), read - set(job["variables"])


def _gitlab_job(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """The job's script as the runner runs it (one shell, each line in turn; the
    template's variables under the job's), with POSIX sh."""
    job = load(GITLAB)[".deploy-ledger"]
    script = tmp_path / "gitlab-job.sh"
    script.write_text("set -e\n" + "\n".join(job["script"]) + "\n")
    env = (
        clean_env()
        | recorded("gitlab")
        | job["variables"]
        | {
            "CI_PROJECT_DIR": str(tmp_path),
            "DEPLOY_LEDGER_SERVICE": "checkout",
            "DEPLOY_LEDGER_ENV": "prod",
            "DEPLOY_LEDGER_IMAGE": IMAGE_A,
            "DEPLOY_LEDGER_CHANGE_REF": "CHG-1042",
        }
        | variables
    )
    return subprocess.run(["sh", str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, check=False)  # fmt: skip


def test_the_gitlab_job_in_dry_run_prints_the_event_from_the_recorded_variables(
    tmp_path: Path,
) -> None:
    first = _gitlab_job(tmp_path, DEPLOY_LEDGER_DRY_RUN="true")
    assert first.returncode == 0, first.stderr
    [line] = first.stdout.splitlines()[-1:]
    event = json.loads(line)
    run = ("gitlab", "acme/checkout", "1000", "4242")
    at = datetime(2026, 11, 20, 14, 41, 12, tzinfo=UTC)  # CI_JOB_STARTED_AT
    assert event["id"] == ingest_id(at, "ci", run, ("checkout", "prod", "succeeded", IMAGE_A))
    assert event["time"] == "2026-11-20T14:41:12Z"
    assert event["source"] == "ci/gitlab/acme/checkout" and event["actor"] == "alice"
    assert event["data"]["commit_time"] == "2026-11-20T14:41:07Z"  # CI_COMMIT_TIMESTAMP
    assert event["data"]["run_url"] == "https://gitlab.example.com/acme/checkout/-/jobs/4242"
    assert event["data"]["change_ref"] == "CHG-1042"
    again = _gitlab_job(tmp_path, DEPLOY_LEDGER_DRY_RUN="true")
    assert again.stdout.splitlines()[-1] == line  # a retried script: the same event


@pytest.mark.kafka
def test_the_gitlab_job_sends_once_however_often_it_runs(
    kafka: KafkaSettings, tmp_path: Path, keys: tuple[Path, Path, Signer]
) -> None:
    key, keyring_path, _ = keys
    ring = Keyring.load(keyring_path)
    ring.trust("ci-gitlab", load_public_key(key.with_suffix(".pub")),
               types=["deployment.*"], sources=["ci/gitlab/*"])  # fmt: skip
    secrets = {"LEDGER_KEY": str(key), "LEDGER_BOOTSTRAP": kafka.bootstrap,
               "LEDGER_TOPIC": kafka.topic}  # fmt: skip
    for _ in range(2):
        result = _gitlab_job(tmp_path, **secrets)
        assert result.returncode == 0, result.stderr
        assert "1 event(s) delivered and acknowledged" in result.stderr
    from consumer_helpers import consume

    stats = consume(kafka, tmp_path / "ledger.duckdb", ring)
    assert (stats.accepted, stats.duplicates, stats.quarantined) == (1, 1, 0)


# --- Jenkins -----------------------------------------------------------------------------------


def _jenkins_shell() -> str:
    """The `sh` script of the step, as Groovy reads the ''' string (a backslash before a
    newline joins the lines)."""
    text = JENKINS.read_text()
    [script] = re.findall(r"script: '''(.*?)'''", text, flags=re.S)
    assert isinstance(script, str)
    assert "\\" not in script.replace("\\\n", ""), "only line continuations are escaped"
    return script.replace("\\\n", "")


def test_the_jenkins_step_gives_its_shell_every_setting_and_archives_the_spool() -> None:
    text = JENKINS.read_text()
    assert re.search(r"^def call\(Map args = \[:\]\)", text, flags=re.M)
    assert "withCredentials([file(credentialsId:" in text and "variable: 'LEDGER_KEY'" in text
    assert "currentBuild.startTimeInMillis" in text  # the run's time: the build's start
    assert "archiveArtifacts(artifacts: '.deploy-ledger-spool/**'" in text
    assert re.search(r"if \(code == 5\)", text)
    shell = _jenkins_shell()
    assert '--spool "$WORKSPACE/.deploy-ledger-spool"' in shell
    given = set(re.findall(r'"(DEPLOY_LEDGER_[A-Z_]+)=', text))
    read = set(re.findall(r"\$\{?(DEPLOY_LEDGER_[A-Z_]+)", shell))
    assert read <= given, read - given


def _jenkins_step(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """The step's shell as `sh` runs it (`sh -xe`), with the recorded Jenkins variables and
    what the step's withEnv sets for deployLedger(service: 'checkout', env: 'prod', …)."""
    script = tmp_path / "jenkins-step.sh"
    script.write_text(_jenkins_shell())
    env = (
        clean_env()
        | recorded("jenkins")
        | {
            "WORKSPACE": str(tmp_path),
            "DEPLOY_LEDGER_SERVICE": "checkout",
            "DEPLOY_LEDGER_ENV": "prod",
            "DEPLOY_LEDGER_IMAGE": IMAGE_A,
            "DEPLOY_LEDGER_STATUS": "succeeded",
            "DEPLOY_LEDGER_CHANGE_REF": "",
            "DEPLOY_LEDGER_REASON": "",
            "DEPLOY_LEDGER_KEY_ID": "ci-jenkins",
            "DEPLOY_LEDGER_TIME": "2026-11-20T14:41:12.345Z",
            "DEPLOY_LEDGER_GATE": "false",
            "DEPLOY_LEDGER_DRY_RUN": "false",
            "DEPLOY_LEDGER_PACKAGE": "deploy-ledger",
            "DEPLOY_LEDGER_VENV": sys.prefix,  # installed already: the step reuses it
        }
        | settings
    )
    return subprocess.run(["sh", "-xe", str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip


def test_the_jenkins_step_in_dry_run_prints_the_event_from_the_recorded_variables(
    tmp_path: Path,
) -> None:
    result = _jenkins_step(tmp_path, DEPLOY_LEDGER_DRY_RUN="true")
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout.splitlines()[-1])
    run = ("jenkins", "acme/checkout/main", "17", "1")
    at = datetime(2026, 11, 20, 14, 41, 12, 345000, tzinfo=UTC)
    assert event["id"] == ingest_id(at, "ci", run, ("checkout", "prod", "succeeded", IMAGE_A))
    assert event["time"] == "2026-11-20T14:41:12.345000Z"
    assert event["source"] == "ci/jenkins/acme/checkout/main" and event["actor"] == "bob"
    assert event["data"]["commit"] == SHA and "commit_time" not in event["data"]
    again = _jenkins_step(tmp_path, DEPLOY_LEDGER_DRY_RUN="true")
    assert again.stdout.splitlines()[-1] == result.stdout.splitlines()[-1]


def test_the_jenkins_step_refuses_a_bad_image_before_sending(tmp_path: Path) -> None:
    result = _jenkins_step(tmp_path, DEPLOY_LEDGER_IMAGE="checkout:latest",
                           LEDGER_BOOTSTRAP=f"127.0.0.1:{free_port()}")  # fmt: skip
    assert result.returncode == 2
    assert "error: --image" in result.stderr
    assert not (tmp_path / ".deploy-ledger-spool").exists()


def test_the_recorded_variables_are_what_the_parser_reads() -> None:
    """The recorded files hold the variables the CI parser reads (and realistic others)."""
    for provider in ("github", "gitlab", "jenkins"):
        assert set(ci.VARIABLES) & set(recorded(provider)), provider
