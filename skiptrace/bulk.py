"""Plain ``executemany`` inserts for the intake hot path.

``QuerySet.bulk_create`` spends most of its time preparing each value through the field API
(about 20 µs per cell): for a 100,000-row CSV that is longer than reading, normalizing and
writing together. Here each column's adapter is looked up once and rows go to the driver as
tuples. Only for models whose fields are plain values (text, numbers, booleans, datetimes, FK
ids); the output is the same rows ``bulk_create`` would write.
"""

from __future__ import annotations

import logging
import operator
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from django.db import DatabaseError, connection, models, transaction
from psycopg.pq import TransactionStatus

log = logging.getLogger("convexa.db")

COPY_UPSERT_MIN_ROWS = 200

_pending = threading.local()  # the writes of an open ``together()`` block, per thread


@contextmanager
def together(*, until_commit: bool = False) -> Iterator[None]:
    """PostgreSQL: the bulk writes made inside the block (``insert_rows``, ``update_rows``,
    ``delete_rows``) go to the server as **one statement** when the block ends, each a
    data-modifying ``WITH`` part: one round trip where each was one (a COPY two). Recording a
    provider answer wrote nine statements in eleven round trips; with PostgreSQL 10 ms away that
    was a quarter of a batch's time on its pooled connection.

    ``until_commit``: inside ``atomic_commit()`` the statement waits for that block's COMMIT and
    goes with it, in one round trip (elsewhere: as without it).

    What that changes, and why it is safe where it is used: the parts run on one snapshot, so none
    sees another's rows (a delete of a lead's old phones and the insert of its new ones in one
    statement delete only the old ones, as in sequence); constraints and the ``provider_calls``
    triggers run at the end of the statement, after all parts. A block must not read what it
    writes (ORM queries inside it run at once, before the held writes), and a block that would
    update one table twice runs its writes one by one, in order (one statement cannot update a row
    twice). On an error nothing is sent. SQLite, or no block open: each write runs at once."""
    if connection.vendor != "postgresql" or getattr(_pending, "parts", None) is not None:
        yield  # SQLite (in-process, no round trips), or nested: the outer block sends them
        return
    _pending.parts = []
    try:
        yield
        parts, _pending.parts = _pending.parts, None
        tail = getattr(_pending, "tail", None)
        if until_commit and tail is not None:
            tail.extend(parts)
        else:
            _send_together(parts)
    finally:
        _pending.parts = None


@contextmanager
def atomic_commit(*, lazy: bool = False) -> Iterator[None]:
    """A transaction whose ``together(until_commit=True)`` writes go to the server with its COMMIT,
    in one round trip (psycopg's pipeline mode), where the statement and COMMIT took two.

    ``lazy`` (for a block that only holds writes, like the recording of an answer): the transaction
    opens at the first statement run inside the block, if any; a block that only held writes sends
    BEGIN, them and COMMIT at its end, in one round trip where the three took three. A block with
    ``select_for_update`` or an inner ``atomic()`` before its first statement must not be lazy (an
    inner block that finds no transaction open is its own, and is refused here).

    Only where it is the outermost block on PostgreSQL; nested (a caller's transaction, a test's),
    or on SQLite, it is ``transaction.atomic()``. A statement or a COMMIT that fails rolls
    everything back and raises Django's error, as from any query."""
    if connection.vendor != "postgresql" or connection.in_atomic_block or getattr(_pending, "tail", None) is not None:
        with transaction.atomic():
            yield
        return
    if not lazy:
        with transaction.atomic():
            _pending.tail = []
            try:
                yield
                tail, _pending.tail = _pending.tail, None
                _send_together(tail, commit=True)
            finally:
                _pending.tail = None
        return
    atomic = transaction.atomic()
    opened = False

    def open_first(execute, sql, params, many, context):
        nonlocal opened
        if not opened:
            if connection.in_atomic_block:  # an inner atomic() came first and is a transaction of its own
                raise RuntimeError("a statement ran in an inner atomic() before bulk.atomic_commit(lazy=True) "
                                   "opened its transaction; make that block not lazy")
            atomic.__enter__()
            opened = True
        return execute(sql, params, many, context)

    _pending.tail = []
    try:
        with connection.execute_wrapper(open_first):
            yield
        tail, _pending.tail = _pending.tail, None
        if tail:
            _send_together(tail, commit=True, begin=not opened)
    except BaseException as exc:
        _pending.tail = None
        if opened:
            opened = False
            atomic.__exit__(type(exc), exc, exc.__traceback__)  # rolls back
        raise
    else:
        if opened:
            atomic.__exit__(None, None, None)
    finally:
        _pending.tail = None


def _hold(sql: str, params: list, *, updates: str | None = None) -> bool:
    """Inside ``together()``: keep the write for the block's statement (True). ``updates``: the
    table an UPDATE writes (two of one table cannot share a statement)."""
    parts = getattr(_pending, "parts", None)
    if parts is None:
        return False
    parts.append((sql, params, updates))
    return True


def commit_is_held() -> bool:
    """True inside the outermost ``atomic_commit()`` block on PostgreSQL: its COMMIT is this
    block's, at its end (what a check deferred to the COMMIT needs)."""
    return getattr(_pending, "tail", None) is not None


def _send_together(parts: list[tuple[str, list, str | None]], *, commit: bool = False, begin: bool = False) -> None:
    """The held writes as one statement (in turn when one table is updated twice); ``commit``:
    followed by COMMIT in the same round trip (the transaction is over when this returns; Django's
    own COMMIT after it finds nothing to do); ``begin``: on a connection in autocommit, preceded by
    BEGIN in the same round trip."""
    if not parts:
        return
    updated = [table for _, _, table in parts if table is not None]
    if len(parts) == 1 or len(updated) != len(set(updated)):
        statements = parts
    else:
        head = ", ".join(f"w{n} AS ({sql})" for n, (sql, _, _) in enumerate(parts[:-1]))
        statements = [(f"WITH {head} {parts[-1][0]}", [p for _, params, _ in parts for p in params], None)]
    with binding_cursor() as cursor:
        if not commit:
            for sql, params, _ in statements:
                cursor.execute(sql, params)
            return
        raw = connection.connection
        try:
            with connection.wrap_database_errors, raw.pipeline():
                if begin:  # autocommit: BEGIN goes in the pipeline too (psycopg's own BEGIN waits for its answer)
                    cursor.execute("BEGIN")
                for sql, params, _ in statements:
                    cursor.execute(sql, params)
                cursor.execute("COMMIT")
        except BaseException:
            if begin and raw.info.transaction_status != TransactionStatus.IDLE:
                raw.execute("ROLLBACK")  # a statement failed: COMMIT was skipped, the transaction is aborted
            raise


def _adapter(field: models.Field) -> Callable[[Any], Any] | None:
    """How a value of this column goes to the driver; None when it goes as it is."""
    if isinstance(field, models.DateTimeField):
        return lambda v: None if v is None else connection.ops.adapt_datetimefield_value(v)
    if isinstance(field, models.DateField):
        return lambda v: None if v is None else connection.ops.adapt_datefield_value(v)
    return None


def _rows(objs: Sequence[Any], fields: Sequence[models.Field], extra: Callable[[Any], tuple] | None = None) -> list[tuple]:
    """Value tuples in column order: a C-level attrgetter, then only the columns that need adapting."""
    get = operator.attrgetter(*[f.attname for f in fields])
    adapt = [(n, a) for n, a in enumerate(_adapter(f) for f in fields) if a is not None]
    adapted: dict[Any, Any] = {}  # a batch shares a few timestamps ("now"): adapt each once
    rows = []
    for obj in objs:
        values = get(obj)
        row = list(values) if len(fields) > 1 else [values]
        for n, a in adapt:
            value = row[n]
            if value not in adapted:
                adapted[value] = a(value)
            row[n] = adapted[value]
        rows.append(tuple(row) + (extra(obj) if extra else ()))
    return rows


def insert_rows(
    model: type[models.Model],
    objs: Sequence[models.Model],
    *,
    conflict: Sequence[str] = (),
    update_fields: Sequence[str] = (),
    returning: Sequence[str] = (),
    setting: tuple[str, str] | None = None,
) -> list[tuple] | None:
    """INSERT the objects (primary keys generated by the database when unset).

    With ``conflict`` and ``update_fields``: ``ON CONFLICT (...) DO UPDATE SET`` those fields
    (SQLite >= 3.24 and PostgreSQL share the syntax).

    ``returning`` (PostgreSQL, with ``conflict``): these columns of the rows written, as tuples,
    in the same statement; None where it is not supported (SQLite): the caller reads them back.

    ``setting`` (PostgreSQL, with ``conflict``): ``(name, value)`` set for the transaction
    (``set_config(..., true)``) by the same statement, before its first row is written (what a
    trigger on these rows reads); not held.
    """
    if not objs:
        return [] if returning and connection.vendor == "postgresql" and conflict else None
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, models.AutoField))]
    by_name = {f.name: f for f in model._meta.concrete_fields}
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    on_conflict = ""
    if conflict:
        target = ", ".join(quote(by_name[name].column) for name in conflict)
        sets = ", ".join(f"{quote(by_name[n].column)} = excluded.{quote(by_name[n].column)}" for n in update_fields)
        on_conflict = f" ON CONFLICT ({target}) DO UPDATE SET {sets}" if sets else f" ON CONFLICT ({target}) DO NOTHING"
    rows = _rows(objs, fields)
    table = quote(model._meta.db_table)
    row_by_row = f"INSERT INTO {table} ({columns}) VALUES {placeholders}{on_conflict}"
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":  # SQLite: executemany runs in-process, no round trips
            cursor.executemany(row_by_row, rows)
            return
        # PostgreSQL: executemany costs the server one statement per row (a 100,000-row intake took
        # ~13 s; multi-row VALUES was slower still). COPY streams the rows in one statement; an
        # upsert of many rows goes through COPY into a temporary table, then one INSERT ... SELECT.
        # Inside together() every write is held, whatever its size: one run at once (a COPY of a
        # batch's 200+ phones) would land before the block's held delete of the old ones, and go.
        held = getattr(_pending, "parts", None) is not None
        if held and (returning or setting):
            raise RuntimeError("insert_rows(returning=, setting=) cannot be held in bulk.together()")
        if setting is not None and not conflict:
            raise ValueError("insert_rows(setting=...) needs conflict=")
        # in the WHERE: evaluated for each row before it is written (the first one included)
        also, also_params = (" WHERE set_config(%s, %s, true) IS NOT NULL", list(setting)) if setting else ("", [])
        if not conflict and not held:
            _copy(cursor, table, columns, rows)
            return None
        ret = (" RETURNING " + ", ".join(quote(by_name[n].column) for n in returning)) if returning else ""
        if conflict and update_fields:  # later row wins, as row by row (one statement cannot update a row twice)
            at = [fields.index(by_name[name]) for name in conflict]
            rows = list({tuple(row[i] for i in at): row for row in rows}.values())
        if held:  # inside together(): one part of the block's statement
            _hold(f"INSERT INTO {table} ({columns}) SELECT * FROM {_unnest(fields)}{on_conflict}",
                  _columns_of(rows, len(fields)))
            return None
        if len(rows) < COPY_UPSERT_MIN_ROWS:
            # One statement for the batch: the columns as arrays, unnested back into rows. Row by row
            # (executemany) the server parsed and ran one INSERT per row: 100 a provider batch.
            with binding_cursor() as binding:
                binding.execute(f"INSERT INTO {table} ({columns}) SELECT v.* FROM {_unnest(fields)}{also}{on_conflict}{ret}",
                                _columns_of(rows, len(fields)) + also_params)
                return [tuple(r) for r in binding.fetchall()] if ret else None
        else:
            staging = quote(f"_staging_{model._meta.db_table}")
            with transaction.atomic(savepoint=False):  # no SAVEPOINT/RELEASE round trips inside a batch
                cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
                               f"SELECT {columns} FROM {table} WITH NO DATA")
                cursor.execute(f"TRUNCATE {staging}")
                _copy(cursor, staging, columns, rows)
                cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}{also}{on_conflict}{ret}",
                               also_params or None)
                return [tuple(r) for r in cursor.fetchall()] if ret else None


def _copy(cursor: Any, table: str, columns: str, rows: Sequence[tuple]) -> None:
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # psycopg 3
        for row in rows:
            copy.write_row(row)


def update_rows(model: type[models.Model], objs: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Set ``fields`` of each object by its primary key: on PostgreSQL one ``UPDATE … FROM
    unnest(…)`` statement, on SQLite ``UPDATE … WHERE pk = %s`` in one ``executemany``.

    What ``QuerySet.bulk_update`` does, without its per-object ``CASE WHEN`` expression tree
    (measured: 168 ms vs 3 ms for 100 items x 7 fields).
    """
    if not objs:
        return
    meta = model._meta
    by_name = {f.name: f for f in meta.concrete_fields}
    targets = [by_name[name] for name in fields]
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(f.column)} = %s" for f in targets)
    sql = f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {quote(meta.pk.column)} = %s"
    pk = operator.attrgetter(meta.pk.attname)  # works for plain rows (row_factory) too
    rows = _rows(objs, targets, extra=lambda obj: (pk(obj),))
    if connection.vendor != "postgresql":  # SQLite: executemany runs in-process, no round trips
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        return
    # PostgreSQL: one UPDATE ... FROM the columns as arrays, where executemany made the server
    # parse and run one UPDATE per object (and psycopg build each of them).
    rows = list({row[-1]: row for row in rows}.values())  # one object twice: the later wins, as row by row
    names = [f"c{n}" for n in range(len(targets))] + ["pk"]
    sets = ", ".join(f"{quote(f.column)} = v.c{n}" for n, f in enumerate(targets))
    sql = (f"UPDATE {quote(meta.db_table)} AS t SET {sets} FROM {_unnest([*targets, meta.pk], names)} "
           f"WHERE t.{quote(meta.pk.column)} = v.pk")
    params = _columns_of(rows, len(targets) + 1)
    if _hold(sql, params, updates=meta.db_table):
        return
    with binding_cursor() as cursor:
        cursor.execute(sql, params)


def delete_rows(model: type[models.Model], field: str, values: Sequence[Any]) -> None:
    """``DELETE FROM`` the rows whose ``field`` is one of ``values``: inside ``together()`` a part
    of the block's statement, else at once (what ``filter(field__in=values).delete()`` does for a
    model nothing cascades from)."""
    if not values:
        return
    if connection.vendor != "postgresql":
        model._base_manager.filter(**{f"{field}__in": list(values)}).delete()
        return
    target = model._meta.get_field(field)
    column = connection.ops.quote_name(target.column)
    sql = f"DELETE FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {column} = ANY(%b::{_column_type(target)}[])"
    params = [list(values)]
    if _hold(sql, params):
        return
    with binding_cursor() as cursor:
        cursor.execute(sql, params)


@contextmanager
def binding_cursor() -> Iterator[Any]:
    """PostgreSQL: a cursor that sends its parameters apart from the statement (server-side
    binding), through Django's wrappers (query log, ``execute_wrapper``), on the same connection
    and transaction. Django's own cursors bind on the client: every value is quoted into the SQL
    text, and an array of answer bodies became a long, backslash-escaped literal the server
    parsed again (12 ms for 100 bodies of 600 bytes, against 0.8 ms sent as a binary array)."""
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    with connection._prepare_cursor(ServerBindingCursor(connection.connection)) as cursor:
        yield cursor


def _unnest(fields: Sequence[models.Field], names: Sequence[str] | None = None) -> str:
    """``unnest(%b::type[], ...) AS v(...)``: one array parameter a column (sent in binary), typed
    as the column without its length, so that a value too long fails as it would row by row
    (an explicit ``::varchar(n)`` cast would cut it)."""
    arrays = ", ".join(f"%b::{_column_type(f)}[]" for f in fields)
    alias = f" AS v({', '.join(names)})" if names else " AS v"
    return f"unnest({arrays}){alias}"


def _column_type(field: models.Field) -> str:
    if field.primary_key and isinstance(field, models.AutoField):
        kind = field.rel_db_type(connection)  # "bigint", not the identity column's definition
    elif field.is_relation:
        kind = field.target_field.rel_db_type(connection)
    else:
        kind = field.db_type(connection)
    return re.sub(r"\(.*\)", "", kind)  # varchar(32) -> varchar


def _columns_of(rows: Sequence[tuple], width: int) -> list[list]:
    """Rows to columns: the parameters of ``_unnest``."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def row_factory(model: type[models.Model]) -> Callable[..., SimpleNamespace]:
    """A maker of plain rows for ``insert_rows``: every column's default, then the given values
    (by attname, e.g. ``run_id``). Skips ``Model.__init__`` (about 60 µs an object) on the intake
    hot path."""
    defaults = {
        f.attname: f.get_default()
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, models.AutoField))
    }

    def make(**values: Any) -> SimpleNamespace:
        row = dict(defaults)
        row.update(values)
        return SimpleNamespace(**row)

    return make


ANALYZE_AFTER_ROWS = 5000


def analyze_after_bulk(model: type[models.Model], rows: int) -> None:
    """PostgreSQL: refresh the planner's statistics of ``model``'s table after a bulk insert of
    ``rows``. Until autovacuum gets to it, the planner believes the queue is a few rows and sorts the
    whole of it on every claim (56 ms a claim with 100,000 items queued, against 1.9 ms with fresh
    statistics: the claim then walks the primary key and stops after its batch)."""
    if rows < ANALYZE_AFTER_ROWS or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


# The table whose stale statistics cost the money path (the signatures' calls), and how much of
# it may change before they are refreshed (autovacuum's default analyze threshold is 10 % + 50
# rows). Not the queue, the cache or the leads: their statistics are the intake's (``ANALYZE``
# after a bulk insert), and refreshed in the middle of a run they turned the cached sweep's plan
# slower (a cached 100,000-lead re-run after two runs: 5,437 leads/s with, 8,861 without).
STATISTICS_TABLES = ("provider_calls",)
STALE_FRACTION = 0.2
STALE_MIN_ROWS = 1000


def statistics_refresh() -> list[str]:
    """PostgreSQL housekeeping: ``ANALYZE`` ``STATISTICS_TABLES`` whose statistics are stale (more
    than ``STALE_FRACTION`` of their rows, and ``STALE_MIN_ROWS``, changed since the last one).
    Returns the tables analyzed.

    Autovacuum does this on its own; where it is off or behind (a first big run on a new
    database), the planner read a growing table with the statistics of an empty one: the calls of
    100 signatures were estimated at half of ``provider_calls``, which bought a parallel scan and
    then a 35 ms JIT compilation of a 1 ms query on every batch. With statistics, that estimate is
    one row a signature."""
    if connection.vendor != "postgresql":
        return []
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
                "WHERE s.schemaname = current_schema() AND s.relname = ANY(%s) "
                "AND s.n_mod_since_analyze > GREATEST(%s, %s * GREATEST(c.reltuples, 0))",
                [list(STATISTICS_TABLES), STALE_MIN_ROWS, STALE_FRACTION],
            )
            stale = [row[0] for row in cursor.fetchall()]
            for table in stale:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    except DatabaseError as exc:  # best effort (e.g. not the tables' owner): plans are slower, not wrong
        log.warning("could not refresh planner statistics (%s)", exc.__class__.__name__)
        return []
    return stale
