"""A database parameter whose code must never run when it is recorded (shared by the
SQLAlchemy and DB-API tests)."""

from __future__ import annotations

from typing import Any


class Hostile:
    """A parameter the drivers accept (sqlite3 ``__conform__``, a psycopg dumper the test
    registers) whose every other hook raises."""

    def __init__(self) -> None:
        self.state = "kept"

    def __conform__(self, protocol: Any) -> Any:
        return 99

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name}")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")
