"""SQLAlchemy integration against real databases: SQLite (file and memory) and PostgreSQL,
sync engines and AsyncEngine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import tidescope
from tidescope import EventType
from tidescope.capture import context
from tidescope.capture import runtime as rt
from tidescope.events import Event, ObjectSnapshot, Truncated
from tidescope.integrations import _db
from tidescope.integrations.sqlalchemy import (
    instrument_engine,
    is_instrumented,
    uninstrument_engine,
)

START = EventType.DB_QUERY_START
COMPLETE = EventType.DB_QUERY_COMPLETE
ERROR = EventType.ERROR
BACKENDS = ["sqlite-memory", "sqlite-file", "postgresql"]
DDL = "CREATE TABLE {} (id INTEGER PRIMARY KEY, x INTEGER UNIQUE, s TEXT)"


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path, *, aio: bool) -> str:
    if backend == "sqlite-memory":
        return "sqlite+aiosqlite://" if aio else "sqlite://"
    if backend == "sqlite-file":
        return f"sqlite+{'aiosqlite' if aio else 'pysqlite'}:///{tmp_path / 'shop.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    scheme, rest = dsn.split("://", 1)
    assert scheme in ("postgresql", "postgres")
    return f"postgresql+{'psycopg_async' if aio else 'psycopg'}://{rest}"


def expected_repo(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite-memory":
        return "sqlite::memory:"
    if backend == "sqlite-file":
        return f"sqlite:{tmp_path / 'shop.db'}"
    return "postgresql:tidescope_test"


@pytest.fixture(params=BACKENDS)
def db_engine(
    request: pytest.FixtureRequest, tmp_path: Path, db_table_name: str
) -> Iterator[tuple[sa.Engine, str]]:
    """An instrumented engine on each backend, with an empty table ``(id, x unique, s)``."""
    engine = sa.create_engine(url_for(request.param, request, tmp_path, aio=False))
    with engine.begin() as conn:
        conn.execute(sa.text(DDL.format(db_table_name)))
    assert instrument_engine(engine) is True
    yield engine, db_table_name
    uninstrument_engine(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {db_table_name}"))
    engine.dispose()


def queries(cap: tidescope.Capture) -> list[tuple[Event, Event]]:
    """Each query's (start, complete), joined by ``query_id``, in start order."""
    starts = cap.events(START)
    completes = {e.data["result"]["query_id"]: e for e in cap.events(COMPLETE)}
    assert len(completes) == len(starts)
    return [(s, completes[s.data["metadata"]["query_id"]]) for s in starts]


from _errors import internal_errors  # noqa: E402
from _hostile import Hostile  # noqa: E402


def no_internal_errors(cap: tidescope.Capture) -> None:
    assert internal_errors() == 0, cap.stats()["last_internal_error"]


def by_statement(cap: tidescope.Capture, word: str) -> tuple[Event, Event]:
    found = [q for q in queries(cap) if word in q[0].data["query"]]
    assert len(found) == 1, [q[0].data["query"] for q in queries(cap)]
    return found[0]


# ---------------------------------------------------------------------------------------
# what a query reports


def test_query_reports_statement_params_repo_rowcount_and_duration(
    db_engine: tuple[sa.Engine, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    engine, table = db_engine
    backend = request.node.callspec.params["db_engine"]
    with tidescope.capture(buffer_size=1024) as cap, engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} (id, x, s) VALUES (1, :x, :s)"), {"x": 7, "s": "a"}
        )
        rows = conn.execute(sa.text(f"SELECT x, s FROM {table} WHERE x = :x"), {"x": 7}).all()
    assert rows == [(7, "a")]
    no_internal_errors(cap)
    start, complete = by_statement(cap, "SELECT x, s")
    assert start.data["query"] == complete.data["query"]
    assert "WHERE x = " in start.data["query"]
    params = start.data["params"]
    assert params == ((7,) if backend.startswith("sqlite") else {"x": 7})
    assert complete.data["params"] == params
    assert start.data["repo"] == expected_repo(backend, tmp_path)
    qid = start.data["metadata"]["query_id"]
    assert start.data["metadata"] == {"query_id": qid, "executemany": False}
    assert type(complete.data["duration_us"]) is float and complete.data["duration_us"] >= 0
    # sqlite3 counts no rows for a SELECT (-1), psycopg does
    assert complete.data["result"]["rowcount"] == (-1 if backend.startswith("sqlite") else 1)
    insert_start, insert_complete = by_statement(cap, "INSERT")
    assert insert_complete.data["result"]["rowcount"] == 1
    assert insert_start.event_id < insert_complete.event_id < start.event_id


def test_rowcount_is_the_number_of_rows_an_update_changed(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    with engine.begin() as conn:
        for i in range(5):
            conn.execute(sa.text(f"INSERT INTO {table} (id, x) VALUES ({i}, {i})"))
    with tidescope.capture(buffer_size=256) as cap, engine.begin() as conn:
        result = conn.execute(sa.text(f"UPDATE {table} SET s = 'u' WHERE x >= :low"), {"low": 2})
        assert result.rowcount == 3
    assert by_statement(cap, "UPDATE")[1].data["result"]["rowcount"] == 3


def test_executemany_is_one_query_with_every_parameter_set(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    rows = [{"id": i, "x": i * 10} for i in range(3)]
    with tidescope.capture(buffer_size=256) as cap, engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, x) VALUES (:id, :x)"), rows)
        count = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    assert count == 3
    no_internal_errors(cap)
    start, complete = by_statement(cap, "INSERT")
    assert start.data["metadata"]["executemany"] is True
    assert len(start.data["params"]) == 3
    assert [tuple(p.values()) if isinstance(p, dict) else p for p in start.data["params"]] == [
        (0, 0),
        (1, 10),
        (2, 20),
    ]
    assert complete.data["result"]["rowcount"] == 3


def test_core_insert_of_many_rows_is_reported(db_engine: tuple[sa.Engine, str]) -> None:
    engine, table = db_engine
    t = sa.Table(table, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("x", sa.Integer), sa.Column("s", sa.Text))  # fmt: skip
    with tidescope.capture(buffer_size=256) as cap, engine.begin() as conn:
        conn.execute(sa.insert(t), [{"id": i, "x": i} for i in range(50)])
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 50
    no_internal_errors(cap)
    inserts = [q for q in queries(cap) if q[0].data["query"].startswith("INSERT")]
    # a driver executemany, or SQLAlchemy's insertmanyvalues batches: every row is reported
    assert inserts
    assert sum(c.data["result"]["rowcount"] for _, c in inserts) == 50


def test_statement_and_parameters_reach_the_driver_unchanged(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    seen: list[tuple[Any, Any]] = []

    def spy(conn: Any, cursor: Any, statement: Any, params: Any, ctx: Any, many: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", spy)  # runs after ours
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            conn.execute(sa.text(f"SELECT s FROM {table} WHERE x = :x"), {"x": 3}).all()
    finally:
        sa.event.remove(engine, "before_cursor_execute", spy)
    start, _ = by_statement(cap, "SELECT s")
    assert seen == [(start.data["query"], start.data["params"])]


# ---------------------------------------------------------------------------------------
# correlation: the surrounding request's or call's


def test_query_events_carry_the_bound_request_correlation(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    with tidescope.capture(buffer_size=256) as cap:
        with context.bind_correlation_id("req-42"), engine.connect() as conn:
            conn.execute(sa.text(f"SELECT * FROM {table}")).all()
        with engine.connect() as conn:  # outside the request: no correlation
            conn.execute(sa.text(f"SELECT id FROM {table}")).all()
    (start, complete), (outside, _) = queries(cap)
    assert start.correlation_id == complete.correlation_id == "req-42"
    assert outside.correlation_id is None


def test_query_events_carry_the_surrounding_calls_correlation_and_call_id(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    with tidescope.capture(buffer_size=256) as cap:
        outer = rt.report_function_entry("shop", "checkout", [])
        inner = rt.report_function_entry("shop", "load_cart", [])
        with engine.connect() as conn:
            conn.execute(sa.text(f"SELECT * FROM {table}")).all()
        rt.report_function_exit(inner, None, 1)
        rt.report_function_exit(outer, None, 1)
    start, complete = queries(cap)[0]
    assert start.correlation_id == complete.correlation_id == outer
    assert start.call_id == complete.call_id == inner
    assert start.parent_id == outer


# an in-memory SQLite database is one per thread: no table to share
@pytest.mark.parametrize("db_engine", ["sqlite-file", "postgresql"], indirect=True)
def test_threads_each_carry_their_own_correlation(db_engine: tuple[sa.Engine, str]) -> None:
    engine, table = db_engine
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with context.bind_correlation_id(f"thread-{n}"), engine.connect() as conn:
                barrier.wait(timeout=30)
                for i in range(5):
                    conn.execute(sa.text(f"SELECT {n} AS n, {i} AS i FROM {table}")).all()
        except BaseException as exc:
            errors.append(exc)

    with tidescope.capture(buffer_size=1024) as cap:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    no_internal_errors(cap)
    pairs = queries(cap)
    assert len(pairs) == 20
    for start, complete in pairs:
        n = int(start.data["query"].split()[1])
        assert start.correlation_id == complete.correlation_id == f"thread-{n}"
        assert start.thread_id == complete.thread_id
    assert len({s.thread_id for s, _ in pairs}) == 4


# ---------------------------------------------------------------------------------------
# errors: reported, then raised unchanged


def raised_by(engine: sa.Engine, statement: str, params: Any = None) -> BaseException:
    with engine.connect() as conn:
        try:
            conn.execute(sa.text(statement), params)
        except Exception as exc:
            return exc
    raise AssertionError("no exception")


def same_error(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert type(a.__cause__) is type(b.__cause__)
    assert str(a) == str(b)


def test_bad_sql_is_reported_and_raised_unchanged(db_engine: tuple[sa.Engine, str]) -> None:
    engine, table = db_engine
    bad = f"SELEC x FROM {table}"
    uninstrument_engine(engine)
    plain = raised_by(engine, bad)
    instrument_engine(engine)
    with tidescope.capture(buffer_size=256) as cap:
        err = raised_by(engine, bad)
    same_error(err, plain)
    assert isinstance(err, sa_exc.DBAPIError)
    no_internal_errors(cap)
    start, complete = queries(cap)[0]
    assert start.data["query"] == bad
    reported = complete.data["result"]["error"]
    assert type(reported) is ObjectSnapshot and reported.type_name == type_path(err)
    (error,) = cap.events(ERROR)
    assert error.data["error_type"] == type_path(err)
    qid = start.data["metadata"]["query_id"]
    assert error.data["reason"] == {"query_id": qid, "repo": start.data["repo"]}
    assert error.data["stacktrace"], "the driver's traceback"
    assert error.correlation_id == start.correlation_id


def type_path(exc: BaseException) -> str:
    t = type(exc)
    return f"{t.__module__}.{t.__qualname__}"


def test_constraint_violation_is_reported_and_raised_unchanged(
    db_engine: tuple[sa.Engine, str],
) -> None:
    engine, table = db_engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} (id, x) VALUES (1, 1)"))
    dup = f"INSERT INTO {table} (id, x) VALUES (:id, :x)"
    uninstrument_engine(engine)
    plain = raised_by(engine, dup, {"id": 2, "x": 1})
    instrument_engine(engine)
    with tidescope.capture(buffer_size=256) as cap:
        err = raised_by(engine, dup, {"id": 2, "x": 1})
    same_error(err, plain)
    assert isinstance(err, sa_exc.IntegrityError)
    no_internal_errors(cap)
    _, complete = queries(cap)[0]
    assert complete.data["result"]["error"].type_name == "sqlalchemy.exc.IntegrityError"
    assert len(cap.events(ERROR)) == 1
    with engine.connect() as conn:  # the engine is still usable
        assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 1


def test_failed_connection_is_reported_as_an_error_and_raised(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    instrument_engine(engine)
    try:
        with tidescope.capture(buffer_size=256) as cap, pytest.raises(sa_exc.OperationalError):
            engine.connect()
    finally:
        engine.dispose()
    no_internal_errors(cap)
    assert cap.events(START) == []
    (error,) = cap.events(ERROR)
    assert error.data["reason"]["repo"] == f"sqlite:{tmp_path / 'missing-dir' / 'x.db'}"


def test_a_python_error_inside_the_driver_is_reported_and_raised_as_is() -> None:
    class Unadaptable:
        pass

    engine = sa.create_engine("sqlite://")
    instrument_engine(engine)
    try:
        with (
            tidescope.capture(buffer_size=256) as cap,
            engine.connect() as conn,
            pytest.raises(sa_exc.ProgrammingError) as info,
        ):
            conn.exec_driver_sql("SELECT ?", (Unadaptable(),))
    finally:
        engine.dispose()
    assert "Unadaptable" in str(info.value)
    no_internal_errors(cap)
    (error,) = cap.events(ERROR)
    assert error.data["error_type"] == type_path(info.value)


# ---------------------------------------------------------------------------------------
# bad input: captured safely, never raised


def sqlite_engine() -> sa.Engine:
    engine = sa.create_engine("sqlite://")
    instrument_engine(engine)
    return engine


def test_hostile_parameter_is_captured_without_running_its_code() -> None:
    engine = sqlite_engine()
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT ?", (Hostile(),)).scalar() == 99
    finally:
        engine.dispose()
    no_internal_errors(cap)
    start, _ = queries(cap)[0]
    (param,) = start.data["params"]
    assert type(param) is ObjectSnapshot and param.type_name.endswith("Hostile")
    assert param.attrs == {"state": "kept"}


def test_huge_parameters_and_statements_are_cut_and_marked_but_sent_whole() -> None:
    engine = sqlite_engine()
    big = "x" * 1_000_000
    long_sql = "SELECT ? AS v" + " " * 100_000
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT length(?)", (big,)).scalar() == 1_000_000
            assert conn.exec_driver_sql(long_sql, (1,)).scalar() == 1
            conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", [(i,) for i in range(10_000)])
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 10_000
    finally:
        engine.dispose()
    no_internal_errors(cap)
    pairs = queries(cap)
    (cut,) = pairs[0][0].data["params"]
    assert type(cut) is Truncated
    assert (cut.type_name, cut.size, cut.reason) == ("str", 1_000_000, "length")
    assert type(pairs[1][0].data["query"]) is Truncated
    many = pairs[3][0].data["params"]
    assert type(many) is Truncated and many.size == 10_000
    assert pairs[3][1].data["result"]["rowcount"] == 10_000


@pytest.mark.parametrize("params", [None, {}, {"x": None}], ids=["none", "empty", "null-value"])
def test_none_and_empty_parameters_are_captured(params: Any) -> None:
    engine = sqlite_engine()
    sql = "SELECT :x" if params and "x" in params else "SELECT 1"
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()
    no_internal_errors(cap)
    start, _ = queries(cap)[0]
    assert start.data["params"] == ((None,) if params and "x" in params else ())


# ---------------------------------------------------------------------------------------
# failing open, capture off, setup


def test_a_failure_inside_reporting_is_counted_and_the_query_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("reporter broke")

    engine = sqlite_engine()
    monkeypatch.setattr(_db, "report_db_query_start", broken)
    monkeypatch.setattr(_db, "report_db_query_complete", broken)
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 5").scalar() == 5
            with pytest.raises(sa_exc.OperationalError):
                conn.exec_driver_sql("SELEC 5")
    finally:
        engine.dispose()
    assert internal_errors() == 2  # each start failed, so there was nothing to complete
    assert "reporter broke" in cap.stats()["last_internal_error"]
    # the failed statement is still reported, as an error without a query
    assert [e.event_type for e in cap.events()] == [ERROR]


def test_a_failure_reporting_the_complete_is_counted_and_the_result_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("complete broke")

    engine = sqlite_engine()
    monkeypatch.setattr(_db, "report_db_query_complete", broken)
    monkeypatch.setattr(_db, "report_error", broken)
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 5").scalar() == 5
            with pytest.raises(sa_exc.OperationalError):
                conn.exec_driver_sql("SELEC 5")
    finally:
        engine.dispose()
    assert internal_errors() == 2
    assert len(cap.events(START)) == 2


def test_with_capture_off_nothing_is_recorded_and_queries_run() -> None:
    engine = sqlite_engine()
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 5").scalar() == 5
        with (
            tidescope.capture(buffer_size=256) as cap,
            context.instrumentation_disabled(),
            engine.connect() as conn,
        ):
            assert conn.exec_driver_sql("SELECT 6").scalar() == 6
    finally:
        engine.dispose()
    assert cap.events() == []


def test_instrument_is_idempotent_and_uninstrument_removes_the_listeners() -> None:
    engine = sa.create_engine("sqlite://")
    try:
        assert is_instrumented(engine) is False
        assert instrument_engine(engine) is True
        assert instrument_engine(engine) is False
        assert is_instrumented(engine) is True
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert len(queries(cap)) == 1
        assert uninstrument_engine(engine) is True
        assert uninstrument_engine(engine) is False
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert cap.events() == []
    finally:
        engine.dispose()


def test_instrument_engine_names_the_repo_as_asked() -> None:
    engine = sa.create_engine("sqlite://")
    instrument_engine(engine, repo="orders-db")
    try:
        with tidescope.capture(buffer_size=256) as cap, engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()
    assert queries(cap)[0][0].data["repo"] == "orders-db"


@pytest.mark.parametrize("bad", [None, "sqlite://", object()], ids=["None", "url", "object"])
def test_instrument_engine_rejects_what_is_not_an_engine(bad: Any) -> None:
    with pytest.raises(TypeError, match="Engine"):
        instrument_engine(bad)
    with pytest.raises(TypeError, match="Engine"):
        uninstrument_engine(bad)


def test_importing_tidescope_and_the_integration_imports_no_database_library() -> None:
    code = (
        "import sys, tidescope, tidescope.integrations, tidescope.integrations.sqlalchemy, "
        "tidescope.integrations.dbapi\n"
        "names = ('sqlalchemy', 'psycopg', 'sqlite3', 'aiosqlite')\n"
        "loaded = [m for m in names if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------
# AsyncEngine


@pytest.fixture(params=BACKENDS)
def db_async_engine(
    request: pytest.FixtureRequest, tmp_path: Path, db_table_name: str
) -> Iterator[tuple[AsyncEngine, str]]:
    """An instrumented AsyncEngine (aiosqlite, psycopg async) with an empty table."""
    url = url_for(request.param, request, tmp_path, aio=True)
    if request.param == "sqlite-memory":
        engine = create_async_engine(url, poolclass=sa.pool.StaticPool)  # one shared database
    else:
        engine = create_async_engine(url)

    async def setup() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text(DDL.format(db_table_name)))

    async def teardown() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {db_table_name}"))
        await engine.dispose()

    asyncio.run(setup())
    assert instrument_engine(engine) is True
    assert is_instrumented(engine.sync_engine)
    yield engine, db_table_name
    uninstrument_engine(engine)
    asyncio.run(teardown())


def test_async_engine_queries_are_reported_with_each_tasks_correlation(
    db_async_engine: tuple[AsyncEngine, str],
) -> None:
    engine, table = db_async_engine

    async def handler(n: int) -> list[Any]:
        with context.bind_correlation_id(f"req-{n}"):
            async with engine.connect() as conn:
                await asyncio.sleep(0)
                result = await conn.execute(sa.text(f"SELECT {n} AS n, count(*) FROM {table}"))
                return list(result.all())

    async def main() -> list[list[Any]]:
        return await asyncio.gather(*(handler(n) for n in range(3)))

    with tidescope.capture(buffer_size=1024) as cap:
        results = asyncio.run(main())
    assert results == [[(n, 0)] for n in range(3)]
    no_internal_errors(cap)
    pairs = queries(cap)
    assert len(pairs) == 3
    for start, complete in pairs:
        n = int(start.data["query"].split()[1])
        assert start.correlation_id == complete.correlation_id == f"req-{n}"
        assert start.task_id is not None and start.task_id == complete.task_id
    assert len({s.task_id for s, _ in pairs}) == 3


def test_async_engine_errors_are_reported_and_raised_unchanged(
    db_async_engine: tuple[AsyncEngine, str],
) -> None:
    engine, table = db_async_engine

    async def main() -> BaseException:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f"INSERT INTO {table} (id, x) VALUES (1, 1)"))
            try:
                await conn.execute(sa.text(f"INSERT INTO {table} (id, x) VALUES (2, 1)"))
            except sa_exc.IntegrityError as exc:
                return exc
        raise AssertionError("no exception")

    with tidescope.capture(buffer_size=256) as cap:
        err = asyncio.run(main())
    no_internal_errors(cap)
    assert type(err.__cause__).__name__.endswith("IntegrityError") or err.orig is not None
    first, second = queries(cap)
    assert first[1].data["result"]["rowcount"] == 1
    assert second[1].data["result"]["error"].type_name == "sqlalchemy.exc.IntegrityError"
    assert len(cap.events(ERROR)) == 1
