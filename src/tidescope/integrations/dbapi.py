"""DB-API 2 (PEP 249): connection and cursor proxies that report every execute as a query.

For drivers used without SQLAlchemy, such as ``sqlite3`` and ``psycopg`` (3)::

    from tidescope.integrations import dbapi
    conn = dbapi.connect(sqlite3, "shop.db")         # or dbapi.wrap_connection(conn)
    with conn.cursor() as cur:                       # sqlite3 cursors too
        cur.execute("SELECT * FROM cart WHERE id = ?", (7,))

Every ``execute``, ``executemany``, ``executescript`` and ``callproc``, on a cursor or on
the connection (the ``conn.execute()`` shortcut of both drivers), becomes a
``db_query_start`` and a ``db_query_complete`` event with the same fields as the
SQLAlchemy integration's; an exception also gives an ``error`` event and then reaches the
caller unchanged. The calls themselves pass through unchanged, and so does everything
else (fetches, iteration, ``commit``, attributes such as ``row_factory`` or
``autocommit``, read and set): the proxies only add reports. A cursor's ``connection`` is
the proxy; ``__wrapped__`` is the driver's object, for code that needs the real type.

Reporting fails open (a failure inside it is counted, never raised). With capture off an
execute costs one extra call and one check. Asyncio drivers (psycopg's ``AsyncConnection``,
aiosqlite) are not DB-API 2: instrument them through SQLAlchemy's ``AsyncEngine``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from types import ModuleType, TracebackType
from typing import Any, Final

from tidescope.integrations import _db, count_error

__all__ = ["Connection", "Cursor", "connect", "wrap_connection"]

# driver module -> the dialect name SQLAlchemy gives the same database, for the repo name
_DIALECTS: Final = {
    "sqlite3": "sqlite",
    "pysqlite2": "sqlite",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "pg8000": "postgresql",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
    "mysql": "mysql",
    "oracledb": "oracle",
    "pyodbc": "mssql",
}
_STATEMENT_KEYS: Final = ("query", "operation", "sql", "procname", "sql_script")
_PARAMS_KEYS: Final = ("params", "parameters", "params_seq", "seq_of_parameters", "args")


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``(statement, params)`` of an execute-like call, however the caller spelled them."""
    statement = params = None
    if args:
        statement = args[0]
    else:
        for key in _STATEMENT_KEYS:
            if key in kwargs:
                statement = kwargs[key]
                break
    if len(args) > 1:
        params = args[1]
    else:
        for key in _PARAMS_KEYS:
            if key in kwargs:
                params = kwargs[key]
                break
    return statement, params


def _report_call(
    method: Any, cursor: Any, many: bool, repo: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``method(*args, **kwargs)`` reported as one query; rows counted on ``cursor`` (None:
    on what the call returns)."""
    if not _db.capturing():
        return method(*args, **kwargs)
    try:
        statement, params = _split(args, kwargs)
    except Exception as exc:  # a hostile kwargs mapping cannot stop the query
        count_error(exc)
        statement = params = None
    query = _db.start_query(statement, params, many, repo)
    if query is None:
        return method(*args, **kwargs)
    try:
        result = method(*args, **kwargs)
    except BaseException as exc:
        _db.fail_query(query, exc)
        raise
    _db.finish_query(query, _db.rowcount_of(result if cursor is None else cursor))
    return result


class Cursor:
    """A DB-API cursor that reports its executes; everything else is the driver's cursor."""

    __slots__ = ("__wrapped__", "_tidescope_connection", "_tidescope_repo")

    __wrapped__: Any
    _tidescope_connection: Connection
    _tidescope_repo: str

    def __init__(self, cursor: Any, connection: Connection) -> None:
        object.__setattr__(self, "__wrapped__", cursor)
        object.__setattr__(self, "_tidescope_connection", connection)
        object.__setattr__(self, "_tidescope_repo", connection._tidescope_repo)

    def _same(self, result: Any) -> Any:
        # drivers return the cursor itself from execute() for chaining: hand back the proxy
        return self if result is self.__wrapped__ else result

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's ``execute``, reported."""
        raw = self.__wrapped__
        if _db.capturing():
            result = _report_call(raw.execute, raw, False, self._tidescope_repo, args, kwargs)
        else:  # the common case in production, kept to one check
            result = raw.execute(*args, **kwargs)
        return self if result is raw else result

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's ``executemany``, reported as one query with every parameter set."""
        raw = self.__wrapped__
        return self._same(
            _report_call(raw.executemany, raw, True, self._tidescope_repo, args, kwargs)
        )

    def executescript(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's ``executescript`` (sqlite3), reported as one query."""
        raw = self.__wrapped__
        return self._same(
            _report_call(raw.executescript, raw, False, self._tidescope_repo, args, kwargs)
        )

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's ``callproc``, reported with the procedure name as the statement."""
        raw = self.__wrapped__
        return self._same(
            _report_call(raw.callproc, raw, False, self._tidescope_repo, args, kwargs)
        )

    def fetchone(self) -> Any:
        """The driver's ``fetchone``."""
        return self.__wrapped__.fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        """The driver's ``fetchmany``."""
        return self.__wrapped__.fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        """The driver's ``fetchall``."""
        return self.__wrapped__.fetchall()

    def close(self) -> Any:
        """The driver's ``close``."""
        return self.__wrapped__.close()

    @property
    def connection(self) -> Connection:
        """The connection proxy this cursor came from."""
        return self._tidescope_connection

    def __iter__(self) -> Iterator[Any]:
        return iter(self.__wrapped__)

    def __next__(self) -> Any:
        return next(self.__wrapped__)

    def __enter__(self) -> Any:
        raw = self.__wrapped__
        if hasattr(type(raw), "__enter__"):
            return self._same(raw.__enter__())
        return self  # sqlite3's cursor is no context manager: ours closes it on exit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        raw = self.__wrapped__
        if hasattr(type(raw), "__exit__"):
            return raw.__exit__(exc_type, exc, tb)
        raw.close()
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__wrapped__, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return f"<tidescope.integrations.dbapi.Cursor of {self.__wrapped__!r}>"


class Connection:
    """A DB-API connection whose cursors, and its own ``execute`` shortcuts, report queries."""

    __slots__ = ("__weakref__", "__wrapped__", "_tidescope_repo")

    __wrapped__: Any
    _tidescope_repo: str

    def __init__(self, connection: Any, repo: str) -> None:
        object.__setattr__(self, "__wrapped__", connection)
        object.__setattr__(self, "_tidescope_repo", repo)

    @property
    def repo(self) -> str:
        """The name query events give this database (``"sqlite:shop.db"``)."""
        return self._tidescope_repo

    def cursor(self, *args: Any, **kwargs: Any) -> Cursor:
        """The driver's ``cursor(...)``, as a reporting :class:`Cursor`."""
        return Cursor(self.__wrapped__.cursor(*args, **kwargs), self)

    def _shortcut(
        self, name: str, many: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Cursor:
        method = getattr(self.__wrapped__, name)
        result = _report_call(method, None, many, self._tidescope_repo, args, kwargs)
        return Cursor(result, self)

    def execute(self, *args: Any, **kwargs: Any) -> Cursor:
        """The driver's ``connection.execute`` shortcut, reported; returns a :class:`Cursor`."""
        return self._shortcut("execute", False, args, kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Cursor:
        """The driver's ``connection.executemany`` shortcut (sqlite3), reported."""
        return self._shortcut("executemany", True, args, kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> Cursor:
        """The driver's ``connection.executescript`` shortcut (sqlite3), reported."""
        return self._shortcut("executescript", False, args, kwargs)

    def commit(self) -> Any:
        """The driver's ``commit``."""
        return self.__wrapped__.commit()

    def rollback(self) -> Any:
        """The driver's ``rollback``."""
        return self.__wrapped__.rollback()

    def close(self) -> Any:
        """The driver's ``close``."""
        return self.__wrapped__.close()

    def __enter__(self) -> Any:
        raw = self.__wrapped__
        result = raw.__enter__()
        return self if result is raw else result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        return self.__wrapped__.__exit__(exc_type, exc, tb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__wrapped__, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        repo, raw = self._tidescope_repo, self.__wrapped__
        return f"<tidescope.integrations.dbapi.Connection {repo} of {raw!r}>"


def _driver_of(connection: Any) -> str:
    return type(connection).__module__.partition(".")[0]


def _database_of(connection: Any, driver: str) -> Any:
    """The database name a connection knows without a query (psycopg's ``info.dbname``)."""
    try:
        if driver in ("psycopg", "psycopg2"):
            info = getattr(connection, "info", None)
            return getattr(info, "dbname", None)
    except Exception as exc:
        count_error(exc)
    return None


def wrap_connection(connection: Any, *, repo: str | None = None) -> Connection:
    """A proxy of ``connection`` whose executes are reported as queries.

    Args:
        connection: an open DB-API 2 connection (``sqlite3``, ``psycopg``, ...). A proxy
            passed again is returned as it is.
        repo: the name events give the database; default ``"<dialect>:<database>"`` when
            the connection tells its database (psycopg does, sqlite3 does not: use
            :func:`connect`, or pass it).

    Raises:
        TypeError: ``connection`` is None or an asyncio connection (its ``execute`` is a
            coroutine function): the proxies are for synchronous DB-API drivers.
    """
    if type(connection) is Connection:
        return connection
    if connection is None:
        raise TypeError("wrap_connection() takes an open DB-API connection, got None")
    if inspect.iscoroutinefunction(getattr(type(connection), "execute", None)):
        raise TypeError(
            f"wrap_connection() takes a synchronous DB-API connection; "
            f"{type(connection).__name__}.execute is a coroutine function"
        )
    if repo is None:
        driver = _driver_of(connection)
        repo = _db.repo_name(_DIALECTS.get(driver, driver), _database_of(connection, driver))
    return Connection(connection, repo)


def connect(module: ModuleType | str, /, *args: Any, **kwargs: Any) -> Connection:
    """``module.connect(*args, **kwargs)``, wrapped by :func:`wrap_connection`.

    ``module`` is the driver module or its name (``sqlite3``, ``"psycopg"``). For sqlite3
    the repo names the database file (``"sqlite:shop.db"``, ``"sqlite::memory:"``).
    """
    mod = importlib.import_module(module) if isinstance(module, str) else module
    connection = mod.connect(*args, **kwargs)
    database = None
    driver = mod.__name__.partition(".")[0]
    if _DIALECTS.get(driver) == "sqlite":
        database = args[0] if args else kwargs.get("database")
    if database is None:
        return wrap_connection(connection)
    return wrap_connection(connection, repo=_db.repo_name(_DIALECTS.get(driver, driver), database))
