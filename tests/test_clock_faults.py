"""Clock faults: the host's clock jumps back or forward under the writer.

The ledger's times are its testimony (keys are judged at the witnessed time), so they never
go back, and a jump is reported rather than silently absorbed into them.
"""

from __future__ import annotations

from pathlib import Path

from helpers import make_event
from ledger_builders import append, signers

from ledger.store.clock import JUMP_TOLERANCE_US, LedgerClock
from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal

HOUR_NS = 3600 * 10**9


class FakeHost:
    """A wall clock that can be set, beside a monotonic clock that only advances."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000 * 10**9  # 2027-01-15, after make_event's events
        self.monotonic = 10**12

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.monotonic += ns

    def clock(self, jumps: list[int]) -> LedgerClock:
        return LedgerClock(jumps.append, lambda: self.wall, lambda: self.monotonic)


def test_a_clock_set_back_an_hour_is_reported_and_time_never_goes_back() -> None:
    host, jumps = FakeHost(), list[int]()
    clock = host.clock(jumps)
    before = clock.now_us()
    host.advance(10**9)
    host.wall -= HOUR_NS
    after = clock.now_us()
    assert after >= before
    assert jumps == [-HOUR_NS // 1000] and clock.jumps == 1


def test_a_clock_set_forward_is_reported() -> None:
    host, jumps = FakeHost(), list[int]()
    clock = host.clock(jumps)
    start = clock.now_us()
    host.wall += 2 * HOUR_NS
    assert clock.now_us() == start + 2 * HOUR_NS // 1000
    assert jumps == [2 * HOUR_NS // 1000]


def test_a_gentle_slew_is_no_jump() -> None:
    host, jumps = FakeHost(), list[int]()
    clock = host.clock(jumps)
    for _ in range(100):
        clock.now_us()
        host.advance(10**9)
        host.wall += (JUMP_TOLERANCE_US // 2) * 1000  # half the tolerance a second
        host.wall -= (JUMP_TOLERANCE_US // 2) * 1000
    assert jumps == []


def test_a_ledger_written_across_a_backward_jump_keeps_its_order_and_verifies(
    tmp_path: Path,
) -> None:
    ci, _, ring = signers()
    host, jumps = FakeHost(), list[int]()
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db, clock=host.clock(jumps))
    try:
        append(writer, ring, [seal(make_event(), ci) for _ in range(3)], 0)
        host.advance(10**9)
        host.wall -= HOUR_NS  # NTP steps the clock back an hour
        append(writer, ring, [seal(make_event(), ci) for _ in range(3)], 3)
    finally:
        writer.close()
    assert jumps and jumps[0] < 0
    with LedgerReader(db) as reader:
        times = [row[0] for row in reader.con.execute(
            "SELECT witnessed_at FROM entries ORDER BY seq").fetchall()]  # fmt: skip
        assert times == sorted(times)
        assert verify_ledger(reader, ring, workers=1).check().size == 6
