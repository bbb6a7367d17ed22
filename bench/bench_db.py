"""Per-query overhead of the SQLAlchemy integration, against OpenTelemetry's, in one run.

    python bench/bench_db.py [--rounds 15] [--queries 2000] [--pg-queries 1000] [--no-postgres]

Each database gets four engines (the tidescope rows share one), made before any
instrumentation so that nothing installed for one reaches another, and one connection per
row held for the whole run; a query is ``conn.execute(text("SELECT :x"), {"x": i}).scalar()``:

- ``plain``: no listener at all;
- ``no-op listeners``: three do-nothing listeners on the events the integration uses
  (``before_cursor_execute``, ``after_cursor_execute``, ``handle_error``): what SQLAlchemy's
  event dispatch itself costs any listener, ours or OpenTelemetry's (a diagnostic row);
- ``tidescope``: ``instrument_engine(engine)`` with capture on (``tidescope.start()``, a
  ``1 << 16`` ring drained after each block, outside the timing): two events per query;
- ``tidescope, reporters stubbed``: the same, with the core's two database reporters
  replaced by no-ops: the integration's own work, without the core's event building (a
  diagnostic row);
- ``tidescope, capture off``: the same engine between sessions;
- ``OpenTelemetry``: ``SQLAlchemyInstrumentor().instrument(engines=[...])`` with the SDK's
  ``TracerProvider`` and a ``BatchSpanProcessor`` feeding an exporter that counts and drops
  the spans (flushed after each block, outside the timing): one span per query. Its
  dependency check is skipped: it declares ``sqlalchemy < 2.1`` and works on 2.1.

Every round times one block of queries per configuration, in an order rotated every round
(2 shared cores whose speed drifts), in CPU time of this process (every thread); the table
gives the median CPU µs per query over rounds and the median of each round's difference
to ``plain`` (the added µs per query). Each
block's events and spans are counted: 2 events and 1 span per query, or the run fails.
SQLite runs in memory; PostgreSQL is the server of ``--pg-dsn``, else
``TIDESCOPE_TEST_POSTGRES_DSN``, else the one ``scripts/postgres`` starts (skipped, with
the reason, when none can).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tidescope
from tidescope.events import EventType
from tidescope.integrations import _db
from tidescope.integrations.sqlalchemy import instrument_engine

CONFIGS = (
    "plain",
    "no-op listeners",
    "tidescope",
    "tidescope, reporters stubbed",
    "tidescope, capture off",
    "OpenTelemetry",
)
SHARED = {"tidescope, reporters stubbed": "tidescope", "tidescope, capture off": "tidescope"}
RING = 1 << 16


class CountingExporter(SpanExporter):
    """Drops spans, counting them (the peer pays for making spans, not for shipping them)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _noop(*args: Any) -> None:
    pass


def _stub(*args: Any) -> bool:
    return True


REPORTERS = (_db.report_db_query_start, _db.report_db_query_complete)


class Database:
    """One database's engines and their open connections."""

    def __init__(self, name: str, url: str, queries: int) -> None:
        self.name = name
        self.queries = queries
        self.engines = {c: sa.create_engine(url) for c in CONFIGS if c not in SHARED}
        for config, engine in SHARED.items():
            self.engines[config] = self.engines[engine]
        for event in ("before_cursor_execute", "after_cursor_execute", "handle_error"):
            sa.event.listen(self.engines["no-op listeners"], event, _noop)
        instrument_engine(self.engines["tidescope"])
        self.conns: dict[str, sa.Connection] = {}
        self.times: dict[str, list[float]] = {c: [] for c in CONFIGS}
        self.added: dict[str, list[float]] = {c: [] for c in CONFIGS}

    def connect(self) -> None:
        for config, engine in self.engines.items():
            self.conns[config] = engine.connect()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        for engine in set(self.engines.values()):
            engine.dispose()


STMT = sa.text("SELECT :x")


def run_block(conn: sa.Connection, n: int) -> float:
    """CPU µs per query over ``n`` queries: this process's CPU time, every thread (the span
    processor's too; on PostgreSQL, not the server's)."""
    execute = conn.execute
    start = time.process_time_ns()
    for i in range(n):
        execute(STMT, {"x": i}).scalar()
    return (time.process_time_ns() - start) / n / 1000


def time_config(db: Database, config: str, exporter: CountingExporter, tp: TracerProvider) -> float:
    conn, n = db.conns[config], db.queries
    if config in ("tidescope", "tidescope, reporters stubbed"):
        stubbed = config == "tidescope, reporters stubbed"
        session = tidescope.start(buffer_size=RING)
        if stubbed:  # the integration's own work: capture on, the core's reporters no-ops
            _db.report_db_query_start = _db.report_db_query_complete = _stub  # type: ignore[assignment]
        try:
            us = run_block(conn, n)
        finally:
            _db.report_db_query_start, _db.report_db_query_complete = REPORTERS
            tidescope.stop()
        buf = session.buffer
        assert buf is not None
        events = buf.drain()
        if stubbed:
            if events:
                raise SystemExit(f"{len(events)} events with the reporters stubbed")
            return us
        kinds = {EventType.DB_QUERY_START: 0, EventType.DB_QUERY_COMPLETE: 0}
        for e in events:
            kinds[e.event_type] = kinds.get(e.event_type, 0) + 1
        if list(kinds.values()) != [n, n] or len(events) != 2 * n:
            raise SystemExit(f"tidescope recorded {kinds} for {n} queries")
        return us
    before = exporter.spans
    us = run_block(conn, n)
    tp.force_flush()
    spans = exporter.spans - before
    expected = n if config == "OpenTelemetry" else 0
    if spans != expected:
        raise SystemExit(f"{config}: {spans} spans for {n} queries, expected {expected}")
    return us


def postgres_url(opts: argparse.Namespace) -> tuple[str | None, str]:
    if opts.no_postgres:
        return None, "--no-postgres"
    dsn = opts.pg_dsn or os.environ.get("TIDESCOPE_TEST_POSTGRES_DSN", "")
    if not dsn:
        script = Path(__file__).resolve().parents[1] / "scripts" / "postgres"
        proc = subprocess.run([script], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None, f"scripts/postgres failed: {proc.stderr.strip()[-500:]}"
        dsn = proc.stdout.strip().splitlines()[-1]
    return "postgresql+psycopg://" + dsn.split("://", 1)[1], dsn


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--queries", type=int, default=2000, help="queries per block on SQLite")
    ap.add_argument("--pg-queries", type=int, default=1000, help="queries per block on PostgreSQL")
    ap.add_argument("--pg-dsn", default="", help="default: TIDESCOPE_TEST_POSTGRES_DSN")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    opts = ap.parse_args()

    dbs = [Database("SQLite (memory)", "sqlite://", opts.queries)]
    pg_url, pg_note = postgres_url(opts)
    if pg_url is not None:
        dbs.append(Database("PostgreSQL (127.0.0.1)", pg_url, opts.pg_queries))

    exporter = CountingExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    for db in dbs:
        db.connect()
    # after every engine and connection exists: the instrumentor also wraps create_engine
    # and Engine.connect, for every engine
    SQLAlchemyInstrumentor().instrument(
        engines=[db.engines["OpenTelemetry"] for db in dbs],
        tracer_provider=tp,
        skip_dep_check=True,
    )
    for db in dbs:
        for config in CONFIGS:  # warm-up: caches, statement compilation, first connection
            time_config(db, config, exporter, tp)

    core = tidescope.core_info()
    print(f"Python {platform.python_version()} ({sys.executable}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs; tidescope core: {core['core']} ({core['reason']}); "
          f"SQLAlchemy {sa.__version__}; opentelemetry-instrumentation-sqlalchemy "
          f"{_version('opentelemetry-instrumentation-sqlalchemy')}, opentelemetry-sdk "
          f"{_version('opentelemetry-sdk')}; psycopg {_version('psycopg')}")  # fmt: skip
    skipped = "" if pg_url else f" (PostgreSQL skipped: {pg_note})"
    print(f"{opts.rounds} rounds; blocks of {opts.queries} queries on SQLite, "
          f"{opts.pg_queries} on PostgreSQL{skipped}")  # fmt: skip
    started = time.monotonic()
    order = list(CONFIGS)
    for r in range(opts.rounds):
        for db in dbs:
            this_round: dict[str, float] = {}
            for config in order:
                this_round[config] = time_config(db, config, exporter, tp)
            for config, us in this_round.items():
                db.times[config].append(us)
                db.added[config].append(us - this_round["plain"])
        order = order[1:] + order[:1]
        if opts.verbose:
            print(f"round {r + 1} done at {time.monotonic() - started:.0f} s", file=sys.stderr)

    for db in dbs:
        print(f"\n{db.name}:\n")
        print("| configuration | CPU µs per query (median) | added CPU µs per query (median) |")
        print("|---|---|---|")
        for config in CONFIGS:
            t, a = median(db.times[config]), median(db.added[config])
            lo, hi = min(db.times[config]), max(db.times[config])
            added = "" if config == "plain" else f"{a:.2f}"
            print(f"| {config} | {t:.2f} ({lo:.2f}-{hi:.2f}) | {added} |")
        ours, peer = median(db.added["tidescope"]), median(db.added["OpenTelemetry"])
        floor = median(db.added["no-op listeners"])
        print(f"\ntidescope added / OpenTelemetry added: {ours:.2f} / {peer:.2f} µs = "
              f"{ours / peer:.2f} (target <= 0.10)")  # fmt: skip
        print(f"without SQLAlchemy's event dispatch (no-op listeners, {floor:.2f} µs), paid by "
              f"both: {ours - floor:.2f} / {peer - floor:.2f} µs = "
              f"{(ours - floor) / (peer - floor):.2f}")  # fmt: skip
    for db in dbs:
        db.close()
    tp.shutdown()
    print(f"\nwall time {time.monotonic() - started:.0f} s")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
