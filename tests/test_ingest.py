"""`ledger ingest`: the framework (ids derived from the tool's data, --dry-run, bad input
refused before anything is sent) and its first integration, `ledger ingest ci`, whose
parser is pure: CI variables in, one event out, fuzzed with hypothesis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import consume
from helpers import IMAGE_A, IMAGE_B, data_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger.cli import app
from ledger.integrations import ci
from ledger.integrations.ids import ID_VERSION, id_material, ingest_id
from ledger.integrations.inputs import InputError, parse_json, parse_time
from ledger.transport.broker import free_port
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import encode_event
from ledger.wire.events import (
    DeploymentData,
    DeploymentFailedData,
    derived_event_id,
    event_from_mapping,
)
from ledger.wire.keyring import Keyring, generate_key_files, load_public_key

DATA = Path(__file__).resolve().parent / "data" / "ci"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
GITHUB: dict[str, str] = json.loads((DATA / "github.json").read_text())
GITLAB: dict[str, str] = json.loads((DATA / "gitlab.json").read_text())
JENKINS: dict[str, str] = json.loads((DATA / "jenkins.json").read_text())
PUSH_EVENT = (DATA / "github-push-event.json").read_bytes()
AT = "2026-11-20T14:41:12Z"
AT_TIME = datetime(2026, 11, 20, 14, 41, 12, tzinfo=UTC)


def deployment(variables: dict[str, str], **given: Any) -> Any:
    """The one event `ledger ingest ci` would send for checkout in prod."""
    options: dict[str, Any] = {"service": "checkout", "environment": "prod", "image": IMAGE_A,
                               "status": "succeeded"} | given  # fmt: skip
    [event] = ci.parse(variables, **options)
    return event


# --- ids ---------------------------------------------------------------------------------------


def test_an_id_is_uuidv7_shaped_with_the_tools_time_and_a_digest_of_tool_run_and_resource() -> None:
    run, resource = ("github", "acme/checkout", "1658821493", "1"), ("checkout", "prod")
    made = ingest_id(AT_TIME, "ci", run, resource)
    value = uuid.UUID(made)
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert value.int >> 80 == int(AT_TIME.timestamp() * 1000)  # the time from the data
    material = id_material("ci", run, resource)
    assert (
        material
        == (
            f'["{ID_VERSION}","ci",["github","acme/checkout","1658821493","1"],["checkout","prod"]]'
        ).encode()
    )
    assert made == derived_event_id(AT_TIME, material)
    assert made == ingest_id(AT_TIME, "ci", list(run), list(resource))  # the same input: same id


@pytest.mark.parametrize(
    ("tool", "run", "resource"),
    [
        ("terraform", ("github", "acme/checkout", "1658821493", "1"), ("checkout", "prod")),
        ("ci", ("github", "acme/checkout", "1658821493", "2"), ("checkout", "prod")),
        ("ci", ("github", "acme/checkout", "1658821493", "1"), ("checkout", "staging")),
        # the parts are kept apart: moving a value from run to resource is another id
        ("ci", ("github", "acme/checkout", "1658821493"), ("1", "checkout", "prod")),
    ],
)
def test_another_tool_run_or_resource_is_another_id(
    tool: str, run: tuple[str, ...], resource: tuple[str, ...]
) -> None:
    base = ingest_id(AT_TIME, "ci", ("github", "acme/checkout", "1658821493", "1"),
                     ("checkout", "prod"))  # fmt: skip
    assert ingest_id(AT_TIME, tool, run, resource) != base


def test_ids_grow_with_the_tools_time_and_refuse_a_time_without_offset() -> None:
    earlier = ingest_id(AT_TIME, "ci", ("r",), ("z",))
    later = ingest_id(AT_TIME + timedelta(milliseconds=1), "ci", ("r",), ("a",))
    assert earlier < later
    with pytest.raises(ValueError, match="offset"):
        ingest_id(datetime(2026, 11, 20, 14, 41), "ci", ("r",), ("a",))


def test_times_keep_their_instant_and_refuse_what_is_no_time() -> None:
    assert parse_time("2026-11-20T15:41:07+01:00", "x") == datetime(2026, 11, 20, 14, 41, 7,
                                                                    tzinfo=UTC)  # fmt: skip
    assert parse_time("2026-11-20T14:41:07.123456789Z", "x").microsecond == 123456
    for bad in ("2026-11-20T14:41:07", "yesterday", "2026-13-40T00:00:00Z", 1795704069):
        with pytest.raises(InputError, match="expected an RFC 3339 time"):
            parse_time(bad, "CI_JOB_STARTED_AT")


# --- the CI parser -------------------------------------------------------------------------------


def test_github_actions_with_its_event_json() -> None:
    event = deployment(GITHUB, time=AT, change_ref="CHG-1042", github_event=PUSH_EVENT)
    run = ("github", "acme/checkout", "1658821493", "1")
    assert event.id == ingest_id(AT_TIME, "ci", run, ("checkout", "prod", "succeeded", IMAGE_A))
    assert (event.type, event.time, event.source, event.actor) == (
        "deployment.succeeded",
        AT_TIME,
        "ci/github/acme/checkout",
        "monalisa",
    )
    data = data_of(event, DeploymentData)
    assert data.commit == SHA and data.change_ref == "CHG-1042"
    assert data.commit_time == datetime(2026, 11, 20, 14, 41, 7, tzinfo=UTC)  # +01:00 in the JSON
    assert data.run_url == "https://github.com/acme/checkout/actions/runs/1658821493/attempts/1"


def test_github_gives_no_time_so_one_is_asked_for() -> None:
    with pytest.raises(InputError) as refused:
        deployment(GITHUB, github_event=PUSH_EVENT)
    assert refused.value.source == "--time"
    assert "GitHub Actions gives no time for the run" in refused.value.message


def test_github_commit_time_only_for_the_commit_deployed() -> None:
    other = json.loads(PUSH_EVENT)
    other["head_commit"]["id"] = "1" * 40
    data = data_of(deployment(GITHUB, time=AT, github_event=json.dumps(other).encode()),
                   DeploymentData)  # fmt: skip
    assert data.commit_time is None
    for event in (b'{"ref": "refs/heads/main"}', b'{"head_commit": null}'):  # dispatch, delete
        assert data_of(deployment(GITHUB, time=AT, github_event=event),
                       DeploymentData).commit_time is None  # fmt: skip


def test_gitlab_gives_the_jobs_start_and_the_commit_time() -> None:
    event = deployment(GITLAB)
    run = ("gitlab", "acme/checkout", "1000", "4242")
    assert event.id == ingest_id(AT_TIME, "ci", run, ("checkout", "prod", "succeeded", IMAGE_A))
    assert (event.time, event.source, event.actor) == (AT_TIME, "ci/gitlab/acme/checkout",
                                                       "alice")  # fmt: skip
    data = data_of(event, DeploymentData)
    assert data.commit_time == datetime(2026, 11, 20, 14, 41, 7, tzinfo=UTC)
    assert data.run_url == GITLAB["CI_JOB_URL"]
    created = {k: v for k, v in GITLAB.items() if k != "CI_JOB_STARTED_AT"}
    assert deployment(created).time == datetime(2026, 11, 20, 14, 40, 58, tzinfo=UTC)
    given = deployment(GITLAB, time="2026-11-20T14:50:00Z")  # --time wins
    assert given.time == datetime(2026, 11, 20, 14, 50, tzinfo=UTC) and given.id != event.id


def test_jenkins_needs_the_builds_start_and_names_the_pipeline_when_no_user() -> None:
    with pytest.raises(InputError, match="Jenkins gives no time"):
        deployment(JENKINS)
    event = deployment(JENKINS, time="2026-11-20T14:41:12.345Z")
    assert (event.source, event.actor) == ("ci/jenkins/acme/checkout/main", "bob")
    assert data_of(event, DeploymentData).commit_time is None  # Jenkins gives none
    anonymous = {k: v for k, v in JENKINS.items() if k != "BUILD_USER_ID"}
    assert deployment(anonymous, time=AT).actor == "ci/jenkins/acme/checkout/main"


def test_source_and_actor_given_win_over_the_ci() -> None:
    event = deployment(GITLAB, source="deploybot/prod", actor="release-bot")
    assert (event.source, event.actor) == ("deploybot/prod", "release-bot")


def test_the_same_run_gives_the_same_bytes_and_anything_else_another_id() -> None:
    first = deployment(GITLAB, change_ref="CHG-1")
    again = deployment(dict(GITLAB), change_ref="CHG-1")
    assert first == again and encode_event(first) == encode_event(again)
    others = [
        deployment(GITLAB | {"CI_JOB_ID": "4243", "CI_JOB_STARTED_AT": AT}),  # a retried job
        deployment(GITLAB | {"CI_PIPELINE_ID": "1001"}),
        deployment(GITLAB, status="started"),
        deployment(GITLAB, environment="staging"),
        deployment(GITLAB, service="payments"),
        deployment(GITLAB, image=IMAGE_B),
    ]
    assert len({first.id, *(event.id for event in others)}) == 1 + len(others)


def test_a_failure_is_a_failed_deployment_with_its_reason() -> None:
    event = deployment(GITLAB, status="failed", reason="health check timed out")
    assert event.type == "deployment.failed"
    data = data_of(event, DeploymentFailedData)
    assert (data.image, data.reason) == (IMAGE_A, "health check timed out")
    with pytest.raises(InputError, match="--reason"):
        deployment(GITLAB, reason="why")  # a reason for a success


def test_the_parser_reads_only_what_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment inside the parser: variables of another CI in this process change
    nothing."""
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    assert deployment(GITLAB).source == "ci/gitlab/acme/checkout"


@pytest.mark.parametrize(
    ("variables", "given", "source", "words"),
    [
        ({}, {}, "the environment", "no CI run"),
        ({"CI": "true", "USER": "alice"}, {}, "the environment", "no CI run"),
        (GITHUB | {"GITHUB_RUN_ID": "12a"}, {"time": AT}, "GITHUB_RUN_ID", "not a number"),
        (GITHUB | {"GITHUB_RUN_ATTEMPT": ""}, {"time": AT}, "GITHUB_RUN_ATTEMPT", "not set"),
        ({k: v for k, v in GITHUB.items() if k != "GITHUB_REPOSITORY"}, {"time": AT},
         "GITHUB_REPOSITORY", "not set"),
        (GITHUB | {"GITHUB_SHA": "HEAD"}, {"time": AT}, "GITHUB_SHA", "not a commit SHA"),
        (GITLAB | {"CI_JOB_STARTED_AT": "today"}, {}, "CI_JOB_STARTED_AT", "not a time"),
        (GITLAB | {"CI_COMMIT_TIMESTAMP": "2026-11-20 14:41"}, {}, "CI_COMMIT_TIMESTAMP",
         "not a time"),
        ({k: v for k, v in GITLAB.items() if k != "CI_JOB_ID"}, {}, "CI_JOB_ID", "not set"),
        (JENKINS, {"time": "now"}, "--time", "not a time"),
        ({k: v for k, v in JENKINS.items() if k != "BUILD_NUMBER"}, {"time": AT},
         "BUILD_NUMBER", "not set"),
        (GITLAB, {"image": "registry.example/checkout:latest"}, "--image", "not pinned"),
        (GITLAB, {"status": "rolled_back"}, "--status", "not a status"),
        (GITLAB, {"service": "check out"}, "--service", "service"),
        (GITLAB, {"change_ref": ""}, "--change-ref", "change_ref"),
        (GITLAB, {"change_ref": "C" * 2000}, "--change-ref", "change_ref"),
        (GITLAB, {"image": "registry.example/c@sha256:" + "a" * 64 + "b"}, "--image", "image"),
        (GITLAB | {"CI_PROJECT_PATH": "x" * 1100}, {}, "CI_PROJECT_PATH (source)", "source"),
    ],
)  # fmt: skip
def test_bad_input_names_the_variable_or_option_and_what_was_expected(
    variables: dict[str, str], given: dict[str, str], source: str, words: str
) -> None:
    with pytest.raises(InputError) as refused:
        deployment(variables, **given)
    assert refused.value.source == source
    assert words in refused.value.message
    assert refused.value.message.startswith(source)


@pytest.mark.parametrize(
    ("event_json", "position", "words"),
    [
        (b'{"head_commit": {"id": 3', "line 1 column 25", "not valid JSON"),
        (b"\xff\xfe{}", "byte 0", "not UTF-8"),
        (b"[1, 2]", None, "a JSON array, not an object"),
        (b'{"head_commit": "9fceb02"}', "head_commit", "a JSON string"),
        (b'{"head_commit": {"id": 7}}', "head_commit.id", "a JSON number"),
        (b'{"head_commit": {"id": "%s", "timestamp": 1795704069}}' % SHA.encode(),
         "head_commit.timestamp", "not a time"),
        (b"[" * 100_000, None, "nested too deeply"),
    ],
)  # fmt: skip
def test_a_bad_event_json_names_the_file_and_the_position(
    event_json: bytes, position: str | None, words: str
) -> None:
    with pytest.raises(InputError) as refused:
        deployment(GITHUB, time=AT, github_event=event_json, event_source="/runner/event.json")
    assert refused.value.source == "/runner/event.json"
    assert refused.value.position == position
    assert words in refused.value.message


# --- fuzzing: only domain errors -----------------------------------------------------------------

_text = st.text(max_size=40)
_value = st.one_of(
    _text,
    st.sampled_from(["", "1", "0042", "true", SHA, AT, "2026-11-20T15:41:07+01:00", "acme/x"]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _head_commits() -> st.SearchStrategy[bytes]:
    head = st.fixed_dictionaries(
        {},
        optional={"id": st.one_of(st.just(SHA), _json), "timestamp": st.one_of(_value, _json)},
    )
    shaped = st.fixed_dictionaries({}, optional={"head_commit": st.one_of(st.none(), head, _json)})
    return st.one_of(shaped, _json).map(lambda doc: json.dumps(doc).encode())


@st.composite
def _mutated_push_event(draw: st.DrawFn) -> bytes:
    data = bytearray(PUSH_EVENT)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([GITHUB, GITLAB, JENKINS, {}]),
    changes=st.dictionaries(st.sampled_from(ci.VARIABLES), _value, max_size=6),
    removed=st.sets(st.sampled_from(ci.VARIABLES), max_size=4),
    event=st.one_of(st.none(), _head_commits(), _mutated_push_event(), st.binary(max_size=64)),
    options=st.fixed_dictionaries(
        {
            "service": st.one_of(st.just("checkout"), _text),
            "environment": st.one_of(st.just("prod"), _text),
            "image": st.one_of(st.just(IMAGE_A), _text),
            "status": st.one_of(st.sampled_from(sorted(ci.STATUSES)), _text),
        },
        optional={
            "change_ref": st.one_of(st.none(), _text),
            "reason": st.one_of(st.none(), _text),
            "time": st.one_of(st.none(), _value),
            "source": st.one_of(st.none(), _text),
            "actor": st.one_of(st.none(), _text),
        },
    ),
)
def test_fuzzed_variables_and_event_json_give_an_event_or_a_domain_error(
    base: dict[str, str],
    changes: dict[str, str],
    removed: set[str],
    event: bytes | None,
    options: dict[str, Any],
) -> None:
    variables = {k: v for k, v in (base | changes).items() if k not in removed}
    try:
        events = ci.parse(variables, github_event=event, **options)
    except InputError as exc:  # any other error, LedgerError or not, fails the test
        refused: str | None = exc.message  # the input, the position, what was expected
    else:
        refused = None
    if refused is not None:
        assert refused.split(":")[0]
        return
    [made] = events
    encode_event(made)
    assert ci.parse(variables, github_event=event, **options) == events  # deterministic


# --- the command line ----------------------------------------------------------------------------


def _env(variables: dict[str, str], **more: str | None) -> dict[str, str | None]:
    """For CliRunner: the CI's variables set, every other CI or ledger variable unset."""
    names = set(ci.VARIABLES) | {"GITHUB_EVENT_PATH", "LEDGER_KEY", "LEDGER_BOOTSTRAP",
                                 "LEDGER_SOURCE", "LEDGER_ACTOR", "LEDGER_SPOOL"}  # fmt: skip
    return {name: None for name in names} | variables | more


_ARGS = ["ingest", "ci", "--service", "checkout", "--env", "prod", "--image", IMAGE_A]


def test_ingest_help_lists_every_integration() -> None:
    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "ci " in result.output and "A deployment (or its failure)" in result.output


def test_dry_run_prints_emit_file_lines_with_no_key_nor_broker(tmp_path: Path) -> None:
    env = _env(GITHUB, GITHUB_EVENT_PATH=str(DATA / "github-push-event.json"))
    result = CliRunner().invoke(app, [*_ARGS, "--time", AT, "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    raw = json.loads(line)
    assert list(raw) == ["id", "type", "time", "source", "actor", "service", "environment", "data"]
    assert raw["data"]["commit_time"] == "2026-11-20T14:41:07Z"
    expected = deployment(GITHUB, time=AT, github_event=PUSH_EVENT)
    # The line, sent with `ledger emit file`, is the very event (its id and bytes kept).
    assert encode_event(event_from_mapping(raw)) == encode_event(expected)
    assert "dry run: 1 event(s) would be sent" in result.stderr


def test_bad_input_exits_2_naming_it_and_sends_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "event.json"
    bad.write_text(json.dumps({"head_commit": {"id": SHA, "timestamp": "soon"}}))
    key, _ = generate_key_files("ci", tmp_path)
    env = _env(GITHUB, GITHUB_EVENT_PATH=str(bad))
    closed = f"127.0.0.1:{free_port()}"  # nothing would answer: exit 2 comes first
    args = [*_ARGS, "--time", AT, "--key", str(key), "--bootstrap", closed, "--spool",
            str(tmp_path / "spool")]  # fmt: skip
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert f"error: {bad}, head_commit.timestamp: 'soon' is not a time" in result.stderr
    assert not (tmp_path / "spool").exists()
    missing = CliRunner().invoke(app, args, env=_env(GITHUB, GITHUB_EVENT_PATH=str(bad) + "x"))
    assert missing.exit_code == 2 and "GITHUB_EVENT_PATH" in missing.stderr


def test_keyring_precheck_refuses_before_anything_is_sent(tmp_path: Path) -> None:
    """--keyring, as `ledger emit` has it: an event the consumer would refuse is named, and
    nothing is sent (no broker is asked)."""
    key, _ = generate_key_files("ci-gitlab", tmp_path)
    ring = Keyring()
    ring.trust("ci-gitlab", load_public_key(tmp_path / "ci-gitlab.pub"),
               types=["approval.*"], sources=["cab/*"])  # fmt: skip
    ring.save(tmp_path / "keyring.json")
    args = [*_ARGS, "--key", str(key), "--keyring", str(tmp_path / "keyring.json"),
            "--bootstrap", f"127.0.0.1:{free_port()}"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=_env(GITLAB))
    assert result.exit_code == 2, result.output
    assert "would be refused under keyring" in result.stderr
    assert "nothing was sent" in result.stderr


@pytest.mark.kafka
def test_ingesting_twice_chains_once_and_the_dry_run_line_is_the_same_event(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    key, pub = generate_key_files("ci-gitlab", tmp_path)
    ring = Keyring()
    ring.trust("ci-gitlab", load_public_key(pub), types=["deployment.*"], sources=["ci/*"])
    now = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = _env(GITLAB | {"CI_JOB_STARTED_AT": now})
    send = [*_ARGS, "--key", str(key), "--bootstrap", kafka.bootstrap, "--topic", kafka.topic]
    for _ in range(2):
        result = CliRunner().invoke(app, [*send, "--json"], env=env)
        assert result.exit_code == 0, result.output
    [delivery] = json.loads(result.stdout)
    dry = CliRunner().invoke(app, [*_ARGS, "--dry-run"], env=env)
    lines = tmp_path / "events.jsonl"
    lines.write_text(dry.stdout)
    emitted = CliRunner().invoke(app, ["emit", "file", str(lines), "--key", str(key),
                                       "--bootstrap", kafka.bootstrap, "--topic", kafka.topic],
                                 env=env)  # fmt: skip
    assert emitted.exit_code == 0, emitted.output
    stats = consume(kafka, tmp_path / "ledger.duckdb", ring)
    assert (stats.accepted, stats.duplicates, stats.quarantined) == (1, 2, 0)
    assert json.loads(dry.stdout)["id"] == delivery["event_id"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"run": ' + b"9" * 5000 + b"}", "not JSON this reader takes"),
        (b"[" * 100_000, "nested too deeply"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": 1,}', "line 1 column 9"),
    ],
)
def test_json_no_reader_takes_is_an_input_error_never_a_traceback(data: bytes, says: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_json(data, "event.json", "the event GitHub wrote")
    assert says in str(refused.value) and "event.json" in str(refused.value)
