"""The query index: what the point-in-time rules read, clustered by stream, and its upkeep.

Entries are stored in sequence order, so the history of one service and environment (a
stream) is spread over the whole file, and a question about it decompresses every row
group: about 60 ms per question at ten million entries. The index holds the fields the
rules read as typed columns (no JSON to parse) in *runs*: tables ``facts_run_<last seq>``,
each covering a range of entries, written stream by stream, so that DuckDB's min/max zone
maps skip the row groups of every other stream, and within a row group its rows are
together. The view ``facts`` unions the runs and derives the facts of the newest entries
(the tail) on the fly; :meth:`QueryIndex.cluster` (the writer's) turns a long enough tail
into a run and merges runs of one size, like a log-structured merge tree, and redefines
the view in the same transaction.

It is derived data, like the decoded columns: :data:`DERIVE` is its one definition, and
``ledger verify`` re-derives it and compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb

__all__ = [
    "DERIVE",
    "DERIVED_VIEW",
    "RUNS",
    "QueryIndex",
    "chunks",
    "create_table",
    "derive_range",
    "insert_slice",
    "run_due",
    "run_last",
    "run_name",
    "slices",
    "stream_sizes",
    "to_merge",
    "union",
    "view",
]

_DATA_FIELDS = (
    ("tool", "VARCHAR", "$.tool"), ("method", "VARCHAR", "$.method"),
    ("approver", "VARCHAR", "$.approver"), ("valid_until", "TIMESTAMPTZ", "$.valid_until"),
    ("updated", "INTEGER", "$.instances.updated"), ("total", "INTEGER", "$.instances.total"),
    ("state", "VARCHAR", "$.state"), ("criticality", "VARCHAR", "$.criticality"),
    ("model", "VARCHAR", "$.model"),
)  # fmt: skip
"""(column, type, JSON path in the event data): the fields the rules read from ``data``."""

_FROM_DATA = ", ".join(
    f"CAST(d[{i}] AS {kind}) AS {name}" for i, (name, kind, _) in enumerate(_DATA_FIELDS, 1)
)
_PATHS = ", ".join(f"'{path}'" for _, _, path in _DATA_FIELDS)

DERIVE = f"""
SELECT environment, service, time, seq, type, ingested_at, event_id, actor, change_ref, image,
       target_kind, target, instance, content_hash, {_FROM_DATA}
FROM (SELECT *, json_extract_string(data, [{_PATHS}]) AS d FROM entries)
"""
"""Every fact from its entry; one JSON parse per entry (a path list, not one per field)."""


def create_table(name: str) -> str:
    """The statement that creates an empty run called ``name``: its columns and types are
    those :data:`DERIVE` gives, so the runs and the tail of the view always line up."""
    return f"CREATE TABLE {name} AS SELECT * FROM ({DERIVE}) WHERE false"


_RUN_PREFIX = "facts_run_"
RUNS = (
    "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
    f"AND starts_with(table_name, '{_RUN_PREFIX}')"
)
"""The names of the runs (see :func:`run_name`)."""


def run_name(last: int) -> str:
    """The run holding the facts up to entry ``last``: its name says how far it reaches."""
    return f"{_RUN_PREFIX}{int(last)}"


def run_last(name: str) -> int:
    """The last entry whose facts the run ``name`` holds."""
    return int(name.removeprefix(_RUN_PREFIX))


_RUN_MIN = 50_000
"""Entries not in a run yet are read straight from ``entries`` (the tail); once 50,000 have
arrived they become a run: re-clustering a handful at a time would cost more than it saves."""
_CHUNK = 500_000
"""A new run is made from at most this many entries (a ledger upgraded in one go gets
several), so each slice of it scans at most this many unclustered rows."""
_FANOUT = 4
"""Four runs of one size class are merged into one: each fact is copied about
log4(n / 50,000) times over the ledger's life, and a question reads a few runs per class."""
_SLICE_ROWS = 50_000
"""A run is written a slice of consecutive streams at a time, each slice sorted by stream:
a question then reads its stream's few vectors only. DuckDB's sort of these wide rows
needs memory with their number (under the writer's 64 MB limit it fails at about 200,000
rows), so slices are kept to 50,000 rows; a larger stream is a slice of its own, copied
in the order it is found (one stream needs no sorting to be contiguous)."""


def view(runs: Sequence[str], covered: int) -> str:
    """The statement that (re)defines the ``facts`` view: every run, then the facts of the
    entries after ``covered`` derived on the fly. One definition, read in the reader's own
    transaction: a reader sees every entry once, whatever the writer does meanwhile."""
    parts = [f"SELECT * FROM {run}" for run in runs]
    parts.append(f"SELECT * FROM ({DERIVE}) WHERE seq > {int(covered)}")
    return "CREATE OR REPLACE VIEW facts AS\n" + "\nUNION ALL ".join(parts)


DERIVED_VIEW = f"CREATE TEMP VIEW facts AS {DERIVE}"
"""For a reader of a ledger last written before the query index existed: every fact is
derived on the fly (correct, and as slow as before); the next writer adds the index."""


def run_due(pending: int) -> bool:
    """Whether the tail is long enough to become a run."""
    return pending >= _RUN_MIN


def chunks(first: int, last: int) -> list[tuple[int, int]]:
    """Seq ranges of at most ``_CHUNK`` entries covering ``first`` to ``last``."""
    return [(a, min(a + _CHUNK - 1, last)) for a in range(first, last + 1, _CHUNK)]


def derive_range(first: int, last: int) -> str:
    """The facts of entries ``first`` to ``last``: the source of a new run."""
    return f"({DERIVE} WHERE seq BETWEEN {int(first)} AND {int(last)})"


def union(runs: Sequence[str]) -> str:
    """The facts of several runs: the source of a merged run."""
    return "(" + " UNION ALL ".join(f"FROM {run}" for run in runs) + ")"


def _size_class(rows: int) -> int:
    size, level = _RUN_MIN * _FANOUT, 0
    while rows >= size:
        size, level = size * _FANOUT, level + 1
    return level


def to_merge(runs: Sequence[tuple[str, int]]) -> list[str]:
    """The runs to merge now, given (name, rows) oldest first: the newest ``_FANOUT``
    when they are of one size class (so runs stay ordered by size, like the digits of a
    counter), else none."""
    newest = runs[-_FANOUT:]
    if len(newest) == _FANOUT and len({_size_class(rows) for _, rows in newest}) == 1:
        return [name for name, _ in newest]
    return []


def stream_sizes(source: str) -> str:
    """The number of facts of each stream in ``source``, in clustering order."""
    return (
        f"SELECT environment, service, count(*) FROM {source} "
        "GROUP BY ALL ORDER BY environment, service"
    )


def slices(sizes: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, str, int]]:
    """(environment, first service, last service, streams) ranges of consecutive streams,
    of at most ``_SLICE_ROWS`` facts each (a larger stream is a slice of its own), from
    :func:`stream_sizes` rows. A slice stays in one environment: its filter is then an
    equality and a range, which DuckDB checks against the zone maps."""
    out: list[tuple[str, str, str, int]] = []
    rows = 0
    for environment, service, count in sizes:
        if out and out[-1][0] == environment and rows + count <= _SLICE_ROWS:
            out[-1] = (environment, out[-1][1], service, out[-1][3] + 1)
            rows += count
        else:
            out.append((environment, service, service, 1))
            rows = count
    return out


def insert_slice(table: str, source: str, streams: int) -> str:
    """The statement that copies the facts of one slice ($env, $first, $last) of ``source``
    to ``table``; a slice of several streams sorted by stream."""
    order = " ORDER BY service, time, seq" if streams > 1 else ""
    return (
        f"INSERT INTO {table} SELECT * FROM {source} "
        f"WHERE environment = $env AND service BETWEEN $first AND $last{order}"
    )


class QueryIndex:
    """The writer's upkeep of the index over its own connection (one writer, no lock)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        runs = self._runs()
        self.indexed_seq: int = max((last for _, last, _ in runs), default=0)
        self._failed_tail = 0  # the tail's length at the last failed cluster(), if any
        # The view, (re)defined by this build's DERIVE.
        con.execute(view([name for name, _, _ in runs], self.indexed_seq))

    def cluster(self, head_seq: int, force: bool = False) -> int:
        """Bring the index up to entry ``head_seq``: the tail becomes a run once it is long
        enough (any length with ``force``), and runs of one size are merged. How many
        entries it added to the runs (0: nothing done).

        One transaction: readers see the old runs or the new ones, never a mix. If it fails,
        nothing changed, and without ``force`` it is not tried again until another run's
        worth of entries has arrived.
        """
        covered = self.indexed_seq
        pending = head_seq - covered
        if pending == 0 or not (force or run_due(pending - self._failed_tail)):
            return 0
        runs = self._runs()
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for first, last in chunks(covered + 1, head_seq):
                self._write_run(derive_range(first, last), last)
                runs.append((run_name(last), last, last - first + 1))
                while merge := to_merge([(name, rows) for name, _, rows in runs]):
                    merged = runs[-len(merge) :]
                    del runs[-len(merge) :]
                    self._write_run(union(merge), last, replacing=merge)
                    runs.append((run_name(last), last, sum(r for _, _, r in merged)))
            con.execute(view([name for name, _, _ in runs], head_seq))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._failed_tail = pending
            raise
        self.indexed_seq = head_seq
        self._failed_tail = 0
        return pending

    def _runs(self) -> list[tuple[str, int, int]]:
        """(name, last seq, rows) of each run, oldest first."""
        runs = []
        for (name,) in self._con.execute(RUNS).fetchall():
            [(rows,)] = self._con.execute(f"SELECT count(*) FROM {name}").fetchall()
            runs.append((name, run_last(name), int(rows)))
        return sorted(runs, key=lambda run: run[1])

    def _write_run(self, source: str, last: int, replacing: Sequence[str] = ()) -> None:
        """Write the facts of ``source`` stream slice by stream slice to run ``last``."""
        con = self._con
        con.execute(create_table("new_run"))
        for environment, first, final, streams in slices(
            con.execute(stream_sizes(source)).fetchall()
        ):
            con.execute(
                insert_slice("new_run", source, streams),
                {"env": environment, "first": first, "last": final},
            )
        for old in replacing:
            con.execute(f"DROP TABLE {old}")
        con.execute(f"ALTER TABLE new_run RENAME TO {run_name(last)}")
