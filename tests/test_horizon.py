"""The horizon policy as data: the file parsed (every refusal naming its line), the matrix's
defaults, which entry governs a service, the plan against a real ledger, and `ledger horizon
apply` through a real broker and consumer (applying twice records nothing twice)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from consumer_helpers import cli_json, consume, event_entries, ledger_cli
from fastapi.testclient import TestClient
from helpers import IMAGE_A, make_event, wait_for
from ledger_builders import append

from consumers.ledger_consumer import LedgerConsumer
from ledger.api.app import create_app
from ledger.errors import PolicyFileError
from ledger.rules.catalogue import RULES, THRESHOLDS
from ledger.rules.findings import PolicyInForce
from ledger.rules.policy import (
    MATRIX,
    MAX_SERVICES,
    POLICY_SERVICE,
    Classification,
    HorizonPlan,
    parse_duration,
    parse_policy,
    plan,
    policy_digest,
)
from ledger.store.policy import classifications, horizon_report, policy_records
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.broker import free_port
from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer, generate_key_files, load_public_key

NOW = datetime.now(UTC).replace(microsecond=0)

POLICY = """\
environment = "prod"              # the production environment this policy governs
preprod = ["staging"]

[thresholds]
partial_after = "1h"
canary_window = "2d"

[severity]
late_arrival = "low"

[[service]]
name = "checkout"
state = "stateless"
criticality = "high"
why = "No local state; sessions live in Redis."
preprod = ["staging", "perf"]

[[service]]
name = "search"
state = "stateful"
criticality = "high"
why = "The index lives on local disks; canary first."

[[service]]
name = "billing"
state = "stateful"
criticality = "low"
model = "mutable"
why = "Nightly batch; its state is small enough to patch in place."

[[service]]
match = "payments-*"
state = "stateful"
criticality = "medium"
model = "mutable"
why = "Ledger rows live on the instances."
"""


def _parse(text: str) -> Any:
    return parse_policy(text, "horizon.toml")


def _refusal(text: str) -> PolicyFileError:
    with pytest.raises(PolicyFileError) as caught:
        _parse(text)
    return caught.value


# --- the file ---------------------------------------------------------------------------------


def test_a_complete_policy_parses_with_the_matrix_defaults() -> None:
    policy = _parse(POLICY)
    assert policy.environment == "prod" and policy.preprod == ("staging",)
    assert dict(policy.thresholds) == {"partial_after": 3600, "canary_window": 2 * 86400}
    assert dict(policy.severity) == {"late_arrival": "low"}
    checkout, search, billing, payments = policy.services
    assert (checkout.model, checkout.departs_from_matrix) == ("immutable", False)
    assert (search.model, search.departs_from_matrix) == ("mutable", False)
    # A departure from the matrix is allowed, its why saying why, and marked for the plan.
    assert (billing.model, billing.departs_from_matrix) == ("mutable", True)
    assert (payments.match, payments.model, payments.departs_from_matrix) == (
        "payments-*", "mutable", False,
    )  # fmt: skip
    assert checkout.preprod == ("staging", "perf") and search.preprod is None
    assert policy.preprod_for("checkout") == ("staging", "perf")
    assert policy.preprod_for("payments-api") == ("staging",)
    # What `ledger check` reads back from the record: what the file says, defaults beside.
    recorded = PolicyInForce.from_record(1, "e", policy.policy_data(policy_digest(b"x")))
    assert recorded.threshold("late_after") == timedelta(seconds=THRESHOLDS["late_after"])
    assert recorded.threshold("partial_after") == timedelta(hours=1)
    assert recorded.severity_of("late_arrival") == "low"
    assert recorded.severity_of("rollback") == RULES["rollback"].severity
    assert policy.policy_data(policy_digest(POLICY.encode())) == {
        "digest": policy_digest(POLICY.encode()),
        "preprod": ["staging"],
        "services": [  # one entry overrides: every entry, so a reader resolves as the file
            {"match": "checkout", "preprod": ["staging", "perf"]},
            {"match": "search", "preprod": ["staging"]},
            {"match": "billing", "preprod": ["staging"]},
            {"match": "payments-*", "preprod": ["staging"]},
        ],
        "severity": {"late_arrival": "low"},
        "thresholds": {"canary_window": 172800, "partial_after": 3600},
    }


def test_the_record_gives_each_service_the_preprod_the_file_gives_it() -> None:
    """A name entry without its own pre-production environments stands before a pattern
    that has some: the record must say so, or `check` and `gate` would read the pattern's."""
    text = """
environment = "prod"
preprod = ["staging"]

[[service]]
match = "*-api"
state = "stateless"
criticality = "low"
why = "APIs are replaced whole."
preprod = ["perf"]

[[service]]
name = "billing-api"
state = "stateless"
criticality = "low"
why = "Replaced whole, tested in staging only."
"""
    policy = _parse(text)
    recorded = PolicyInForce.from_record(1, "e", policy.policy_data(policy_digest(b"x")))
    for service in ("billing-api", "orders-api", "search"):
        assert recorded.preprod_for(service) == policy.preprod_for(service), service
    assert policy.preprod_for("billing-api") == ("staging",)


@pytest.mark.parametrize(
    ("state", "criticality", "model"),
    [
        ("stateless", "low", "immutable"),
        ("stateless", "medium", "immutable"),
        ("stateless", "high", "immutable"),
        ("stateful", "low", "immutable"),
        ("stateful", "high", "mutable"),
    ],
)
def test_the_matrix_gives_each_cell_its_model(state: str, criticality: str, model: str) -> None:
    text = (
        f'environment = "prod"\n[[service]]\nname = "s"\nstate = "{state}"\n'
        f'criticality = "{criticality}"\nwhy = "because"\n'
    )
    (entry,) = _parse(text).services
    assert (entry.model, entry.departs_from_matrix) == (model, False)
    assert MATRIX[(state, criticality)] == model
    assert MATRIX[("stateful", "medium")] is None


def _service(*lines: str) -> str:
    """A file whose second [[service]] (line 9 on) holds ``lines``."""
    return (
        'environment = "prod"\n'  # 1
        "\n"  # 2
        "[[service]]\n"  # 3
        'name = "checkout"\n'  # 4
        'state = "stateless"\n'  # 5
        'criticality = "high"\n'  # 6
        'why = "fine"\n'  # 7
        "\n"  # 8
        "[[service]]\n"  # 9
    ) + "".join(f"{line}\n" for line in lines)  # 10 on


GOOD = ('name = "payments"', 'state = "stateful"', 'criticality = "high"', 'why = "rows"')
REFUSALS = [
    ("missing why", _service(*GOOD[:3]), 9,
     'service "payments": why is required (document why the horizon is drawn here)'),
    ("empty why", _service(*GOOD[:3], 'why = "   "'), 13, "why is required"),
    ("unknown key", _service(*GOOD, 'modle = "mutable"'), 14,
     'service "payments": unknown key "modle" (expected one of: name, match'),
    ("unknown top-level key", 'environment = "prod"\npre_prod = ["staging"]\n', 2,
     'unknown key "pre_prod"'),
    ("bad duration", 'environment = "prod"\n[thresholds]\npartial_after = "1 hour"\n', 3,
     'thresholds: partial_after = "1 hour" is not a duration'),
    ("zero duration", 'environment = "prod"\n[thresholds]\nlate_after = "0s"\n', 3,
     "is not a duration"),
    ("a number for a duration", 'environment = "prod"\n[thresholds]\nlate_after = 90\n', 3,
     "late_after = 90 is not a duration"),
    ("unknown threshold", 'environment = "prod"\n[thresholds]\npartial = "1h"\n', 3,
     'unknown threshold "partial"'),
    ("unknown rule", 'environment = "prod"\n\n[severity]\nlate_arival = "low"\n', 4,
     'severity: unknown rule "late_arival"'),
    ("unknown severity", 'environment = "prod"\n[severity]\nrollback = "critical"\n', 3,
     'severity: rollback = "critical": expected one of info, low, medium, high'),
    ("bad TOML", _service('name = "payments"', "state = stateful"), 11,
     "not valid TOML: Invalid value (column 9)"),
    ("both name and match", _service(*GOOD, 'match = "pay*"'), 14,
     "give exactly one of name (a service) or match"),
    ("neither name nor match", _service(*GOOD[1:]), 9, "give exactly one of name"),
    ("stateful medium without a model",
     _service('name = "payments"', 'state = "stateful"', 'criticality = "medium"', 'why = "x"'),
     9, "model is required for a stateful service of medium criticality"),
    ("unknown state", _service('name = "payments"', 'state = "stateles"'), 11,
     'state = "stateles": expected stateless | stateful'),
    ("duplicate name", _service('name = "checkout"', *GOOD[1:]), 10,
     'service "checkout" is already given an entry (line 3)'),
    ("not a service name", _service('name = "check out"', *GOOD[1:]), 10,
     'name "check out" is not a valid name'),
    ("the policy records' own name", _service(f'name = "{POLICY_SERVICE}"', *GOOD[1:]), 10,
     "is the name the policy records themselves carry"),
    ("preprod is the environment", _service(*GOOD, 'preprod = ["prod"]'), 14,
     '"prod" is the environment this policy governs'),
    ("missing environment", '\npreprod = ["staging"]\n', 1, "environment is required"),
    ("bad environment name", 'environment = "pr od"\n', 1, 'environment "pr od" is not a valid'),
]  # fmt: skip


@pytest.mark.parametrize(("case", "text", "line", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_names_the_file_and_the_line(
    case: str, text: str, line: int, says: str
) -> None:
    refusal = _refusal(text)
    assert refusal.message.startswith(f"horizon.toml line {line}: "), refusal.message
    assert says in refusal.message
    assert (refusal.source, refusal.line) == ("horizon.toml", line)
    assert "\n" not in refusal.message


def test_the_line_is_found_in_the_right_service_and_past_multi_line_strings() -> None:
    text = _service(
        'name = "payments"', 'why = """', "criticality = looks like a key", 'but is text"""',
        'state = "stateful"', 'criticality = "hihg"',
    )  # fmt: skip
    refusal = _refusal(text)
    assert refusal.line == 15 and 'criticality = "hihg"' in refusal.message


def test_at_most_a_thousand_services() -> None:
    entry = '[[service]]\nname = "s{n}"\nstate = "stateless"\ncriticality = "low"\nwhy = "w"\n'
    many = 'environment = "prod"\n' + "".join(entry.format(n=n) for n in range(MAX_SERVICES + 1))
    refusal = _refusal(many)
    assert f"at most {MAX_SERVICES}" in refusal.message
    assert refusal.line == 2 + 5 * MAX_SERVICES  # the header of the one too many
    assert len(_parse(many.rsplit("[[service]]", 1)[0]).services) == MAX_SERVICES


def test_durations() -> None:
    assert [parse_duration(d) for d in ("90s", "15m", "1h", "2d")] == [90, 900, 3600, 172800]
    for bad in ("0s", "1", "1w", "-1h", "1.5h", "367d", " 1h"):
        with pytest.raises(ValueError, match=re.escape(bad)):
            parse_duration(bad)


def test_a_name_entry_wins_then_the_first_pattern_in_file_order() -> None:
    entries = [("match", "pay*", "first"), ("match", "payments-*", "second"),
               ("name", "payments-api", "named")]  # fmt: skip
    entry = '[[service]]\n{} = "{}"\nstate = "stateless"\ncriticality = "low"\nwhy = "{}"\n'
    text = 'environment = "prod"\n' + "".join(entry.format(*e) for e in entries)
    policy = _parse(text)
    assert policy.service_policy("payments-api").why == "named"
    assert policy.service_policy("payments-web").why == "first"
    assert policy.service_policy("paypal").why == "first"
    assert policy.service_policy("Payments-web") is None  # names are case-sensitive
    assert policy.service_policy("search") is None


# --- the plan against a ledger -----------------------------------------------------------------


def _signer_and_ring() -> tuple[Signer, Keyring]:
    platform = Signer.generate("platform")
    ring = Keyring()
    ring.trust(platform.key_id, platform.public_raw,
               types=["deployment.*", "service.*", "policy.*"], sources=["ci/*"])  # fmt: skip
    return platform, ring


def _classified(service: str, state: str, criticality: str, model: str, why: str | None,
                at: datetime) -> Event:  # fmt: skip
    data = {"state": state, "criticality": criticality, "model": model}
    return make_event("service.classified", service=service, time=at,
                      **(data | ({"why": why} if why else {})))  # fmt: skip


HISTORY = [
    _classified("checkout", "stateless", "high", "mutable", None, NOW - timedelta(days=3)),
    _classified("search", "stateful", "high", "mutable",
                "The index lives on local disks; canary first.", NOW - timedelta(days=3)),
    make_event(service="payments-api", time=NOW - timedelta(days=2)),
    make_event(service="legacy-batch", time=NOW - timedelta(days=2)),
    _classified("old-cron", "stateless", "low", "immutable", "runs once a day",
                NOW - timedelta(days=2)),
    make_event(service="payments-web", environment="staging", time=NOW - timedelta(days=2)),
]  # fmt: skip


def _ledger(path: Path, events: list[Event]) -> tuple[Path, Signer, Keyring]:
    signer, ring = _signer_and_ring()
    writer = LedgerWriter(path)
    try:
        for n, event in enumerate(events):
            append(writer, ring, [seal(event, signer)], n)
    finally:
        writer.close()
    return path, signer, ring


def _append(path: Path, signer: Signer, ring: Keyring, events: list[Event]) -> None:
    with LedgerReader(path) as reader:
        first = reader.size()
    writer = LedgerWriter(path)
    try:
        for n, event in enumerate(events):
            append(writer, ring, [seal(event, signer)], first + n)
    finally:
        writer.close()


def _plan_of(db: Path, text: str) -> HorizonPlan:
    policy = _parse(text)
    with LedgerReader(db) as reader:
        report = horizon_report(reader, policy.environment)
    current = {
        service: Classification(c["state"], c["criticality"], c["model"], c["why"])
        for service, c in report["classifications"].items()
    }
    recorded = report["policy"]["data"] if report["policy"] else None
    return plan(policy, policy_digest(text.encode()), report["services"], current, recorded)


def _applied(result: HorizonPlan, at: datetime) -> list[Event]:
    """What `ledger horizon apply` sends for a plan (the CLI's own path is tested below)."""
    common = {"time": at, "source": "ci/horizon", "actor": "platform-team",
              "environment": result.environment}  # fmt: skip
    events = [
        event_from_mapping(common | {"type": "service.classified", "service": change.service,
                                     "data": change.after.as_dict()})
        for change in result.changes
    ]  # fmt: skip
    if result.policy is not None:
        events.append(event_from_mapping(common | {"type": "policy.recorded",
                                                   "service": POLICY_SERVICE,
                                                   "data": dict(result.policy.after)}))  # fmt: skip
    return events


def test_the_plan_lists_new_changed_unchanged_and_unclassified_services(tmp_path: Path) -> None:
    db, signer, ring = _ledger(tmp_path / "ledger.duckdb", HISTORY)
    result = _plan_of(db, POLICY)
    changes = {c.service: c for c in result.changes}
    assert list(changes) == ["billing", "checkout", "payments-api"]  # by name
    billing, checkout, payments = changes.values()
    # A name entry classifies a service the ledger has not seen yet; it departs from the
    # matrix, and the plan says so.
    assert (billing.action, billing.before, billing.departs_from_matrix) == ("create", None, True)
    assert billing.matrix_model == "immutable"
    # Recorded before reasons were: the model changes, and the why is new.
    assert (checkout.action, checkout.changed) == ("update", ("model", "why"))
    assert checkout.before is not None and checkout.before.why is None
    # A pattern classifies the services the ledger knows in the environment (payments-web
    # is only in staging).
    assert (payments.action, payments.entry, payments.after.model) == (
        "create", "payments-*", "mutable",
    )  # fmt: skip
    assert result.unchanged == ("search",)
    assert [(u.service, u.recorded and u.recorded.model) for u in result.unclassified] == [
        ("legacy-batch", None), ("old-cron", "immutable"),
    ]  # fmt: skip
    assert result.policy is not None and result.policy.action == "create"
    assert result.policy.after["digest"] == policy_digest(POLICY.encode())
    assert not result.empty

    # Recorded as apply records it: the same policy then plans nothing.
    _append(db, signer, ring, _applied(result, datetime.now(UTC)))
    again = _plan_of(db, POLICY)
    assert again.empty and not again.changes and again.policy is None
    assert again.unchanged == ("billing", "checkout", "payments-api", "search")
    assert [u.service for u in again.unclassified] == ["legacy-batch", "old-cron"]

    with LedgerReader(db) as reader:
        (record,) = policy_records(reader, "prod")
        assert record.data == result.policy.after and record.seq == len(HISTORY) + 4
        assert policy_records(reader, "staging") == []
        found = classifications(reader, "prod")
    assert found["checkout"].why == "No local state; sessions live in Redis."
    assert found["checkout"].model == "immutable" and found["old-cron"].why == "runs once a day"
    assert POLICY_SERVICE not in found


def test_the_plan_says_what_differs_in_the_policy_record(tmp_path: Path) -> None:
    db, signer, ring = _ledger(tmp_path / "ledger.duckdb", HISTORY)
    _append(db, signer, ring, _applied(_plan_of(db, POLICY), NOW))
    commented = POLICY.replace("# the production", "# still the production")
    cosmetic = _plan_of(db, commented).policy
    assert cosmetic is not None and cosmetic.changed == ("digest",)
    stricter = POLICY.replace('partial_after = "1h"', 'partial_after = "30m"').replace(
        'preprod = ["staging", "perf"]', 'preprod = ["perf"]'
    )
    change = _plan_of(db, stricter).policy
    assert change is not None and change.action == "update"
    assert change.changed == ("digest", "services", "thresholds")
    assert change.before is not None and change.before["thresholds"]["partial_after"] == 3600
    assert change.after["thresholds"]["partial_after"] == 1800
    assert not _plan_of(db, stricter).changes  # the classifications are as recorded


def test_the_api_serves_what_the_plan_reads(tmp_path: Path) -> None:
    db, _, _ = _ledger(tmp_path / "ledger.duckdb", HISTORY)
    with LedgerReader(db) as reader:
        local = horizon_report(reader, "prod")
    con = duckdb.connect(str(db), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, "t0ken"))
        served = client.get("/v1/horizon", params={"env": "prod"},
                            headers={"Authorization": "Bearer t0ken"})  # fmt: skip
    finally:
        con.close()
    assert served.status_code == 200
    assert served.json() == local
    assert local["services"] == ["checkout", "legacy-batch", "old-cron", "payments-api", "search"]
    assert local["policy"] is None and local["classifications"]["checkout"]["why"] is None


# --- the command line --------------------------------------------------------------------------


def test_plan_prints_the_plan_and_its_json(tmp_path: Path) -> None:
    db, _, _ = _ledger(tmp_path / "ledger.duckdb", HISTORY)
    policy = tmp_path / "horizon.toml"
    policy.write_text(POLICY)
    shown = ledger_cli("horizon", "plan", "--policy", str(policy), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "+ billing: stateful, low criticality: mutable" in text
    assert "! departs from the matrix: stateful, low gives immutable" in text
    assert "~ checkout: model mutable -> immutable" in text
    assert "+ payments-api: stateful, medium criticality: mutable (by match payments-*)" in text
    assert "? legacy-batch: no entry of the policy covers it" in text
    assert "+ policy record:" in text
    assert "plan: 2 to add, 1 to change, 1 unchanged; policy record: create; 2 unclassified" in (
        text
    )
    answer = cli_json(ledger_cli("horizon", "plan", "--policy", str(policy), "--db", str(db),
                                 "--json"))  # fmt: skip
    assert answer == _plan_of(db, POLICY).as_dict() | {"policy_file": str(policy)}


def test_a_bad_file_is_refused_before_anything_else(tmp_path: Path) -> None:
    policy = tmp_path / "horizon.toml"
    policy.write_text(_service(*GOOD[:3]))
    for command in ("plan", "apply"):
        result = ledger_cli("horizon", command, "--policy", str(policy), "--db",
                            str(tmp_path / "missing.duckdb"))  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f'error: {policy} line 9: service "payments": why is required (document why the '
            "horizon is drawn here)"
        )
    policy.write_text(POLICY)
    keyless = ledger_cli("horizon", "apply", "--policy", str(policy), "--db",
                         str(tmp_path / "missing.duckdb"))  # fmt: skip
    assert keyless.returncode == 2 and "no signing key" in keyless.stderr


# --- through a broker and a consumer -----------------------------------------------------------

TOKEN = "horizon-token-0123456789"


@pytest.fixture
def platform(tmp_path: Path) -> tuple[Path, Keyring]:
    """A producer key trusted to classify services and record policies, and its keyring."""
    key, pub = generate_key_files("platform", tmp_path / "keys")
    ring = Keyring()
    ring.trust("platform", load_public_key(pub),
               types=["deployment.*", "service.*", "policy.*"], sources=["ci/*"])  # fmt: skip
    return key, ring


@pytest.fixture
def serving(
    kafka: KafkaSettings, platform: tuple[Path, Keyring], tmp_path: Path
) -> Iterator[tuple[LedgerConsumer, str]]:
    """A consumer chaining the topic and serving the API."""
    consumer = LedgerConsumer(kafka, tmp_path / "ledger.duckdb", platform[1], workers=1,
                              serve=("127.0.0.1", free_port()), api_token=TOKEN)  # fmt: skip
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    wait_for(lambda: consumer.api_url is not None, "the consumer's API")
    yield consumer, str(consumer.api_url)
    consumer.stop.set()
    thread.join(30)


def _size(url: str) -> int:
    answer = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=30)  # fmt: skip
    return int(answer.json()["size"])


def _producer(kafka: KafkaSettings, key: Path) -> tuple[str, ...]:
    return ("--key", str(key), "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
            "--source", "ci/horizon", "--actor", "platform-team")  # fmt: skip


@pytest.mark.kafka
def test_apply_through_the_broker_and_consumer_then_nothing_is_left_to_apply(
    kafka: KafkaSettings, platform: tuple[Path, Keyring], serving: tuple[LedgerConsumer, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    key, _ = platform
    _, url = serving
    wait_for(lambda: _size(url) >= 1, "the keyring's record")
    seeded = ledger_cli("emit", "deployment", "--service", "payments-api", "--env", "prod",
                        "--image", IMAGE_A, *_producer(kafka, key))  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    wait_for(lambda: _size(url) >= 2, "the deployment")
    policy = tmp_path / "horizon.toml"
    policy.write_text(POLICY)
    api = ("--api", url)

    first = ledger_cli("horizon", "apply", "--policy", str(policy), *api,
                       *_producer(kafka, key), "--json", LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert first.returncode == 0, first.stderr
    answer = cli_json(first)
    sent = answer["sent"]
    assert [d["type"] for d in sent] == ["policy.recorded", *["service.classified"] * 4]
    assert [c["service"] for c in answer["plan"]["services"]] == [
        "billing", "checkout", "payments-api", "search",
    ]  # fmt: skip
    wait_for(lambda: _size(url) >= 2 + len(sent), "the applied events")

    planned = ledger_cli("horizon", "plan", "--policy", str(policy), *api, "--json",
                         LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert cli_json(planned)["empty"] is True

    second = ledger_cli("horizon", "apply", "--policy", str(policy), *api,
                        *_producer(kafka, key), LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stderr and "emitted" not in second.stderr
    time.sleep(1)  # had anything been sent, the consumer would have chained it by now
    assert _size(url) == 2 + len(sent)


@pytest.mark.kafka
def test_a_retry_with_the_same_time_sends_the_same_ids_and_is_chained_once(
    kafka: KafkaSettings, platform: tuple[Path, Keyring], tmp_path: Path
) -> None:
    key, ring = platform
    db = tmp_path / "ledger.duckdb"
    LedgerWriter(db).close()
    policy = tmp_path / "horizon.toml"
    policy.write_text(POLICY)
    at = "2026-11-20T14:03:00Z"
    args = ("horizon", "apply", "--policy", str(policy), "--db", str(db), "--time", at,
            *_producer(kafka, key), "--json")  # fmt: skip
    runs = [ledger_cli(*args) for _ in range(2)]  # as if the first had died after sending
    for run in runs:
        assert run.returncode == 0, run.stderr
    ids = [[d["event_id"] for d in cli_json(run)["sent"]] for run in runs]
    assert ids[0] == ids[1] and len(ids[0]) == 4  # billing, checkout, search, the policy
    consume(kafka, db, ring)
    chained = [row["event_id"] for row in event_entries(db)]
    assert sorted(chained) == sorted(ids[0])
    with LedgerReader(db) as reader:
        (record,) = policy_records(reader, "prod")
    assert record.time == datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
    again = ledger_cli("horizon", "plan", "--policy", str(policy), "--db", str(db), "--json")
    assert cli_json(again)["empty"] is True


def test_the_documented_example_is_a_valid_policy() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "horizon.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    policy = parse_policy(example, "docs/horizon.md")
    assert [e.entry for e in policy.services] == [
        "checkout", "orders-db-proxy", "payments-*", "*-worker",
    ]  # fmt: skip
    assert [e.departs_from_matrix for e in policy.services] == [False, True, False, False]
    assert set(policy.thresholds) == set(THRESHOLDS)
