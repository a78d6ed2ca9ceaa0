"""A short path from a prebuilt Core statement to the DBAPI cursor, for the repository's hot loop.

`conn.execute(stmt, params)` spends 25-40 µs per statement in SQLAlchemy's execution layer
(execution context, parameter construction, result metadata, events), several times what
`sqlite3` needs to run the statement. The repository's statements are module-level constants
executed with parameter dicts, so that work can be done once: `_plan` compiles a statement once
per dialect and set of parameter keys, with SQLAlchemy's own compiler and bind processors, and
`execute` / `executemany` / `fetch` then only build the driver's parameters and call the cursor
of the same connection (one cursor per DBAPI connection, reused), in the same transaction.

What the driver receives is exactly what `conn.execute` would hand it: the same SQL text (the
dialect's compiler, bind casts on PostgreSQL included), the same parameters after the same bind
processors (`UTCDateTime`, `JSON`/`JSONB`, `Boolean`; where SQLAlchemy's JSON processor is plain
`json.dumps`, as on SQLite, the same serialisation inlined: `_json_bind_processor`), one row as
a plain execute and more as the driver's `executemany`; rows come back through the same result
processors, as dicts keyed like `.mappings()` (or lists: `fetch_values`). Row counts are the
cursor's (the `WHERE version = ?` checks).
`tests/integration/test_store_fastpath.py` runs lifecycles both ways and compares every driver
call and every stored row. The rest of SQLAlchemy's contract is kept where something can depend
on it:

* a connection that is not in a transaction begins one first, as `conn.execute` would;
* `before_cursor_execute` / `after_cursor_execute` listeners are called with the driver-level
  statement and parameters (`context` is None), so recorders and statement counters see every
  statement (`bench/lifecycle.py` records its ceiling this way);
* a driver or bind-processor error goes through the connection's own error handling, so callers
  get the same `sqlalchemy.exc` exceptions (`IntegrityError`, `StatementError`, ...) and a
  disconnect invalidates the connection as usual.

A statement the plan cannot do takes `conn.execute` instead (decided once per plan): IN-list
("expanding") and literal-execute parameters, callable or Python-side column defaults, DML with
RETURNING, paramstyles other than qmark/format/named/pyformat, and connections with `echo` on.

Using it from a new repository method: build the statement once at module level, with
`bindparam("b_...")` for the WHERE values and the parameter keys for the columns, and call
`execute(self.conn, STMT, {...})` (returns the row count), `executemany(self.conn, STMT, rows)`,
`fetch(self.conn, STMT, {...})` (dicts) or `fetch_values(self.conn, STMT, {...})` (lists, read by
position: `positions(STMT)`; cheaper for wide rows). Statements built per call
(`where(col == value)`) belong on `conn.execute`: here each would be a new plan (the cache is
emptied when it grows past _MAX_PLANS, so that is slow, not a leak).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from json import encoder as _json_encoder
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement, Null

Params = Mapping[str, Any]
Processor = Callable[[Any], Any] | None
_POSITIONAL = {"qmark", "format"}
_NAMED = {"named", "pyformat"}


class _Plan:
    """One statement compiled for one dialect and one set of parameter keys."""

    __slots__ = (
        "parameters",
        "result_keys",
        "result_procs",
        "result_types",
        "sql",
    )

    def __init__(self, sql: str, positional: bool,
                 binds: list[tuple[str, str | None, Processor, Any]],
                 result: list[tuple[str, Any]] | None) -> None:
        self.sql = sql
        # binds: (driver-level name, parameter key or None for a constant, bind processor,
        # constant), in the statement's order
        self.parameters: Callable[[Params], Any] = _parameters_function(binds, positional)
        """Driver-level parameters from one parameter dict: a tuple (qmark/format) or a dict
        (named/pyformat)."""
        self.result_keys = tuple(k for k, _ in result) if result is not None else None
        self.result_types = [ty for _, ty in result] if result is not None else None
        self.result_procs: list[tuple[int, Callable[[Any], Any]]] | None = None


def _parameters_function(binds: list[tuple[str, str | None, Processor, Any]],
                         positional: bool) -> Callable[[Params], Any]:
    """The plan's parameter builder as one generated function: a tuple or dict display of
    `p[key]` (through its bind processor where the column has one) and constants, so a
    statement's parameters cost one call instead of a loop over columns and processors. A
    missing key raises KeyError, as a dict lookup does."""
    namespace: dict[str, Any] = {}
    items = []
    for i, (name, key, proc, const) in enumerate(binds):
        if key is None:
            namespace[f"c{i}"] = const
            value = f"c{i}"
        elif proc is None:
            value = f"p[{key!r}]"
        else:
            namespace[f"f{i}"] = proc
            value = f"f{i}(p[{key!r}])"
        items.append(value if positional else f"{name!r}: {value}")
    display = f"({', '.join(items)}{',' if len(items) == 1 else ''})" if positional \
        else f"{{{', '.join(items)}}}"
    exec(compile(f"def parameters(p):\n    return {display}\n", "<fastsql parameters>",
                 "exec"), namespace)
    fn: Callable[[Params], Any] = namespace["parameters"]
    return fn


# Per dialect: (statement, parameter keys) -> plan, or None for the ordinary path. Keyed by
# id(dialect) with a weak reference beside it (a WeakKeyDictionary lookup costs twice as much);
# the entry goes when its dialect does.
_MAX_PLANS = 1000
_plans: dict[int, tuple[weakref.ref[Dialect], dict[tuple[Any, ...], _Plan | None]]] = {}


def _plan_for(conn: Connection, stmt: Executable, keys: tuple[str, ...]) -> _Plan | None:
    dialect = conn.dialect
    ident = id(dialect)
    entry = _plans.get(ident)
    if entry is None or entry[0]() is not dialect:

        def forget(_ref: weakref.ref[Dialect], gone: int = ident) -> None:
            _plans.pop(gone, None)

        entry = _plans[ident] = (weakref.ref(dialect, forget), {})
    cache = entry[1]
    try:
        plan = cache[(stmt, keys)]
    except KeyError:
        if len(cache) >= _MAX_PLANS:  # statements built per call: never keep them all
            cache.clear()
        plan = cache[(stmt, keys)] = _plan(dialect, stmt, keys)
    if plan is None or conn._echo:
        return None
    return plan


def _plan(dialect: Dialect, stmt: Executable, keys: tuple[str, ...]) -> _Plan | None:
    if dialect.paramstyle not in _POSITIONAL | _NAMED:
        return None
    assert isinstance(stmt, ClauseElement)
    compiled: Any = stmt.compile(dialect=dialect, column_keys=list(keys))
    if (compiled.literal_execute_params or compiled.post_compile_params
            or getattr(compiled, "insert_prefetch", None)
            or getattr(compiled, "update_prefetch", None)
            or ((compiled.isinsert or compiled.isupdate or compiled.isdelete)
                and (compiled.returning or compiled.implicit_returning))):
        return None
    positional = dialect.paramstyle in _POSITIONAL
    if positional != bool(compiled.positional):
        return None
    names = compiled.positiontup if positional else list(compiled.bind_names.values())
    escaped = compiled.escaped_bind_names or {}
    processors = compiled._bind_processors  # what SQLAlchemy applies itself
    binds: list[tuple[str, str | None, Processor, Any]] = []
    for name in names:
        bind = compiled.binds[name]
        proc = processors.get(name)
        if isinstance(proc, tuple) or bind.expanding or bind.callable is not None:
            return None
        if proc is not None:
            proc = _json_bind_processor(dialect, bind.type) or proc
        if bind.key in keys:
            binds.append((escaped.get(name, name), bind.key, proc, None))
        elif name in keys:
            binds.append((escaped.get(name, name), name, proc, None))
        elif bind.required:
            return None  # let SQLAlchemy raise its "a value is required" error
        else:  # a literal in the statement (`kind == "outbound"`): processed once
            value = bind.effective_value
            binds.append((escaped.get(name, name), None, None,
                          proc(value) if proc is not None else value))
    result = None
    if compiled._result_columns:  # a SELECT (DML with RETURNING was ruled out above)
        result = [(rc.keyname, rc.type) for rc in compiled._result_columns]
    return _Plan(compiled.string, positional, binds, result)


# JSON columns where SQLAlchemy serialises with plain `json.dumps` (SQLite; psycopg adapts JSON
# itself): the same text from json's C encoder, made as `json.dumps` makes it, without the three
# Python calls around it (dumps -> encode -> iterencode) and SQLAlchemy's wrapper; about half
# the cost of a small value, and a lifecycle binds some fifty. The encoder is built once,
# without json.dumps' circular-reference bookkeeping (its `markers` dict, which a shared encoder
# could not share between threads): the values bound are trees the repository builds, and a
# circular one would fail with RecursionError instead of ValueError, still before the driver.
_c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
_ascii = _json_encoder.encode_basestring_ascii
_dumps_default = json.JSONEncoder().default  # what json.dumps uses: raises TypeError
_encode = (_c_make_encoder(None, _dumps_default, _ascii, None, ": ", ", ", False, False, True)
           if _c_make_encoder is not None else None)


def _dumps(value: Any) -> str:
    """`json.dumps(value)` with json.dumps' defaults (the same text and errors, but see above
    for circular values)."""
    if isinstance(value, str):
        return _ascii(value)
    if value == [] and type(value) is list:  # most list columns, most of the time
        return "[]"
    assert _encode is not None
    return "".join(_encode(value, 0))


def _json_bind_processor(dialect: Dialect, type_: Any) -> Processor:
    """SQLAlchemy's JSON bind processor, as it would behave, when it would call `json.dumps`
    on the value and nothing else; otherwise None (keep SQLAlchemy's)."""
    if _c_make_encoder is None or getattr(dialect, "_json_serializer", None) is not None:
        return None
    impl = type_.dialect_impl(dialect)
    cls = type(impl)
    if (not isinstance(impl, sqltypes.JSON)
            or cls.bind_processor is not sqltypes.JSON.bind_processor
            or cls._make_bind_processor is not sqltypes.JSON._make_bind_processor
            or dialect.supports_native_json_serialization
            or impl._str_impl.bind_processor(dialect) is not None):
        return None
    null, none_as_null = impl.NULL, impl.none_as_null

    def process(value: Any) -> Any:  # sqltypes.JSON._make_bind_processor, json.dumps inlined
        if value is null:
            value = None
        elif isinstance(value, Null) or (value is None and none_as_null):
            return None
        return _dumps(value)

    return process


_CURSOR = "aftersales.fastsql.cursor"


def _cursor(conn: Connection) -> Any:
    """The DBAPI cursor of this connection, made once per DBAPI connection and reused (kept in
    the pool record's `info`, which the pool clears when it replaces the connection). Cheap on
    sqlite3, about 3 µs a statement on psycopg."""
    fairy = conn.connection
    dbapi_conn = fairy.dbapi_connection
    info = fairy.info
    kept = info.get(_CURSOR)
    if kept is None or kept[0] is not dbapi_conn:
        kept = info[_CURSOR] = (dbapi_conn, dbapi_conn.cursor())  # type: ignore[union-attr]
    return kept[1]


def _cursor_call(conn: Connection, plan: _Plan, params: Any, many: bool) -> Any:
    """Run the plan on the connection's DBAPI cursor; returns the cursor."""
    if not conn.in_transaction():
        conn.begin()  # what conn.execute's autobegin would do (`begin` events included)
    sql = plan.sql
    cursor = None
    driver_params: Any = None
    try:
        driver_params = ([plan.parameters(p) for p in params] if many
                         else plan.parameters(params))
        cursor = _cursor(conn)
        events = conn._has_events or conn.engine._has_events
        if events:
            before = conn.dispatch.before_cursor_execute
            if before:  # a listener may return a changed statement and parameters
                for fn in before:
                    sql, driver_params = fn(conn, cursor, sql, driver_params, None, many)
        if many:
            cursor.executemany(sql, driver_params)
        else:
            cursor.execute(sql, driver_params)
        if events:
            after = conn.dispatch.after_cursor_execute
            if after:
                after(conn, cursor, sql, driver_params, None, many)
    except BaseException as e:
        _failed(conn, e, sql, driver_params, cursor)
    return cursor


def _failed(conn: Connection, e: BaseException, sql: str, params: Any, cursor: Any) -> None:
    """SQLAlchemy's own handling: the same exception types, disconnects invalidate (it also
    closes the cursor, so a new one is made next time)."""
    if not conn.closed and not conn.invalidated:
        conn.connection.info.pop(_CURSOR, None)
    conn._handle_dbapi_exception(e, sql, params, cursor, None)


def execute(conn: Connection, stmt: Executable, params: Params) -> int:
    """Run a prebuilt INSERT/UPDATE/DELETE with one parameter dict; the affected row count."""
    plan = _plan_for(conn, stmt, tuple(params))
    if plan is None:
        return conn.execute(stmt, params).rowcount
    count: int = _cursor_call(conn, plan, params, False).rowcount
    return count


def executemany(conn: Connection, stmt: Executable, rows: Sequence[Params]) -> None:
    """Run a prebuilt INSERT/UPDATE/DELETE once per parameter dict (all with the same keys),
    as SQLAlchemy would: one row is a plain execute, more are the driver's `executemany`."""
    if not rows:
        return
    if len(rows) == 1:
        execute(conn, stmt, rows[0])
        return
    keys = tuple(rows[0])
    plan = _plan_for(conn, stmt, keys)
    if plan is None or any(tuple(r) != keys for r in rows):
        conn.execute(stmt, list(rows))
        return
    _cursor_call(conn, plan, rows, True)


def fetch(conn: Connection, stmt: Executable, params: Params | None = None
          ) -> list[dict[str, Any]]:
    """Rows of a prebuilt SELECT as dicts keyed like `conn.execute(...).mappings()`."""
    params = params or {}
    plan = _plan_for(conn, stmt, tuple(params))
    if plan is None or plan.result_keys is None:
        return [dict(r) for r in conn.execute(stmt, params).mappings()]
    raw, procs = _fetched(conn, plan, params)
    keys = plan.result_keys
    if not procs:
        return [dict(zip(keys, row, strict=True)) for row in raw]
    out = []
    for row in raw:
        values = list(row)
        for i, proc in procs:
            values[i] = proc(values[i])
        out.append(dict(zip(keys, values, strict=True)))
    return out


def fetch_values(conn: Connection, stmt: Executable, params: Params | None = None
                 ) -> list[list[Any]]:
    """Rows of a prebuilt SELECT as lists of values in the statement's column order (the
    values `fetch` would put in its dicts, without building them: for wide rows read by
    position, see `positions`)."""
    params = params or {}
    plan = _plan_for(conn, stmt, tuple(params))
    if plan is None or plan.result_keys is None:
        return [list(r) for r in conn.execute(stmt, params)]
    raw, procs = _fetched(conn, plan, params)
    if not procs:
        return [list(row) for row in raw]
    out = []
    for row in raw:
        values = list(row)
        for i, proc in procs:
            values[i] = proc(values[i])
        out.append(values)
    return out


def positions(stmt: Any) -> dict[str, int]:
    """Column key -> position in the rows `fetch_values` returns for this SELECT."""
    return {col.key: i for i, col in enumerate(stmt.selected_columns)}


def _fetched(conn: Connection, plan: _Plan, params: Params
             ) -> tuple[list[Any], list[tuple[int, Callable[[Any], Any]]]]:
    """Run a SELECT plan: the driver's rows and the result processors to apply to them."""
    cursor = _cursor_call(conn, plan, params, False)
    try:
        raw = cursor.fetchall()
        procs = plan.result_procs
        if procs is None:
            procs = plan.result_procs = _result_processors(conn.dialect, plan, cursor)
    except BaseException as e:
        _failed(conn, e, plan.sql, None, cursor)
    return raw, procs


def _result_processors(dialect: Dialect, plan: _Plan, cursor: Any
                       ) -> list[tuple[int, Callable[[Any], Any]]]:
    """The result processors SQLAlchemy would apply, by column position (the driver's type code
    is what SQLAlchemy passes too; it is the same for every execution of one statement)."""
    description = cursor.description
    assert plan.result_types is not None and len(description) == len(plan.result_types)
    out = []
    for i, (type_, col) in enumerate(zip(plan.result_types, description, strict=True)):
        proc = type_._cached_result_processor(dialect, col[1])
        if proc is not None:
            out.append((i, _json_result_processor(dialect, type_, col[1]) or proc))
    return out


# Reading JSON where SQLAlchemy would call plain `json.loads` (SQLite's JSON text): the same
# values from json's C scanner in one call, and no call at all for the empty lists most list
# columns hold; anything the scanner does not consume whole (whitespace around the value, bad
# text) goes to json.loads for its exact value or error. SQLite's processor also returns
# numbers stored in a JSON column as they are.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]


def _loads(value: Any) -> Any:
    if value is None:
        return None
    if value == "[]":
        return []
    if type(value) is str:
        try:
            obj, end = _scan_json(value, 0)
        except StopIteration:
            return json.loads(value)  # its JSONDecodeError
        return obj if end == len(value) else json.loads(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value  # as _SQliteJson's processor (a number json.loads refuses)
    return json.loads(value)


def _json_result_processor(dialect: Dialect, type_: Any, coltype: Any) -> Processor:
    """`_loads` where SQLAlchemy's own processor would be json.loads (see above); else None."""
    if dialect.name != "sqlite" or getattr(dialect, "_json_deserializer", None) is not None:
        return None
    impl = type_.dialect_impl(dialect)
    if (not isinstance(impl, sqltypes.JSON)
            or type(impl).result_processor.__qualname__ != "_SQliteJson.result_processor"
            or impl._str_impl.result_processor(dialect, coltype) is not None):
        return None
    return _loads
