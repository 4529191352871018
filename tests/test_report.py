"""`ledger report`: the auditor's document, in each format, from a real ledger.

The ledger is written as the consumer writes it, with signed checkpoints, from a hand-made
history that breaks several rules and whose producers chose hostile text (a script for an
actor, a formula for a change ref, a direction override in an instance name). Static
structure is checked on the text (escaping, nothing external, every finding's entries);
the HTML is also loaded in headless Chromium, network off, through the DevTools protocol
(over a pipe: no extra client library): the chart's marks must be laid out and visible,
nothing requested, the console clean. That test saves its screenshot as docs/report.png
when asked (LEDGER_REPORT_SCREENSHOT=1) or when there is none yet.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from consumer_helpers import cli_json, ledger_cli
from fastapi.testclient import TestClient
from ledger_builders import DEMO_END, write_demo_ledger, write_ledger
from test_check import T0, at, digest, image, signers

from ledger.api.app import create_app
from ledger.api.server import ApiServer
from ledger.cli import COMMANDS
from ledger.log.checkpoint import open_checkpoint
from ledger.report import gather, render, sidecars
from ledger.report.chart import LEFT, RIGHT, WIDTH, chart, parse_time, x_of
from ledger.report.formats import CSV_COLUMNS, csv_cell, markdown_text, truncated
from ledger.store.check import check
from ledger.store.reader import LedgerReader
from ledger.transport.broker import free_port
from ledger.transport.producer import seal
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Signer

ROOT = Path(__file__).resolve().parent.parent
END = T0 + timedelta(days=2)
SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("x","click")'
OVERRIDE = "web-\u202eevil"
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(kind: str, service: str, when: datetime, actor: str = "alice", env: str = "prod",
          **data: Any) -> Event:  # fmt: skip
    source = "cab/servicenow" if kind.startswith("approval.") else "ci/github/acme"
    return event_from_mapping({"type": kind, "time": when, "source": source, "actor": actor,
                               "service": service, "environment": env, "data": data})  # fmt: skip


A, B, C, D = (
    image("checkout", "a"),
    image("checkout", "b"),
    image("payments", "c"),
    image("payments", "d"),
)

HISTORY: list[Event] = [
    event("policy.recorded", "horizon-policy", at(-48), digest=digest("9"), preprod=["staging"]),
    event("service.classified", "checkout", at(-24), state="stateless", criticality="high",
          model="immutable"),
    event("service.classified", "payments", at(-24), state="stateless", criticality="medium",
          model="immutable"),
    event("service.classified", "ledgerdb", at(-24), state="stateful", criticality="high",
          model="mutable"),
    event("deployment.succeeded", "checkout", at(-30), image=A, change_ref="CHG-0", env="staging"),
    event("approval.granted", "checkout", at(-20), change_ref="CHG-0", approver="carol", image=A),
    event("deployment.succeeded", "checkout", at(-10), image=A, change_ref="CHG-0"),
    # unapproved, never in staging, deployed by a hostile actor name with a formula ref
    event("deployment.succeeded", "checkout", at(2), SCRIPT, image=B, change_ref=FORMULA),
    # an in-place change of an immutable service, by hand, on an instance with an override
    event("mutation.applied", "checkout", at(3), "dave", target_kind="file",
          target="<img src=x onerror=alert(2)>", hash=digest("1"), tool="kubectl",
          method="manual", instance=OVERRIDE),
    event("approval.granted", "ledgerdb", at(7), change_ref="CHG-6", approver="carol",
          hash=digest("4")),
    event("mutation.applied", "ledgerdb", at(8), target_kind="config", target="db.conf",
          hash=digest("4"), tool="ansible", method="pipeline", change_ref="CHG-6"),
    event("deployment.succeeded", "payments", at(10), image=D, change_ref="CHG-10",
          env="staging"),
    event("deployment.succeeded", "payments", at(10.5), image=C, change_ref="CHG-10",
          env="staging"),
    event("approval.granted", "payments", at(11), change_ref="CHG-11", approver="carol", image=C),
    event("deployment.failed", "payments", at(14), image=C, change_ref="CHG-11",
          instances={"total": 5, "updated": 2}),
    event("approval.granted", "payments", at(15), change_ref="CHG-12", approver="carol", image=D),
    event("deployment.rolled_back", "payments", at(16), image=D, change_ref="CHG-12",
          from_image=C),
    event("deployment.succeeded", "search", at(20), image=image("search", "e")),
]  # fmt: skip


LEDGER_KEY = Signer.generate("ledger")


def build(path: Path, history: Sequence[Event]) -> Path:
    """A ledger of ``history`` after the record of its keyring (entry 1), a checkpoint
    signed by LEDGER_KEY after each batch of 6."""
    ci, cab, ring = signers()
    values = [seal(e, cab if e.type.startswith("approval.") else ci) for e in history]
    write_ledger(path, values, ring, LEDGER_KEY, [6] * (len(values) // 6), record_keyring=True)
    return path


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("report") / "ledger.duckdb", HISTORY)


@pytest.fixture(scope="module")
def document(ledger: Path) -> dict[str, Any]:
    with LedgerReader(ledger) as reader:
        return gather(reader, "prod", T0, END, now=END)


# --- headless Chromium over the DevTools protocol --------------------------------------


def chromium() -> str:
    """The Chromium (or Chrome) executable, else skip naming what is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "headless Chromium is needed to load the report in a browser: none of chromium, "
        "chromium-browser, google-chrome is on PATH (Debian: apt-get install chromium; "
        ".ci/run installs it)"
    )


class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe
    (``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3 and 4), every network
    request sent to a closed proxy, every console and protocol event kept."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        self.log = profile / "chromium.log"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 f"--user-data-dir={profile / 'profile'}", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--hide-scrollbars", "--force-device-scale-factor=1", "--enable-logging=stderr",
                 "--v=0", "about:blank"]  # fmt: skip

        def wire() -> None:  # in the child: the protocol's fds are 3 (in) and 4 (out)
            ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [executable, *flags], pass_fds=(3, 4), preexec_fn=wire,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._logged = 0
        self._next = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False,
             timeout: float = 60) -> dict[str, Any]:  # fmt: skip
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        answer = self._until(lambda m: m.get("id") == self._next, timeout, method)
        assert "error" not in answer, f"{method}: {answer['error']}"
        result: dict[str, Any] = answer["result"]
        return result

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        return self._until(lambda m: m.get("method") == method, timeout, method)

    def _until(self, wanted: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return dict(message)
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._read], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"Chromium did not answer {what} in {timeout} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.log.read_text()[-2000:]}")
            self._buffer += chunk

    def open(self, path: Path, width: int = 1200, height: int = 1600) -> None:
        """Load ``path`` at that viewport and wait until it (and whatever it asks) loaded."""
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                  "deviceScaleFactor": 1, "mobile": False}, session=True)  # fmt: skip
        self.events.clear()
        self._logged = self.log.stat().st_size
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        self.evaluate("new Promise(r => requestAnimationFrame(() => r(1)))")

    def logged(self) -> str:
        """What the browser wrote to its log (stderr) since the page was opened."""
        with self.log.open("rb") as log:
            log.seek(self._logged)
            return log.read().decode(errors="replace")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                           "awaitPromise": True}, session=True)  # fmt: skip
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)
        os.close(self._write)
        os.close(self._read)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = chromium()
    opened = Browser(executable, tmp_path_factory.mktemp("chromium"))
    try:
        yield opened
    finally:
        opened.close()


# --- what the document says ----------------------------------------------------------


def test_the_command_comes_after_check_and_says_what_it_writes() -> None:
    names = [command.name for command in COMMANDS]
    assert names.index("report") == names.index("check") + 1
    (registered,) = [command for command in COMMANDS if command.name == "report"]
    assert registered.summary.startswith("Write the auditor's report of a period")


def test_the_document_is_checks_answer_with_the_ledgers_identity_stats_and_timelines(
    ledger: Path, document: dict[str, Any]
) -> None:
    with LedgerReader(ledger) as reader:
        checked = check(reader, "prod", T0, END).model_dump(mode="json")
        origin = reader.meta()["origin"]
        size = reader.size()
    assert document["check"] == checked
    identity = document["ledger"]
    assert (identity["origin"], identity["size"]) == (origin, size)
    covering = checked["integrity"]["checkpoint"]
    assert {k: identity["checkpoint"][k] for k in ("size", "root")} == covering
    signed = open_checkpoint(identity["checkpoint"]["note"], "ledger", LEDGER_KEY.public_raw,
                             origin)  # fmt: skip
    assert (signed.size, base64.b64encode(signed.root).decode()) == (covering["size"],
                                                                     covering["root"])  # fmt: skip
    assert [g["group"] for g in document["stats"]["groups"]][:2] == ["immutable", "mutable"]
    timelines = {t["service"]: t for t in document["timelines"]}
    assert set(timelines) == {"checkout", "ledgerdb", "payments", "search"}
    assert timelines["checkout"]["live_at_start"]["image"] == A  # deployed before the period
    assert [e["type"] for e in timelines["payments"]["entries"]] == [
        "approval.granted", "deployment.failed", "approval.granted",
        "deployment.rolled_back"]  # fmt: skip
    assert all(T0 <= parse_time(e["time"]) <= END for t in timelines.values() for e in t["entries"])


class _Page(HTMLParser):
    """Every tag and attribute of a page, and the text of each findings row's entries."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.seqs: list[str] = []
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td" and dict(attrs).get("class") == "seqs":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.seqs.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_every_finding_is_in_the_html_with_its_entries(document: dict[str, Any]) -> None:
    page = _page(render(document, "html"))
    expected = [", ".join(str(c["seq"]) for c in f["entries"]) for f in
                document["check"]["findings"]]  # fmt: skip
    assert len(expected) > 10 and sorted(page.seqs) == sorted(expected)
    text = "".join(page.text)
    assert document["ledger"]["checkpoint"]["root"] in text
    assert document["check"]["integrity"]["statement"] in text
    for requirement in ("PCI DSS 6.5.1", "PCI DSS 6.5.3", "PCI DSS 11.5.2", "PCI DSS 10.6.x"):
        assert requirement in text
    assert "immutable" in text and "mutable" in text and "lead time, p50" in text


_ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "section", "footer", "h1",
    "h2", "h3", "h4", "p", "strong", "span", "code", "pre", "dl", "dt", "dd", "div", "b",
    "table", "thead", "tbody", "tr", "th", "td", "figure", "figcaption", "svg", "defs",
    "pattern", "rect", "line", "text", "g", "circle", "polygon",
}  # fmt: skip


_LOADING = (
    "src",
    "href",
    "xlink:href",
    "action",
    "formaction",
    "srcset",
    "poster",
    "data",
    "background",
    "ping",
    "manifest",
    "cite",
    "longdesc",
    "codebase",
    "archive",
)
_FETCHING_TAGS = ("script", "link", "img", "iframe", "frame", "object", "embed", "base",
                  "audio", "video", "source", "track", "form", "input", "image", "use",
                  "feimage", "foreignobject")  # fmt: skip


def _external(html: str) -> list[str]:
    """Whatever in a page could make a browser ask for something: an address anywhere, an
    import or a url() to anything but this page (#id), an attribute that loads, a tag that
    fetches."""
    found = re.findall(r"https?:|@import|=\s*[\"']//", html, flags=re.I)
    found += [u for u in re.findall(r"url\(\s*['\"]?([^)]*)\)", html) if not u.startswith("#")]
    for tag, attrs in _page(html).tags:
        if tag in _FETCHING_TAGS:
            found.append(f"<{tag}>")
        found += [f"{tag} {name}={value}" for name, value in attrs.items()
                  if name in _LOADING and not (value or "").startswith("#")]  # fmt: skip
    return found


def test_the_html_is_one_file_that_asks_for_nothing(document: dict[str, Any]) -> None:
    html = render(document, "html")
    assert _external(html) == []
    page = _page(html)
    assert {tag for tag, _ in page.tags} <= _ALLOWED_TAGS
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    policy = [
        a["content"] for tag, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert policy and "default-src 'none'" in str(policy[0])
    assert "@media print" in html and "@page" in html


def test_hostile_text_stays_text_in_every_format(document: dict[str, Any]) -> None:
    html, md = render(document, "html"), render(document, "md")
    for text in (html, md):
        assert SCRIPT not in text and "<img" not in text and "\u202e" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "web-\\u202eevil" in html  # the override shown, not obeyed
    page = _page(html)
    assert SCRIPT in "".join(page.text)  # the reader sees exactly what the producer wrote
    table = [line for line in md.splitlines() if line.startswith("| 2026-11-02 02:00 UTC")]
    assert table and all(len(re.findall(r"(?<!\\)\|", line)) == 7 for line in table)
    rows = list(csv.reader(io.StringIO(render(document, "csv"))))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == len(document["check"]["findings"]) + 1
    assert any(SCRIPT in row[5] for row in rows[1:])
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)
    text = render(document, "json")
    assert "<" not in text and "\u202e" not in text
    assert json.loads(text) == document


def test_a_csv_cell_never_starts_a_formula(document: dict[str, Any]) -> None:
    """OWASP's rule: a cell starting = + - @, tab or CR is prefixed with '."""
    assert [csv_cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", None)] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\\x0dx", "ok", ""]  # fmt: skip
    first = document["check"]["findings"][0]
    hostile = first | {"service": FORMULA, "message": "-2+3", "environment": "@prod",
                       "requirements": ["+x"], "details": {}}  # fmt: skip
    forged = document | {"check": document["check"] | {"findings": [hostile]}}
    (_, row) = list(csv.reader(io.StringIO(render(forged, "csv"))))
    assert row[2] == "'" + FORMULA and row[3] == "'@prod" and row[5] == "'-2+3"
    assert row[6] == "'+x"


def test_markdown_text_cannot_make_markup() -> None:
    assert markdown_text("a|b *c* _d_ [e](f) `g` <h> & \\") == (
        "a\\|b \\*c\\* \\_d\\_ \\[e\\](f) \\`g\\` &lt;h&gt; &amp; \\\\"
    )
    assert markdown_text("one\ntwo\u202e") == "one two\\\\u202e"


def test_a_rule_with_more_findings_than_top_is_counted_and_given_whole_beside(
    document: dict[str, Any],
) -> None:
    assert not truncated(document)
    assert truncated(document, top=1)  # four late arrivals, three unapproved changes
    html = render(document, "html", top=1, full="report.csv and report.json, beside this file")
    page = _page(html)
    shown = len(page.seqs)
    assert shown < len(document["check"]["findings"])
    assert "report.csv and report.json, beside this file" in "".join(page.text)
    assert sidecars(Path("out/report.html")) == (Path("out/report.csv"), Path("out/report.json"))


# --- the timeline chart (pure geometry) ------------------------------------------------


def test_time_maps_to_x_linearly_within_the_period() -> None:
    right = WIDTH - RIGHT
    assert x_of(T0, T0, END) == LEFT and x_of(END, T0, END) == right
    assert x_of(at(24), T0, END) == pytest.approx((LEFT + right) / 2, abs=0.01)
    assert x_of(at(-5), T0, END) == LEFT and x_of(at(99), T0, END) == right  # clamped
    assert x_of(T0, T0, T0) == LEFT


def test_the_chart_draws_images_as_bands_and_marks_what_went_wrong(
    document: dict[str, Any],
) -> None:
    timelines = {t["service"]: t for t in document["timelines"]}
    findings = document["check"]["findings"]

    def of(service: str) -> Any:
        return chart(timelines[service], [f for f in findings if f["service"] == service],
                     T0, END)  # fmt: skip

    checkout = of("checkout")
    assert [b.image for b in checkout.bands] == [A, B]  # live at the start, then B
    assert checkout.bands[0].x == LEFT and checkout.bands[1].classes == "band unapproved"
    assert checkout.bands[0].width + checkout.bands[1].width == pytest.approx(WIDTH - RIGHT - LEFT)
    unapproved = [m for m in checkout.marks if "unapproved" in m.classes]
    assert sorted(s for m in unapproved for s in m.seqs) == [9, 10] == sorted(
        s for a in checkout.alarms for s in a.seqs)  # fmt: skip
    assert checkout.counts["unapproved"] == 2 and checkout.counts["manual"] == 1
    payments = of("payments")
    (mixed,) = payments.mixed
    assert mixed.x == x_of(at(14), T0, END)
    assert mixed.x + mixed.width == pytest.approx(x_of(at(16), T0, END))  # until the rollback
    assert "2 of 5 instances" in mixed.title
    assert {m.classes for m in payments.marks} >= {"failed", "rollback", "approval"}
    assert [b.image for b in payments.bands] == [D]
    assert len(payments.ticks) <= 13 and payments.ticks[0].label == "Nov 02"


# --- the command line and the API ------------------------------------------------------


def _window() -> tuple[str, ...]:
    return ("--env", "prod", "--from", T0.isoformat(), "--to", END.isoformat())


def test_the_command_writes_each_format_and_says_what_it_is_doing(
    ledger: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    out.write_text("the last report")
    result = ledger_cli("report", "--db", str(ledger), *_window(), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Deployment audit report: prod" in out.read_text()  # replaced
    assert f"wrote {out} (html)" in result.stdout and "16 finding(s)" in result.stdout
    for line in ("report: checking the period", "report: timelines 4/4", "report: writing html"):
        assert line in result.stderr.splitlines()
    assert not sidecars(out)[0].exists()  # every finding is listed: nothing beside it
    for fmt, first in (("md", "# Deployment audit report: prod"), ("csv", "rule,severity")):
        piped = ledger_cli("report", "--db", str(ledger), *_window(), "--format", fmt,
                           "--out", "-")  # fmt: skip
        assert piped.returncode == 0 and piped.stdout.startswith(first), piped.stderr
    piped = ledger_cli("report", "--db", str(ledger), *_window(), "--format", "json", "--out", "-")
    assert cli_json(piped)["check"]["counts"]["unapproved_change"] == 3


def test_a_long_report_lists_the_top_and_writes_every_finding_beside_it(
    ledger: Path, tmp_path: Path
) -> None:
    out = tmp_path / "audit" / "q4.html"
    result = ledger_cli("report", "--db", str(ledger), *_window(), "--out", str(out),
                        "--top", "1", "--json")  # fmt: skip
    summary = cli_json(result)
    beside = [str(p) for p in sidecars(out)]
    assert summary["written"] == [str(out), *beside] and summary["findings"] == 16
    assert "q4.csv and q4.json, beside this file" in out.read_text()
    assert len(list(csv.DictReader(sidecars(out)[0].open()))) == 16
    assert len(json.loads(sidecars(out)[1].read_text())["check"]["findings"]) == 16


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--format", "pdf", "--out", "r.pdf"), "--format: 'pdf' is not one of"),
        (("--out", "-"), "an HTML report is a file"),
        (("--format", "md", "--out", "-", "--json"), "--json prints what was written"),
        (("--out", "r.html", "--partial-after", "soon"), "--partial-after: 'soon'"),
    ],
)
def test_a_wrong_option_is_a_usage_error(ledger: Path, args: tuple[str, ...], said: str) -> None:
    result = ledger_cli("report", "--db", str(ledger), *_window(), *args)
    assert result.returncode == 2 and said in result.stderr, result.stderr


def test_the_api_serves_the_same_document_in_each_format(
    ledger: Path, document: dict[str, Any]
) -> None:
    reader = LedgerReader(ledger)
    try:
        client = TestClient(create_app(lambda: reader.con.cursor(), TOKEN))
        query = {"env": "prod", "from": T0.isoformat(), "to": END.isoformat()}
        answers = {fmt: client.get("/v1/report", params=query | {"format": fmt}, headers=AUTH)
                   for fmt in ("html", "md", "csv", "json")}  # fmt: skip
        wrong = client.get("/v1/report", params=query | {"format": "pdf"}, headers=AUTH)
        unauthorized = client.get("/v1/report", params=query)
    finally:
        reader.close()
    kinds = {"html": "text/html", "md": "text/markdown", "csv": "text/csv",
             "json": "application/json"}  # fmt: skip
    for fmt, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(kinds[fmt])
    served = answers["json"].json()
    assert served | {"generated_at": None} == document | {"generated_at": None}
    assert answers["csv"].text == render(document, "csv")
    assert _external(answers["html"].text) == []
    assert wrong.status_code == 400 and "'pdf'" in wrong.json()["detail"]
    assert unauthorized.status_code == 401


def test_the_api_answers_a_report_within_its_admission_limit(ledger: Path) -> None:
    con = duckdb.connect(str(ledger), read_only=True)
    inside, release = threading.Event(), threading.Event()

    def slow_cursor() -> duckdb.DuckDBPyConnection:
        inside.set()
        release.wait(30)
        return con.cursor()

    client = TestClient(create_app(slow_cursor, TOKEN, max_queries=1))
    query = {"env": "prod", "from": T0.isoformat(), "to": END.isoformat(), "format": "md"}
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(client.get("/v1/report", params=query,
                                                                     headers=AUTH)))  # fmt: skip
    thread.start()
    try:
        assert inside.wait(30)
        busy = client.get("/v1/report", params=query, headers=AUTH)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    finally:
        release.set()
        thread.join(60)
        con.close()
    assert first[0].status_code == 200


def test_the_command_reads_through_a_running_api_and_renders_locally(
    ledger: Path, document: dict[str, Any], tmp_path: Path
) -> None:
    con = duckdb.connect(str(ledger), read_only=True)
    server = ApiServer(create_app(con.cursor, TOKEN), "127.0.0.1", free_port())
    server.start()
    try:
        api = ("--api", server.url)
        piped = ledger_cli("report", *api, *_window(), "--format", "json", "--out", "-",
                           LEDGER_API_TOKEN=TOKEN)  # fmt: skip
        out = tmp_path / "remote.html"
        written = ledger_cli("report", *api, *_window(), "--out", str(out), "--top", "1",
                             LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    finally:
        server.stop()
        con.close()
    assert cli_json(piped) | {"generated_at": None} == document | {"generated_at": None}
    assert written.returncode == 0, written.stderr
    assert "remote.csv and remote.json, beside this file" in out.read_text()
    assert sidecars(out)[0].exists() and sidecars(out)[1].exists()


def test_rendering_loads_no_database() -> None:
    """A report fetched over --api is rendered where DuckDB may not even be installed."""
    code = ("import json, sys, ledger.report.formats, ledger.report.chart; "
            "print(json.dumps(sorted(m for m in ('duckdb', 'pyarrow', 'kafka', 'fastapi') "
            "if m in sys.modules)))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert json.loads(result.stdout) == []


def test_the_templates_ship_in_the_wheel_as_package_data() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        package_data = tomllib.load(file)["tool"]["setuptools"]["package-data"]
    assert package_data["ledger.report"] == ["templates/*.j2"]
    shipped = {p.name for p in (ROOT / "ledger" / "report" / "templates").glob("*.j2")}
    assert shipped == {"report.html.j2", "report.md.j2", "report.css.j2", "chart.svg.j2",
                       "legend.svg.j2"}  # fmt: skip
    used = set()
    for name in shipped:
        text = (ROOT / "ledger" / "report" / "templates" / name).read_text()
        used |= set(re.findall(r"""(?:include|get_template)\s*\(?\s*"([^"]+)""", text))
    assert used <= shipped


# --- in a real browser -------------------------------------------------------------------

_LAYOUT = """(() => {
  const boxes = (selector) => [...document.querySelectorAll(selector)].map((e) => {
    const box = e.getBoundingClientRect(), style = getComputedStyle(e);
    return {w: box.width, h: box.height, x: box.x, fill: style.fill, stroke: style.stroke,
            line: e.tagName === "line", strokeWidth: parseFloat(style.strokeWidth),
            shown: style.visibility === "visible" && style.display !== "none"
                   && Number(style.opacity) > 0};
  });
  return {
    charts: boxes("svg.chart"), bands: boxes("svg.chart .band rect"),
    mixed: boxes("svg.chart .mixed"), marks: boxes("svg.chart .mark"),
    unapproved: boxes("svg.chart .mark.unapproved"), alarms: boxes("svg.chart .alarm"),
    legend: boxes("#legend svg"), scripts: document.scripts.length,
    images: document.images.length, text: document.body.innerText,
    width: document.documentElement.scrollWidth,
  };
})()"""

_RED = "rgb(225, 29, 29)"
"""The unapproved changes' red (``--red`` in the stylesheet)."""


def _visible(boxes: list[dict[str, Any]]) -> bool:
    """Some, each laid out with an area (a line: a length and a stroke), and shown."""

    def drawn(box: dict[str, Any]) -> bool:
        if box["line"]:
            return bool(box["w"] + box["h"] > 0 and box["strokeWidth"] > 0)
        return bool(box["w"] > 0 and box["h"] > 0)

    return bool(boxes) and all(drawn(b) and b["shown"] for b in boxes)


def _quiet(browser: Browser) -> None:
    """Nothing asked for but the file itself; no console message, error or dialog."""
    requests = [e["params"]["request"]["url"] for e in browser.events
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip
    assert len(requests) == 1 and requests[0].startswith("file://"), requests
    noisy = [e for e in browser.events if e["method"] in (
        "Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded",
        "Page.javascriptDialogOpening", "Network.loadingFailed")]  # fmt: skip
    assert noisy == [], noisy
    log = browser.logged()
    assert not re.findall(r".*(?:Uncaught|Refused to|Content Security Policy).*", log)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_demos_report_in_chromium_draws_every_mark_and_asks_for_nothing(
    browser: Browser, tmp_path: Path
) -> None:
    db = tmp_path / "demo.duckdb"
    write_demo_ledger(db, Signer.generate("ledger"), record_keyring=True)
    with LedgerReader(db) as reader:
        document = gather(reader, "prod", DEMO_END - timedelta(days=21), DEMO_END, now=DEMO_END)
    page = tmp_path / "demo-report.html"
    page.write_text(render(document, "html"), encoding="utf-8")

    browser.open(page)
    laid = browser.evaluate(_LAYOUT)
    _quiet(browser)
    assert len(laid["charts"]) == len(document["timelines"]) >= 5 and _visible(laid["charts"])
    for kind in ("bands", "mixed", "marks", "unapproved", "alarms", "legend"):
        assert _visible(laid[kind]), kind
    assert {b["fill"] for b in laid["unapproved"]} == {_RED}
    assert {b["stroke"] for b in laid["alarms"]} == {_RED}
    unapproved = document["check"]["counts"]["unapproved_change"]
    assert len(laid["alarms"]) == unapproved  # one red rule per unapproved change
    assert laid["scripts"] == 0 and laid["images"] == 0 and laid["width"] <= 1200
    assert "unapproved change (red)" in laid["text"]

    # On paper: the same marks, in colour; the page prints.
    browser.call("Emulation.setEmulatedMedia", {"media": "print"}, session=True)
    printed = browser.evaluate(_LAYOUT)
    browser.call("Emulation.setEmulatedMedia", {"media": ""}, session=True)
    assert _visible(printed["unapproved"]) and {b["fill"] for b in printed["unapproved"]} == {_RED}
    pdf = base64.b64decode(browser.call("Page.printToPDF", {"printBackground": True},
                                        session=True)["data"])  # fmt: skip
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type/Page") >= 3

    # The screenshot the README shows: the timelines, as a person sees them.
    top = browser.evaluate("document.getElementById('timelines').getBoundingClientRect().top"
                           " + window.scrollY")  # fmt: skip
    clip = {"x": 0, "y": max(top - 16, 0), "width": 1200, "height": 1600, "scale": 1}
    shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                            "captureBeyondViewport": True}, session=True)["data"])  # fmt: skip
    assert _png_size(shot) == (1200, 1600) and 20_000 < len(shot) < 1_500_000
    (tmp_path / "report.png").write_bytes(shot)
    kept = ROOT / "docs" / "report.png"
    if os.environ.get("LEDGER_REPORT_SCREENSHOT") == "1" or not kept.exists():
        kept.write_bytes(shot)


def test_hostile_text_runs_nothing_in_chromium(
    browser: Browser, document: dict[str, Any], tmp_path: Path
) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(render(document, "html"), encoding="utf-8")
    browser.open(page)
    laid = browser.evaluate(_LAYOUT)
    _quiet(browser)  # no dialog opened: the actor's script is text
    assert laid["scripts"] == 0 and laid["images"] == 0
    assert SCRIPT in laid["text"] and "<img src=x onerror=alert(2)>" in laid["text"]
    assert "web-\\u202eevil" in laid["text"]
    assert len(laid["unapproved"]) == 3 and _visible(laid["unapproved"])


def test_the_browser_checks_catch_a_page_that_asks_or_talks(
    browser: Browser, tmp_path: Path
) -> None:
    """The checks above are not vacuous: a page that loads an image from the network, or
    logs to the console, fails them (the closed proxy and the policy stop the request, but
    the browser still tells)."""
    for body in ('<img src="https://example.com/pixel.png">', "<svg><text>ok</text></svg>"
                 '<script>console.log("hello")</script>'):  # fmt: skip
        page = tmp_path / "bad.html"
        page.write_text(f"<!DOCTYPE html><title>bad</title>{body}", encoding="utf-8")
        browser.open(page)
        with pytest.raises(AssertionError):
            _quiet(browser)


def test_many_services_are_tabled_and_the_most_eventful_charted(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service is a row; only the first few by unapproved changes and findings get a
    chart (a page of hundreds is unread), the HTML says so, and the JSON beside keeps all."""
    from ledger.report import formats

    monkeypatch.setattr(formats, "CHARTS_TOP", 2)
    html = render(document, "html", full="report.json, beside this file")
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">", html.split('id="services"')[1])
    charted = re.findall(r'<figure class="timeline" data-service="([^"]+)"', html)
    assert len(rows) == len(document["timelines"]) > 2 and len(charted) == 2
    assert "checkout" in charted  # the unapproved deployment by the hostile actor
    assert 'id="charts-truncated"' in html and "report.json, beside this file" in html
    assert truncated(document)
