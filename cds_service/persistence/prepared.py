"""A SQLAlchemy statement compiled once, then run on the driver with its own value processing.

Alert memory's lookup runs on every hook call that returns a warning or a suggestion. Measured on the
response path (benchmark case `memory`), SQLAlchemy's per-execution work around it — rendering the
expanding `IN` lists, processing the parameters, building the result metadata and the typed rows — took
about twice the CPU of the SQLite query itself. The statement does not change between calls, only the
number of values in its lists does; so it is compiled once per dialect and list lengths, and executed on
the driver cursor of the SQLAlchemy connection (its transaction; a driver error is raised as the
`DBAPIError` SQLAlchemy would raise). Values go through the column types' own bind and result processors,
taken once from the dialect through the public `TypeEngine` API, so what comes back is what
`Connection.execute` would have returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

#: Builds the statement for given list lengths, e.g. {"rules": 2, "fingerprints": 1}; each list value is
#: bound as `<name>_<i>` (i from 0).
Builder = Callable[[Mapping[str, int]], sa.Select[Any]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # parameter names in order (qmark / format styles), else None
    binds: Mapping[str, Callable[[Any], Any] | None]  # bind processor per parameter name
    construct: Callable[[Mapping[str, Any]], dict[str, Any]]  # given values + the statement's literals
    results: tuple[Callable[[Any], Any] | None, ...]  # result processor per selected column


class PreparedSelect:
    """One SELECT, compiled per (dialect, list lengths) on first use; thread-safe."""

    def __init__(self, build: Builder, lists: Sequence[str]) -> None:
        self._build = build
        self._lists = tuple(lists)
        self._compiled: dict[tuple[str, tuple[int, ...]], _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, dialect: Dialect, lengths: tuple[int, ...]) -> _Compiled:
        key = (dialect.name, lengths)
        found = self._compiled.get(key)
        if found is not None:
            return found
        stmt = self._build(dict(zip(self._lists, lengths, strict=True)))
        compiled = stmt.compile(dialect=dialect)
        binds = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }
        results = tuple(
            col.type.dialect_impl(dialect).result_processor(dialect, None) for col in stmt.selected_columns
        )
        positional = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        made = _Compiled(
            compiled.string, positional, binds, lambda given: dict(compiled.construct_params(given)), results
        )
        with self._lock:
            self._compiled.setdefault(key, made)
        return made

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with `params` (each list-valued name expanded); rows as tuples of processed values.

        On the driver's own cursor: even `exec_driver_sql` builds result metadata per call, which is half
        its cost here. Driver errors are wrapped as SQLAlchemy would (`DBAPIError`), so callers see one
        kind of database error whichever way a statement ran.
        """
        compiled, args = self._prepare(conn.dialect, params)
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(compiled.sql, args)
                found = cursor.fetchall()
            finally:
                cursor.close()
        except dbapi_error as exc:
            raise sa.exc.DBAPIError.instance(compiled.sql, args, exc, dbapi_error) from exc
        procs = compiled.results
        return [
            tuple(v if p is None or v is None else p(v) for p, v in zip(procs, row, strict=True))
            for row in found
        ]

    def driver_rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """As `rows`, the values as the driver returned them (what an EXPLAIN in a test reads)."""
        compiled, args = self._prepare(conn.dialect, params)
        return [tuple(row) for row in conn.exec_driver_sql(compiled.sql, args).all()]

    def _prepare(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        compiled = self._compile(dialect, tuple(len(params[name]) for name in self._lists))
        given: dict[str, Any] = {}
        for name, value in params.items():
            if name in self._lists:
                for i, item in enumerate(value):
                    given[f"{name}_{i}"] = item
            else:
                given[name] = value
        values = compiled.construct(given)  # with the statement's own literals (e.g. indicator = 'warning')
        for name, proc in compiled.binds.items():
            if proc is not None:
                values[name] = proc(values[name])
        if compiled.positional is not None:
            return compiled, tuple(values[name] for name in compiled.positional)
        return compiled, values
