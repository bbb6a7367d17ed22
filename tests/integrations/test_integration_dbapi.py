"""DB-API 2 proxies against real drivers: sqlite3 (file and memory) and psycopg on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import psycopg.adapt
import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import context
from tidescope.capture import runtime as rt
from tidescope.events import Event, ObjectSnapshot, Truncated
from tidescope.integrations import _db, dbapi

START = EventType.DB_QUERY_START
COMPLETE = EventType.DB_QUERY_COMPLETE
ERROR = EventType.ERROR
BACKENDS = ["sqlite-memory", "sqlite-file", "postgresql"]
DDL = "CREATE TABLE {} (id INTEGER PRIMARY KEY, x INTEGER UNIQUE, s TEXT)"


@dataclass
class DB:
    """One test database: the proxy, its driver, the table, the driver's placeholder."""

    conn: dbapi.Connection
    module: ModuleType
    table: str
    backend: str
    repo: str

    @property
    def ph(self) -> str:
        return "?" if self.module is sqlite3 else "%s"

    def sql(self, text: str) -> str:
        """``text`` with ``{t}`` the table and ``?`` this driver's placeholder."""
        return text.format(t=self.table).replace("?", self.ph)


def open_raw(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if backend == "sqlite-memory":
        return sqlite3.connect(":memory:")
    if backend == "sqlite-file":
        return sqlite3.connect(tmp_path / "shop.db")
    return psycopg.connect(request.getfixturevalue("pg_dsn"))


def repo_of(backend: str, tmp_path: Path) -> str:
    return {
        "sqlite-memory": "sqlite::memory:",
        "sqlite-file": f"sqlite:{tmp_path / 'shop.db'}",
        "postgresql": "postgresql:tidescope_test",
    }[backend]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path, db_table_name: str) -> Iterator[DB]:
    """A proxy connection on each backend, with an empty table ``(id, x unique, s)``."""
    backend = request.param
    if backend == "sqlite-memory":
        conn = dbapi.connect(sqlite3, ":memory:")
    elif backend == "sqlite-file":
        conn = dbapi.connect("sqlite3", tmp_path / "shop.db")
    else:
        conn = dbapi.connect(psycopg, request.getfixturevalue("pg_dsn"))
    raw = conn.__wrapped__
    raw.execute(DDL.format(db_table_name))
    raw.commit()
    yield DB(conn, sqlite3 if backend.startswith("sqlite") else psycopg, db_table_name, backend,
             repo_of(backend, tmp_path))  # fmt: skip
    try:
        raw.rollback()
        raw.execute(f"DROP TABLE {db_table_name}")
        raw.commit()
    finally:
        raw.close()


from _errors import internal_errors  # noqa: E402
from _hostile import Hostile  # noqa: E402


def queries(cap: tidescope.Capture) -> list[tuple[Event, Event]]:
    """Each query's (start, complete), joined by ``query_id``, in start order."""
    starts = cap.events(START)
    completes = {e.data["result"]["query_id"]: e for e in cap.events(COMPLETE)}
    assert len(completes) == len(starts)
    return [(s, completes[s.data["metadata"]["query_id"]]) for s in starts]


def seed(db: DB, n: int = 3) -> None:
    raw = db.conn.__wrapped__
    for i in range(n):
        raw.execute(db.sql("INSERT INTO {t} (id, x, s) VALUES (?, ?, ?)"), (i, i * 10, f"s{i}"))
    raw.commit()


# ---------------------------------------------------------------------------------------
# calls pass through unchanged; each execute is a query


def test_execute_and_fetches_pass_through_and_each_execute_is_reported(db: DB) -> None:
    seed(db)
    select = db.sql("SELECT id, x, s FROM {t} WHERE x >= ? ORDER BY id")
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.cursor()
        assert cur.execute(select, (10,)) is cur  # chaining gets the proxy back
        assert [d[0] for d in cur.description] == ["id", "x", "s"]
        assert cur.fetchone() == (1, 10, "s1")
        assert cur.fetchall() == [(2, 20, "s2")]
        assert cur.execute(select, (0,)).fetchmany(2) == [(0, 0, "s0"), (1, 10, "s1")]
        cur.close()
    assert internal_errors() == 0
    (first, first_done), (second, _) = queries(cap)
    assert first.data["query"] == select and first.data["params"] == (10,)
    assert second.data["params"] == (0,)
    assert first.data["repo"] == db.repo
    assert first.data["metadata"]["executemany"] is False
    assert first_done.data["result"]["rowcount"] == (-1 if db.module is sqlite3 else 2)
    assert type(first_done.data["duration_us"]) is float


def test_rowcount_of_a_write_is_reported_and_readable(db: DB) -> None:
    seed(db, 5)
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.cursor()
        cur.execute(db.sql("UPDATE {t} SET s = ? WHERE x >= ?"), ("u", 20))
        assert cur.rowcount == 3
        cur.close()
    assert queries(cap)[0][1].data["result"]["rowcount"] == 3


def test_connection_execute_shortcut_returns_a_reporting_cursor(db: DB) -> None:
    seed(db)
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.execute(db.sql("SELECT count(*) FROM {t}"))
        assert type(cur) is dbapi.Cursor and cur.connection is db.conn
        assert cur.fetchone() == (3,)
        cur.execute(db.sql("SELECT 1"))
        cur.close()
    assert len(queries(cap)) == 2


def test_executemany_is_one_query_with_every_parameter_set(db: DB) -> None:
    rows = [(i, i * 2) for i in range(4)]
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.cursor()
        cur.executemany(db.sql("INSERT INTO {t} (id, x) VALUES (?, ?)"), rows)
        assert cur.rowcount == 4
        cur.close()
    db.conn.commit()
    assert internal_errors() == 0
    ((start, complete),) = queries(cap)
    assert start.data["metadata"]["executemany"] is True
    assert start.data["params"] == rows
    assert complete.data["result"]["rowcount"] == 4
    count = db.conn.__wrapped__.execute(db.sql("SELECT count(*) FROM {t}")).fetchone()
    assert count == (4,)


def test_executemany_of_a_generator_records_it_without_consuming_it(db: DB) -> None:
    rows = ((i, i) for i in range(3))
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.cursor()
        cur.executemany(db.sql("INSERT INTO {t} (id, x) VALUES (?, ?)"), rows)
        cur.close()
    assert db.conn.execute(db.sql("SELECT count(*) FROM {t}")).fetchone() == (3,)
    params = queries(cap)[0][0].data["params"]
    assert type(params) is ObjectSnapshot and params.type_name == "builtins.generator"


def test_cursor_is_an_iterator_and_a_context_manager_that_closes_it(db: DB) -> None:
    seed(db)
    with db.conn.cursor() as cur:
        assert type(cur) is dbapi.Cursor
        cur.execute(db.sql("SELECT id FROM {t} ORDER BY id"))
        assert [row[0] for row in cur] == [0, 1, 2]
    with pytest.raises(db.module.Error):
        cur.execute(db.sql("SELECT 1"))


def test_attributes_are_read_and_set_on_the_drivers_objects(db: DB) -> None:
    raw = db.conn.__wrapped__
    cur = db.conn.cursor()
    cur.arraysize = 7
    assert cur.__wrapped__.arraysize == 7 == cur.arraysize
    cur.close()
    if db.module is sqlite3:
        db.conn.row_factory = sqlite3.Row
        assert raw.row_factory is sqlite3.Row
        row = db.conn.execute("SELECT 5 AS five").fetchone()
        assert row["five"] == 5
        # (no `del conn.row_factory` here: CPython's sqlite3 then crashes on the next query)
    else:
        db.conn.autocommit = True
        assert raw.autocommit is True and db.conn.autocommit is True
        db.conn.autocommit = False
    assert db.conn.closed is False if db.module is psycopg else True


def test_connection_context_manager_behaves_as_the_drivers(
    request: pytest.FixtureRequest, tmp_path: Path, db_table_name: str
) -> None:
    conn = dbapi.connect(sqlite3, tmp_path / "cm.db")
    with conn as entered:  # sqlite3: a transaction, committed on exit
        assert entered is conn
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    other = sqlite3.connect(tmp_path / "cm.db")
    assert other.execute("SELECT v FROM t").fetchall() == [(1,)]
    other.close()
    conn.close()
    pg = dbapi.connect(psycopg, request.getfixturevalue("pg_dsn"))
    with pg as entered:  # psycopg: commits, then closes the connection
        assert entered is pg
        pg.execute("SELECT 1")
    assert pg.__wrapped__.closed


def test_executescript_is_reported_as_one_query(tmp_path: Path) -> None:
    conn = dbapi.connect(sqlite3, ":memory:")
    script = "CREATE TABLE a (v INTEGER); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);"
    try:
        with tidescope.capture(buffer_size=256) as cap:
            conn.executescript(script)
            assert conn.execute("SELECT count(*) FROM a").fetchone() == (2,)
    finally:
        conn.close()
    (start, _), _ = queries(cap)
    assert start.data["query"] == script and start.data["params"] is None


def test_what_the_driver_lacks_is_missing_from_the_proxy_too(db: DB) -> None:
    cur = db.conn.cursor()
    with pytest.raises(AttributeError):
        cur.callproc("anything")  # neither sqlite3 nor psycopg has callproc
    with pytest.raises(AttributeError):
        _ = cur.no_such_attribute
    cur.close()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_psycopg_server_side_cursor_is_reported(db: DB) -> None:
    seed(db)
    with tidescope.capture(buffer_size=256) as cap, db.conn.cursor(name="srv") as cur:
        cur.execute(db.sql("SELECT id FROM {t} ORDER BY id"))
        assert [r[0] for r in cur] == [0, 1, 2]
    assert len(queries(cap)) == 1


# ---------------------------------------------------------------------------------------
# correlation


def test_query_events_carry_the_bound_request_correlation(db: DB) -> None:
    with tidescope.capture(buffer_size=256) as cap:
        with context.bind_correlation_id({"request": 7}):
            db.conn.execute(db.sql("SELECT 1")).close()
        db.conn.execute(db.sql("SELECT 2")).close()
    (start, complete), (outside, _) = queries(cap)
    assert start.correlation_id == complete.correlation_id == {"request": 7}
    assert outside.correlation_id is None


def test_query_events_carry_the_surrounding_calls_correlation(db: DB) -> None:
    with tidescope.capture(buffer_size=256) as cap:
        outer = rt.report_function_entry("shop", "checkout", [])
        inner = rt.report_function_entry("shop", "save", [])
        db.conn.execute(db.sql("SELECT 1")).close()
        rt.report_function_exit(inner, None, 1)
        rt.report_function_exit(outer, None, 1)
    start, complete = queries(cap)[0]
    assert start.correlation_id == complete.correlation_id == outer
    assert start.call_id == complete.call_id == inner


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_threads_each_carry_their_own_correlation(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        conn = dbapi.wrap_connection(open_raw(backend, request, tmp_path))
        try:
            with context.bind_correlation_id(f"thread-{n}"):
                barrier.wait(timeout=30)
                for i in range(5):
                    conn.execute(f"SELECT {n}, {i}").close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    request.getfixturevalue("pg_dsn") if backend == "postgresql" else None
    with tidescope.capture(buffer_size=1024) as cap:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    assert internal_errors() == 0
    pairs = queries(cap)
    assert len(pairs) == 20
    for start, complete in pairs:
        n = int(start.data["query"].split()[1].rstrip(","))
        assert start.correlation_id == complete.correlation_id == f"thread-{n}"
        assert start.thread_id == complete.thread_id
    assert len({s.thread_id for s, _ in pairs}) == 4


# ---------------------------------------------------------------------------------------
# errors: reported, then raised unchanged


def raised(fn: Any, *args: Any) -> BaseException:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("no exception")


def test_bad_sql_is_reported_and_the_drivers_exception_raised_unchanged(db: DB) -> None:
    bad = db.sql("SELEC x FROM {t}")
    raw_cur = db.conn.__wrapped__.cursor()
    plain = raised(raw_cur.execute, bad)
    raw_cur.close()
    db.conn.rollback()
    cur = db.conn.cursor()
    with tidescope.capture(buffer_size=256) as cap:
        err = raised(cur.execute, bad)
    cur.close()
    db.conn.rollback()
    assert type(err) is type(plain) and err.args == plain.args
    assert internal_errors() == 0
    ((start, complete),) = queries(cap)
    reported = complete.data["result"]["error"]
    assert type(reported) is ObjectSnapshot and reported.type_name.endswith(type(err).__name__)
    (error,) = cap.events(ERROR)
    assert error.data["message"] == err.args
    assert error.data["reason"]["query_id"] == start.data["metadata"]["query_id"]


def test_constraint_violation_is_reported_and_raised_unchanged(db: DB) -> None:
    seed(db, 1)
    dup = db.sql("INSERT INTO {t} (id, x) VALUES (?, ?)")
    with tidescope.capture(buffer_size=256) as cap:
        err = raised(db.conn.execute, dup, (5, 0))
    db.conn.rollback()
    assert isinstance(err, db.module.IntegrityError)
    (error,) = cap.events(ERROR)
    assert error.data["error_type"].endswith(type(err).__name__)
    assert queries(cap)[0][1].data["result"]["error"].type_name == error.data["error_type"]
    assert db.conn.execute(db.sql("SELECT count(*) FROM {t}")).fetchone() == (1,)


def test_interrupting_exceptions_are_reported_and_propagate() -> None:
    class Interrupting:
        def __conform__(self, protocol: Any) -> Any:
            raise KeyboardInterrupt

    conn = dbapi.connect(sqlite3, ":memory:")
    try:
        with tidescope.capture(buffer_size=256) as cap, pytest.raises(KeyboardInterrupt):
            conn.execute("SELECT ?", (Interrupting(),))
    finally:
        conn.close()
    assert queries(cap)[0][1].data["result"]["error"].type_name == "builtins.KeyboardInterrupt"


# ---------------------------------------------------------------------------------------
# bad input: captured safely, never raised


class HostileDumper(psycopg.adapt.Dumper):
    def dump(self, obj: Any) -> bytes:
        return b"99"


def test_hostile_parameters_are_captured_without_running_their_code(db: DB) -> None:
    if db.module is psycopg:
        db.conn.adapters.register_dumper(Hostile, HostileDumper)
    with tidescope.capture(buffer_size=256) as cap:
        cur = db.conn.execute(db.sql("SELECT CAST(? AS INTEGER)"), (Hostile(),))
        assert cur.fetchone() == (99,)
        cur.close()
    assert internal_errors() == 0
    ((start, _),) = queries(cap)
    (param,) = start.data["params"]
    assert type(param) is ObjectSnapshot and param.type_name.endswith("Hostile")
    assert param.attrs == {"state": "kept"}


def test_huge_parameters_are_cut_and_marked_but_sent_whole(db: DB) -> None:
    big = "x" * 1_000_000
    rows = [(i, i) for i in range(10_000)]
    with tidescope.capture(buffer_size=256) as cap:
        assert db.conn.execute(db.sql("SELECT length(?)"), (big,)).fetchone() == (1_000_000,)
        cur = db.conn.cursor()
        cur.executemany(db.sql("INSERT INTO {t} (id, x) VALUES (?, ?)"), rows)
        cur.close()
    assert internal_errors() == 0
    (one, _), (many, done) = queries(cap)
    (cut,) = one.data["params"]
    assert type(cut) is Truncated and (cut.size, cut.reason) == (1_000_000, "length")
    assert type(many.data["params"]) is Truncated and many.data["params"].size == 10_000
    assert done.data["result"]["rowcount"] == 10_000


def test_none_parameters_behave_as_the_driver_and_are_captured(db: DB) -> None:
    raw_cur = db.conn.__wrapped__.cursor()
    try:
        raw_cur.execute(db.sql("SELECT 1"), None)
        expected: Any = raw_cur.fetchone()
    except Exception as exc:
        expected = type(exc)
    raw_cur.close()
    db.conn.rollback()
    cur = db.conn.cursor()
    with tidescope.capture(buffer_size=256) as cap:
        try:
            got: Any = cur.execute(db.sql("SELECT 1"), None).fetchone()
        except Exception as exc:
            got = type(exc)
        cur.execute(db.sql("SELECT ?"), (None,))
        assert cur.fetchone() == (None,)
    cur.close()
    assert got == expected
    assert internal_errors() == 0
    assert [s.data["params"] for s, _ in queries(cap)] == [None, (None,)]


# ---------------------------------------------------------------------------------------
# failing open, capture off, setup


class FakeCursor:
    """A DB-API cursor whose ``rowcount`` raises: the query must still return its result."""

    def execute(self, operation: Any, params: Any = None) -> str:
        return "result"

    def callproc(self, name: Any, params: Any = ()) -> Any:
        return params

    @property
    def rowcount(self) -> int:
        raise RuntimeError("rowcount broke")


class FakeConnection:
    def cursor(self) -> FakeCursor:
        return FakeCursor()


def test_a_cursor_attribute_that_raises_is_counted_and_the_result_returned() -> None:
    conn = dbapi.wrap_connection(FakeConnection(), repo="fake")
    with tidescope.capture(buffer_size=256) as cap:
        cur = conn.cursor()
        assert cur.execute("SELECT 1") == "result"
        assert cur.callproc("proc", (1, 2)) == (1, 2)
    assert internal_errors() == 2
    (_, complete), (proc, _) = queries(cap)
    assert complete.data["result"]["rowcount"] is None
    assert (proc.data["query"], proc.data["params"], proc.data["repo"]) == ("proc", (1, 2), "fake")


def test_a_failure_inside_reporting_is_counted_and_the_query_runs(
    db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("reporter broke")

    monkeypatch.setattr(_db, "report_db_query_start", broken)
    with tidescope.capture(buffer_size=256) as cap:
        assert db.conn.execute(db.sql("SELECT 5")).fetchone() == (5,)
    assert internal_errors() == 1
    assert cap.events() == []


def test_with_capture_off_nothing_is_recorded_and_queries_run(db: DB) -> None:
    assert db.conn.execute(db.sql("SELECT 5")).fetchone() == (5,)
    with tidescope.capture(buffer_size=256) as cap, context.instrumentation_disabled():
        assert db.conn.execute(db.sql("SELECT 6")).fetchone() == (6,)
    assert cap.events() == []


def test_wrap_connection_reuses_a_proxy_and_names_the_repo(db: DB) -> None:
    assert dbapi.wrap_connection(db.conn) is db.conn
    assert db.conn.repo == db.repo and db.repo in repr(db.conn)
    raw = db.conn.__wrapped__
    rewrapped = dbapi.wrap_connection(raw)
    assert rewrapped.__wrapped__ is raw
    # psycopg tells its database; sqlite3 does not (connect() knows the file)
    assert rewrapped.repo == ("sqlite" if db.module is sqlite3 else db.repo)
    assert dbapi.wrap_connection(raw, repo="orders").repo == "orders"


def test_wrap_connection_rejects_none_and_asyncio_connections() -> None:
    class AsyncConnection:
        async def execute(self, sql: str) -> None:
            pass

    with pytest.raises(TypeError, match="None"):
        dbapi.wrap_connection(None)
    with pytest.raises(TypeError, match="coroutine"):
        dbapi.wrap_connection(AsyncConnection())
