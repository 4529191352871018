"""`ledger stats`: every number of a hand-computed history, by deployment model (as
classified at the time of each change) and by service; the API answers the CLI's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import cli_json, ledger_cli
from fastapi.testclient import TestClient
from test_check import at, build, deploy, digest, event, grant, image, mutate, policy

from ledger.api.app import create_app
from ledger.rules.findings import Period
from ledger.rules.stats import Change, percentile, summarize
from ledger.store.check import check
from ledger.store.reader import LedgerReader
from ledger.store.stats import stats

START, END = at(0), at(48)  # two days
PERIOD = ("--from", START.isoformat(), "--to", END.isoformat())

W1, W2, W3 = image("web", "1"), image("web", "2"), image("web", "3")
W1_STAGING = "registry.example/web-staging@" + W1.partition("@")[2]  # same digest
D1, D2 = image("db", "4"), image("db", "5")
A0, A1, A2 = image("api", "b"), image("api", "6"), image("api", "7")
B1 = image("batch", "8")


def classify(service: str, when: float, model: str) -> Any:
    return event("service.classified", service, at(when), state="stateless",
                 criticality="medium", model=model)  # fmt: skip


HISTORY = [
    policy(["staging"]),
    classify("web", -24, "immutable"),
    classify("db", -24, "mutable"),
    classify("api", -24, "mutable"),
    # api: a partial failure before the period, restored in it: not the period's
    deploy("api", at(-2), A0, kind="deployment.failed", instances={"total": 2, "updated": 1}),
    # web (immutable)
    deploy("web", at(0), W1_STAGING, env="staging"),              # first sight of W1
    grant("web", at(0.5), "CHG-1", image=W1),
    deploy("web", at(2), W1, "CHG-1"),                            # lead 2 h
    deploy("web", at(3), W2, env="staging"),
    grant("web", at(3.5), "CHG-2", image=W2),
    deploy("web", at(5), W2, "CHG-2", kind="deployment.failed",
           instances={"total": 4, "updated": 2}),                 # mixed for 2 h
    deploy("web", at(7), W1, "CHG-1", kind="deployment.rolled_back",
           from_image=W2),                                        # restored after 2 h
    deploy("web", at(10), W3, env="staging"),
    deploy("web", at(11), W3),                                    # lead 1 h; unapproved
    grant("web", at(19), "CHG-3", image=W3),
    deploy("web", at(20), W3, "CHG-3", commit_time=at(8)),        # lead 12 h from the commit
    # db (mutable)
    deploy("db", at(1), D1, env="staging"),
    grant("db", at(1), "CHG-10", image=D1),
    deploy("db", at(4), D1, "CHG-10"),                            # lead 3 h
    mutate("db", at(6), "config", "db.conf", digest("c"), None, "manual"),  # manual, unapproved
    grant("db", at(7), "CHG-11", hash=digest("d")),
    mutate("db", at(8), "config", "db.conf", digest("d"), "CHG-11"),  # resolves the manual one
    grant("db", at(39), "CHG-12", image=D2),
    deploy("db", at(40), D2, "CHG-12", kind="deployment.failed",
           instances={"total": 3, "updated": 1}),                 # mixed to the end: 8 h
    # api: mutable, then immutable from hour 24
    deploy("api", at(9), A1, env="staging"),
    grant("api", at(9), "CHG-20", image=A1),
    deploy("api", at(12), A1, "CHG-20"),                          # mutable; lead 3 h
    mutate("api", at(13), "infra", "lb", digest("e"), None, "manual"),  # open, unapproved
    deploy("api", at(25), A2, env="staging"),
    deploy("api", at(26), A2),                                    # immutable; lead 1 h; unappr.
    # batch: never classified, its image never seen before production
    deploy("batch", at(30), B1),
    deploy("web", at(50), W3, "CHG-3"),                           # after the period
    # recorded last, placed by the time it claims: api is immutable from hour 24
    classify("api", 24, "immutable"),
]  # fmt: skip

H = 3600

IMMUTABLE = {  # web, and api's deployment after its reclassification
    "group": "immutable", "services": ["api", "web"], "models": ["immutable"],
    "deployments": 4, "deployments_per_day": 2.0,
    # [1 h (api), 1 h, 2 h, 12 h]
    "lead_time_p50_s": H, "lead_time_p90_s": 12 * H,
    "lead_time_basis": {"commit_time": 1, "first_seen": 3, "unknown": 0},
    "attempts": 6, "failed": 1, "rolled_back": 1, "change_failure_rate": round(2 / 6, 4),
    "restored": 1, "unrestored": 0, "time_to_restore_p50_s": 2 * H,
    "time_to_restore_max_s": 2 * H,
    "partial_fleets": 1, "partial_fleet_s": 2 * H, "partial_fleet_max_s": 2 * H,
    "partial_fleet_findings": 1,
    "unapproved_changes": 2, "manual_changes": 0,
}  # fmt: skip
MUTABLE = {  # db, and api before hour 24
    "group": "mutable", "services": ["api", "db"], "models": ["mutable"],
    "deployments": 2, "deployments_per_day": 1.0,
    "lead_time_p50_s": 3 * H, "lead_time_p90_s": 3 * H,
    "lead_time_basis": {"commit_time": 0, "first_seen": 2, "unknown": 0},
    "attempts": 3, "failed": 1, "rolled_back": 0, "change_failure_rate": round(1 / 3, 4),
    "restored": 0, "unrestored": 1, "time_to_restore_p50_s": None,
    "time_to_restore_max_s": None,
    "partial_fleets": 1, "partial_fleet_s": 8 * H, "partial_fleet_max_s": 8 * H,
    "partial_fleet_findings": 1,
    "unapproved_changes": 2, "manual_changes": 2,
}  # fmt: skip
UNCLASSIFIED = {
    "group": "unclassified", "services": ["batch"], "models": ["unclassified"],
    "deployments": 1, "deployments_per_day": 0.5,
    "lead_time_p50_s": None, "lead_time_p90_s": None,
    "lead_time_basis": {"commit_time": 0, "first_seen": 0, "unknown": 1},
    "attempts": 1, "failed": 0, "rolled_back": 0, "change_failure_rate": 0.0,
    "restored": 0, "unrestored": 0, "time_to_restore_p50_s": None,
    "time_to_restore_max_s": None,
    "partial_fleets": 0, "partial_fleet_s": 0, "partial_fleet_max_s": None,
    "partial_fleet_findings": 0,
    "unapproved_changes": 1, "manual_changes": 0,
}  # fmt: skip
TOTAL = {
    "group": "total", "services": ["api", "batch", "db", "web"],
    "models": ["immutable", "mutable", "unclassified"],
    "deployments": 7, "deployments_per_day": 3.5,
    # [1 h, 1 h, 2 h, 3 h, 3 h, 12 h]
    "lead_time_p50_s": 2 * H, "lead_time_p90_s": 12 * H,
    "lead_time_basis": {"commit_time": 1, "first_seen": 5, "unknown": 1},
    "attempts": 10, "failed": 2, "rolled_back": 1, "change_failure_rate": 0.3,
    "restored": 1, "unrestored": 1, "time_to_restore_p50_s": 2 * H,
    "time_to_restore_max_s": 2 * H,
    "partial_fleets": 2, "partial_fleet_s": 10 * H, "partial_fleet_max_s": 8 * H,
    "partial_fleet_findings": 2,
    "unapproved_changes": 5, "manual_changes": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("stats") / "ledger.duckdb", HISTORY)


def _stats(ledger: Path, **options: Any) -> dict[str, Any]:
    with LedgerReader(ledger) as reader:
        return stats(reader, "prod", START, END, **options).model_dump(mode="json")


def test_every_number_by_deployment_model_is_the_hand_computed_one(ledger: Path) -> None:
    answer = _stats(ledger)
    assert (answer["environment"], answer["by"], answer["service"]) == ("prod", "model", None)
    assert (answer["from"], answer["to"]) == ("2026-11-02T00:00:00Z", "2026-11-04T00:00:00Z")
    assert answer["groups"] == [IMMUTABLE, MUTABLE, UNCLASSIFIED]
    assert answer["total"] == TOTAL
    assert "first sight" in answer["lead_time_basis"]
    notes = " ".join(answer["notes"])
    assert "(batch)" in notes and "1 deployment(s) have no lead time" in notes


def test_a_service_reclassified_mid_period_counts_each_change_under_its_model_then(
    ledger: Path,
) -> None:
    answer = _stats(ledger, service="api")
    groups = {g["group"]: g for g in answer["groups"]}
    assert (groups["mutable"]["deployments"], groups["immutable"]["deployments"]) == (1, 1)
    assert groups["mutable"]["lead_time_p50_s"] == 3 * H  # A1, before the reclassification
    assert groups["immutable"]["lead_time_p50_s"] == H  # A2, after it
    assert (groups["mutable"]["manual_changes"], groups["immutable"]["manual_changes"]) == (1, 0)
    # the failure before the period (restored by A1) is not the period's
    assert answer["total"]["failed"] == 0 and answer["total"]["restored"] == 0


def test_by_service_gives_one_row_per_service(ledger: Path) -> None:
    answer = _stats(ledger, by="service")
    groups = {g["group"]: g for g in answer["groups"]}
    assert list(groups) == ["api", "batch", "db", "web"]
    assert answer["total"] == TOTAL
    api, web, db = groups["api"], groups["web"], groups["db"]
    assert api["models"] == ["immutable", "mutable"] and api["services"] == ["api"]
    assert (api["deployments"], api["lead_time_p50_s"], api["lead_time_p90_s"]) == (2, H, 3 * H)
    assert (api["unapproved_changes"], api["manual_changes"]) == (2, 1)
    assert (web["deployments"], web["attempts"], web["change_failure_rate"]) == (3, 5, 0.4)
    # [1 h, 2 h, 12 h]
    assert (web["lead_time_p50_s"], web["lead_time_p90_s"]) == (2 * H, 12 * H)
    assert web["lead_time_basis"] == {"commit_time": 1, "first_seen": 2, "unknown": 0}
    assert (web["time_to_restore_p50_s"], web["partial_fleet_s"]) == (2 * H, 2 * H)
    assert (db["unrestored"], db["partial_fleet_s"], db["manual_changes"]) == (1, 8 * H, 1)
    assert groups["batch"]["lead_time_basis"]["unknown"] == 1


def test_mixed_fleet_time_counts_fleets_under_the_finding_threshold_too(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        findings = check(reader, "prod", START, END, thresholds={"partial_after": 3 * H}).findings
    # only the db fleet (8 h) is a finding over 3 h; web's 2 h are mixed time all the same
    assert sum(f.rule == "partial_fleet" for f in findings) == 1
    assert _stats(ledger)["total"]["partial_fleet_s"] == 10 * H
    # a mixed fleet no check finding restores stays mixed until the end of the period
    mixed = Change(seq=1, type="deployment.failed", service="web", time=at(5), model="immutable",
                   instances={"total": 4, "updated": 2})  # fmt: skip
    answer = summarize(Period("prod", START, END), [mixed], [])
    assert (answer.total.partial_fleet_s, answer.total.partial_fleet_findings) == (43 * H, 0)


def test_nearest_rank_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([5], 90) == 5
    assert percentile([4, 1, 3, 2], 50) == 2 and percentile([4, 1, 3, 2], 90) == 4
    assert percentile(range(1, 11), 90) == 9 and percentile(range(1, 11), 50) == 5


def test_the_cli_table_and_json_and_the_api_give_the_same_numbers(ledger: Path) -> None:
    args = ("stats", "--db", str(ledger), "--env", "prod", *PERIOD)
    shown = ledger_cli(*args)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert "immutable" in rows and "mutable" in rows and "(total)" in rows
    assert "12 h" in rows["immutable"] and "33% (2/6)" in rows["immutable"]
    assert "8 h (1, max 8 h)" in rows["mutable"]
    assert "note: 1 deployment(s) have no lead time" in shown.stderr

    as_json = ledger_cli(*args, "--json", "--by", "service")
    assert as_json.returncode == 0, as_json.stderr
    reader = LedgerReader(ledger)
    try:
        client = TestClient(create_app(lambda: reader.con.cursor(), "t0ken"))
        headers = {"Authorization": "Bearer t0ken"}
        query = {"env": "prod", "from": START.isoformat(), "to": END.isoformat()}
        over_http = client.get("/v1/stats", params=query | {"by": "service"}, headers=headers)
        bad = client.get("/v1/stats", params=query | {"by": "team"}, headers=headers)
    finally:
        reader.close()
    assert over_http.status_code == 200, over_http.text
    assert over_http.json() == cli_json(as_json) == _stats(ledger, by="service")
    assert bad.status_code == 400 and "model, service" in bad.json()["detail"]


def test_a_bad_grouping_or_period_is_a_usage_error(ledger: Path) -> None:
    bad = ledger_cli("stats", "--db", str(ledger), "--env", "prod", *PERIOD, "--by", "team")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --by: 'team'")
    backwards = ledger_cli("stats", "--db", str(ledger), "--env", "prod",
                           "--from", END.isoformat(), "--to", START.isoformat())  # fmt: skip
    assert backwards.returncode == 2 and "error:" in backwards.stderr


def test_an_empty_period_says_so(ledger: Path) -> None:
    with LedgerReader(ledger) as reader:
        answer = stats(reader, "prod", at(100), at(124)).model_dump(mode="json")
    assert [g["group"] for g in answer["groups"]] == ["immutable", "mutable"]
    assert answer["total"]["deployments"] == 0 and answer["total"]["change_failure_rate"] is None
    assert any("no production change" in n for n in answer["notes"])
