"""Step 3, the reservation: cache again, single flight, the budget cut and the ``provider_calls``
rows (``reserved``), in one transaction committed before anything is sent.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError

from skiptrace import guards
from skiptrace.bulk import atomic_commit, commit_is_held, insert_rows, together, update_rows
from skiptrace.guards.budget import BudgetCaps, budget_caps, budget_cut, caps_of, run_cap_pause
from skiptrace.guards.locks import guard_row_exists
from skiptrace.models import (
    OPEN_CALL_STATES,
    UNKNOWN_OUTCOME_STATES,
    AttemptReason,
    BudgetSetting,
    CacheEntry,
    CallState,
    ProviderCall,
    Run,
    RunItem,
)
from skiptrace.money.cache import l1_misses, l2_query
from skiptrace.money.items import BatchOutcome, fail, requeue, serve_from_cache, serve_stale_or_wait
from skiptrace.money.policy import WAIT_FOR_OTHER_CALL_S, lease_seconds
from skiptrace.money.trail import log_call
from skiptrace.normalize import idempotency_key
from skiptrace.provider import PROVIDER, BatchDataClient, TraceRequest
from skiptrace.states import PROVIDER_WAIT_REASONS, WaitReason

log = logging.getLogger("convexa.service")

# The COMMIT-time budget check of a fast reservation (migration 0106): the transaction setting the
# calls' INSERT arms it with, and the SQLSTATE of a COMMIT it fails.
BUDGET_CHECK_SETTING = "convexa.budget_check"
BUDGET_CHECK_SQLSTATE = "CXB01"


@dataclass
class Reserved:
    """Calls reserved for one provider HTTP request, and the items each call serves."""

    batch_id: str
    calls: list[ProviderCall] = field(default_factory=list)
    requests: list[TraceRequest] = field(default_factory=list)
    served: dict[int, list[RunItem]] = field(default_factory=dict)  # call id -> items
    probe: bool = False  # the circuit breaker's half-open probe: sent even though the breaker is open
    logged: bool = True  # False: reserved by a transaction not yet committed when it was made
    reserved_at: float = field(default_factory=time.monotonic)  # the waits before the POST end by its lease


def batch_reserve(
    items: Sequence[RunItem], *, client: BatchDataClient, now: dt.datetime, outcome: BatchOutcome,
    worker_id: str = "local", provider_batch: int | None = None,
) -> Reserved | None:
    """Cache, single flight, budget and call rows, in one transaction.

    A reservation whose budget check at COMMIT failed (``reserve_within_budget``) wrote nothing:
    it is made again from the items as the database has them, the classic way (lock, cut)."""
    before = copy.deepcopy(outcome)
    try:
        reserved = _batch_reserve(items, client=client, now=now, outcome=outcome, worker_id=worker_id,
                                  provider_batch=provider_batch, fast=True)
        if reserved is not None and not reserved.logged:
            log_reserved(reserved)  # committed now
        return reserved
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != BUDGET_CHECK_SQLSTATE:
            raise
    log.info("reservation over today's cap at its commit: rolled back, the batch is cut to the budget instead")
    outcome.__dict__.update(before.__dict__)
    again = RunItem.objects.select_related("run").in_bulk([i.id for i in items])
    items = [again[i.id] for i in items if i.id in again]
    return _batch_reserve(items, client=client, now=now, outcome=outcome, worker_id=worker_id,
                          provider_batch=provider_batch, fast=False)


def _batch_reserve(
    items: Sequence[RunItem], *, client: BatchDataClient, now: dt.datetime, outcome: BatchOutcome,
    worker_id: str, provider_batch: int | None, fast: bool,
) -> Reserved | None:
    # PostgreSQL: the reads first, in one round trip before the transaction (READ COMMITTED: the
    # same rows in one or out of one); the items' last update goes to the server with the COMMIT
    pre = _reads_at_once(items, now=now, calls=provider_batch is None or len(items) <= provider_batch)
    with atomic_commit():
        pending = serve_from_cache(items, now=now, outcome=outcome, entries=pre.entries if pre else None)
        if not pending:
            return None
        if provider_batch is not None and len(pending) > provider_batch:
            # a big claim that the caches did not serve: one provider batch now, the rest to the queue
            requeue(pending[provider_batch:], now=now, delay_s=None, reason=None)
            outcome.put_back += len(pending) - provider_batch
            pending = pending[:provider_batch]
        if not client.configured:
            requeue(pending, now=now, delay_s=30, reason=WaitReason.PROVIDER_NOT_CONFIGURED)
            outcome.waiting += len(pending)
            return None
        seen_breaker, caps = pre.breaker_and_caps if pre else (None, None)
        breaker = guards.breaker_check(now, seen=seen_breaker)
        if not breaker.allowed:
            serve_stale_or_wait(pending, now=now, delay_s=breaker.retry_after, reason=WaitReason.CIRCUIT_OPEN,
                                 outcome=outcome)
            outcome.circuit_open = True
            return None
        waited = {i.run_id for i in pending if i.run.reason in PROVIDER_WAIT_REASONS}  # runs read at the claim
        if waited:
            Run.objects.filter(run_id__in=waited, reason__in=PROVIDER_WAIT_REASONS).update(reason=None)
        by_sig: dict[str, list[RunItem]] = defaultdict(list)
        for item in pending:
            by_sig[item.active_signature].append(item)
        calls_by_sig = calls_by_signature(list(by_sig), now=now, rows=pre.call_rows if pre else None)
        # On PostgreSQL (READ COMMITTED) another worker may have completed a call for one of these
        # signatures between the cache lookup above and that query: the call reads as final, not
        # open, and the signature would be paid for a second time. Its cache entry was committed
        # with it, so a second look at the cache now finds it.
        settled = [i for sig, state in calls_by_sig.items() if state.final_count and not state.open for i in by_sig[sig]]
        if settled:
            unserved = {id(i) for i in serve_from_cache(settled, now=now, outcome=outcome)}
            for sig in {i.active_signature for i in settled}:
                by_sig[sig] = [i for i in by_sig[sig] if id(i) in unserved]
                if not by_sig[sig]:
                    del by_sig[sig]
        to_call: list[str] = []
        for sig, sig_items in by_sig.items():
            state = calls_by_sig.get(sig)
            if state and state.open:
                requeue(sig_items, now=now, delay_s=WAIT_FOR_OTHER_CALL_S, reason=None)
                outcome.waiting += len(sig_items)
            elif state and state.lost_recently and not any(i.resend_allowed or i.run.policy_force for i in sig_items):
                got = ("an answer that could not be read" if state.lost_state == CallState.UNREADABLE
                       else "no answer")
                fail(sig_items, now=now, error=f"provider_outcome_unknown: an earlier request for this lead got {got}; "
                      "resume the run to send it again", call_id=state.lost_call_id)
                outcome.failed += len(sig_items)
            else:
                to_call.append(sig)
        if not to_call:
            return None
        quick = reserve_within_budget(to_call, by_sig, calls_by_sig, now=now, outcome=outcome,
                                      api=client.api_version, worker_id=worker_id, caps=caps) if fast else None
        if quick is not None:
            quick.probe = breaker.probe
            return quick
        # Budget: cut the batch to what the remaining budget pays at worst case (every record matched).
        override = [s for s in to_call if all(i.run.override_budget for i in by_sig[s])]
        capped = [s for s in to_call if s not in set(override)]
        # ... and to what each run's own cap (when set) pays: a call is charged to its first item's run
        cut = budget_cut([by_sig[s][0].run_id for s in capped], now=now)
        over = [capped[i] for i in cut.over_day]
        if over:
            over_items = [i for s in over for i in by_sig[s]]
            requeue(over_items, now=now, delay_s=None, reason=WaitReason.DAILY_BUDGET)
            Run.objects.filter(run_id__in={i.run_id for i in over_items}, override_budget=False).update(
                soft_paused=True, reason=WaitReason.DAILY_BUDGET
            )
            outcome.waiting += len(over_items)
            outcome.budget_paused = True
            log.warning("daily budget reached: %d leads wait for budget runs=%s", len(over_items),
                        ",".join(sorted({i.run_id for i in over_items})))
        run_over = [capped[i] for i in cut.over_run]
        if run_over:
            run_over_items = [i for s in run_over for i in by_sig[s]]
            requeue(run_over_items, now=now, delay_s=None, reason=None)
            run_cap_pause({by_sig[s][0].run_id for s in run_over})
            outcome.waiting += len(run_over_items)
            outcome.budget_paused = True
        chosen = override + [capped[i] for i in cut.fit]
        if not chosen:
            return None
        reserved = reserve_calls(chosen, by_sig, calls_by_sig, now=now, outcome=outcome, api=client.api_version,
                                  worker_id=worker_id)
        reserved.probe = breaker.probe
        return reserved


def reserve_within_budget(
    to_call: list[str], by_sig: dict[str, list[RunItem]], calls_by_sig: dict[str, SignatureCalls], *,
    now: dt.datetime, outcome: BatchOutcome, api: str, worker_id: str, caps: BudgetCaps | None = None,
) -> Reserved | None:
    """PostgreSQL, no per-run cap: reserve every call, and let PostgreSQL check today's total
    (these calls included) under the budget lock at the COMMIT (migration 0106's deferred trigger,
    armed by the INSERT of the calls). A total past the daily cap fails the COMMIT with
    ``BUDGET_CHECK_SQLSTATE``: nothing is written, and ``batch_reserve`` cuts the batch the classic
    way. Returns None where the classic cut must decide from the start (a per-run cap is set, no
    price, SQLite, or the COMMIT is not this reservation's own: a caller's transaction).

    Why: the classic order takes the lock, then reads the caps and the spend, inserts the calls,
    reads them back and points the items at them, all before the commit releases the lock, with
    the whole fleet's reservations queued behind it. With PostgreSQL 10 ms away that capped the
    fleet near 14 reservations (= provider requests) a second. A check after the inserts, as its
    own statement under a savepoint, still held the lock for the round trip of the COMMIT and cost
    two more; at the COMMIT the lock is held for the server's own work only. The invariant is the
    same: the check sees every committed reservation (the lock orders them; the trigger's read
    comes after it) and this transaction's own, and the calls commit only if the total is within
    the cap.
    """
    from django.db import connection

    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if connection.vendor != "postgresql" or price <= 0 or not commit_is_held():
        return None
    caps = caps or budget_caps()
    if caps.run_cents is not None:
        return None
    guard_row_exists("budget")
    day = guards.budget_day(now)
    reserved = reserve_calls(to_call, by_sig, calls_by_sig, now=now, outcome=outcome, api=api, worker_id=worker_id,
                             quiet=True, budget_check=f"{day.isoformat()}/{int(caps.daily_cents)}")
    reserved.logged = False
    return reserved


@dataclass
class Reads:
    """What a reservation reads before it writes, read in one round trip (``_reads_at_once``)."""

    entries: list[CacheEntry]  # the L2 rows of the signatures the in-process cache missed
    call_rows: list[dict] | None  # the calls of those signatures (``_signature_calls``); None: not read
    breaker_and_caps: tuple[tuple[str, dt.datetime | None], BudgetCaps]


def _reads_at_once(items: Sequence[RunItem], *, now: dt.datetime, calls: bool = True) -> Reads | None:
    """PostgreSQL: the L2 cache rows, the calls of the same signatures, the breaker and the budget
    caps, as three queries in one round trip (psycopg's pipeline), where they took three; they run
    in this order on the server, each on its own snapshot, as they would one by one. SQLite: None
    (each is read where it is used). The calls are read for every signature the in-process cache
    missed, a few of which the L2 rows may then serve: a few index probes more, no round trip.
    ``calls=False`` (a claim grown while the caches answered, up to 1,000 items, most of them
    served from L2): the calls are read later, for the items left (1,000 probes a claim cost the
    cached re-run a third of its speed)."""
    from django.db import connection

    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    missing = l1_misses([i.active_signature for i in items], now)
    # (a query of no signatures is not even built: Django refuses an empty IN as EmptyResultSet)
    cache_sql, cache_params = l2_query(missing).query.sql_with_params() if missing else ("", ())
    fields = CacheEntry._meta.concrete_fields
    connection.ensure_connection()
    with connection.cursor() as cache_cur, connection.cursor() as calls_cur, connection.cursor() as guards_cur:
        with connection.wrap_database_errors, connection.connection.pipeline():
            if missing:
                cache_cur.execute(cache_sql, cache_params)
                if calls:
                    _signature_calls(missing, cursor=calls_cur)
            guards_cur.execute(
                "SELECT b.state, b.next_probe_at, s.daily_cap_cents, s.run_cap_cents, s.id IS NOT NULL "
                "FROM (SELECT 1) AS one LEFT JOIN skiptrace_guards b ON b.name = 'breaker' "
                "LEFT JOIN skiptrace_budget_settings s ON s.id = %s", [BudgetSetting.SINGLETON])
        names = [f.attname for f in fields]
        entries = [CacheEntry.from_db(CacheEntry.objects.db, names, row) for row in cache_cur.fetchall()] if missing else []
        call_rows = (_call_rows(calls_cur) if missing else []) if calls else None
        state, next_probe_at, daily, run, has_row = guards_cur.fetchone()
    return Reads(entries, call_rows, ((state or "closed", next_probe_at), caps_of((daily, run) if has_row else None)))


@dataclass
class SignatureCalls:
    open: bool = False
    final_count: int = 0
    lost_recently: bool = False  # lost or unreadable within the TTL, and no answer since
    lost_call_id: int | None = None
    lost_state: str = ""


def calls_by_signature(signatures: list[str], *, now: dt.datetime,
                       rows: list[dict] | None = None) -> dict[str, SignatureCalls]:
    """What the calls of these signatures say (``rows``: read already, for these or more)."""
    ttl_start = now - dt.timedelta(days=settings.CACHE_TTL_DAYS)
    result: dict[str, SignatureCalls] = {}
    wanted = set(signatures)
    for row in (_signature_calls(signatures) if rows is None else rows):
        if row["provider"] != PROVIDER or row["signature"] not in wanted:
            continue
        state = result.setdefault(row["signature"], SignatureCalls())
        if row["state"] in OPEN_CALL_STATES:
            state.open = True
        else:
            state.final_count += 1
        if row["state"] in UNKNOWN_OUTCOME_STATES and row["created_at"] >= ttl_start:
            state.lost_recently, state.lost_call_id, state.lost_state = True, row["id"], row["state"]
        elif row["state"] == CallState.COMPLETED:
            state.lost_recently = False  # a later answer settles it
    return result


def _signature_calls(signatures: list[str], *, cursor=None) -> list[dict] | None:
    """The calls of these signatures, oldest first.

    PostgreSQL: one index probe per signature (a LATERAL join over the array; ``OFFSET 0`` keeps
    the planner from flattening it back into a join), whatever the statistics say. As
    ``signature IN (…)`` the plan depended on them: before the first ANALYZE of a growing table
    (autovacuum lagging, or off) the planner assumed half the table matched 100 signatures and
    read all of it, in parallel — 200–350 ms a batch at 70,000–97,000 calls, the database's
    busiest statement in a 100,000-lead run (sampled from ``pg_stat_activity``); now ~1 ms."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return list(ProviderCall.objects.filter(signature__in=signatures)
                    .values("provider", "signature", "state", "id", "created_at").order_by("id"))
    if cursor is not None:  # the caller runs it with others and reads it later (``_call_rows``)
        _signature_calls_execute(cursor, signatures)
        return None
    with connection.cursor() as own:
        _signature_calls_execute(own, signatures)
        return _call_rows(own)


def _signature_calls_execute(cursor, signatures: list[str]) -> None:
    table = ProviderCall._meta.db_table
    cursor.execute(
        f"SELECT c.provider, c.signature, c.state, c.id, c.created_at "
        f"FROM unnest(%s::varchar[]) AS s(signature) "
        f"CROSS JOIN LATERAL (SELECT p.provider, p.signature, p.state, p.id, p.created_at FROM {table} p "
        f"WHERE p.signature = s.signature OFFSET 0) AS c ORDER BY c.id",
        [list(dict.fromkeys(signatures))],
    )


def _call_rows(cursor) -> list[dict]:
    names = [col.name for col in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def reserve_calls(
    chosen: list[str],
    by_sig: dict[str, list[RunItem]],
    calls_by_sig: dict[str, SignatureCalls],
    *,
    now: dt.datetime,
    outcome: BatchOutcome,
    api: str = "v1",
    worker_id: str = "local",
    quiet: bool = False,
    budget_check: str | None = None,
) -> Reserved:
    """The calls of ``chosen``, reserved, and their items pointed at them. ``budget_check``
    ("<day>/<cap cents>"): the INSERT arms the COMMIT's budget check (``reserve_within_budget``)."""
    batch_id = uuid.uuid4().hex
    day = guards.budget_day(now)
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    lease = now + dt.timedelta(seconds=lease_seconds())
    rows: list[ProviderCall] = []
    for sig in chosen:
        first = by_sig[sig][0]
        generation = calls_by_sig[sig].final_count if sig in calls_by_sig else 0
        request = trace_request(first, request_id=first.lead_id)
        rows.append(
            ProviderCall(
                provider=PROVIDER,
                idempotency_key=idempotency_key(sig, generation),
                lead_id=first.lead_id,
                run_id=first.run_id,
                request_json=json.dumps(request_audit(request), sort_keys=True),
                signature=sig,
                generation=generation,
                batch_id=batch_id,
                item_id=first.id,
                estimate_cents=price,
                budget_day=day,
                attempt_reason=first.attempt_reason,
                predecessor_id=first.predecessor_call_id if first.attempt_reason == AttemptReason.ADDRESS_SANITIZED else None,
                state=CallState.RESERVED,
                lease_until=lease,
                created_at=now,
                api_version=api,
                worker_id=worker_id[:64],
            )
        )
    # ON CONFLICT DO NOTHING: a key taken by another worker since we looked means that worker's call
    # is in flight for this signature; our items wait for its answer (single flight).
    written = insert_rows(ProviderCall, rows, conflict=["provider", "idempotency_key"],
                          returning=["id", "idempotency_key"],
                          setting=(BUDGET_CHECK_SETTING, budget_check) if budget_check else None)
    if written is None:  # SQLite: read the rows back
        mine = {c.signature: c for c in ProviderCall.objects.filter(batch_id=batch_id)}
    else:  # PostgreSQL: the ids came back with the INSERT (one round trip less a batch)
        ids = dict((key, pk) for pk, key in written)
        mine = {}
        for row in rows:
            if row.idempotency_key in ids:
                row.pk = ids[row.idempotency_key]
                row._state.adding, row._state.db = False, ProviderCall.objects.db
                mine[row.signature] = row
    reserved = Reserved(batch_id=batch_id)
    for sig in chosen:
        sig_items = by_sig[sig]
        call = mine.get(sig)
        if call is None:
            requeue(sig_items, now=now, delay_s=WAIT_FOR_OTHER_CALL_S, reason=None)
            outcome.waiting += len(sig_items)
            continue
        reserved.calls.append(call)
        reserved.requests.append(trace_request(sig_items[0], request_id=str(call.pk)))
        reserved.served[call.pk] = sig_items
        for item in sig_items:
            item.provider_call, item.lease_until, item.updated_at = call, lease, now
    with together(until_commit=True):  # in batch_reserve: sent with the COMMIT
        update_rows(RunItem, [i for c in reserved.calls for i in reserved.served[c.pk]],
                    ["provider_call", "lease_until", "updated_at"])
    if not quiet:
        log_reserved(reserved)
    return reserved


def log_reserved(reserved: Reserved) -> None:
    if reserved.calls:
        batch_id = reserved.batch_id
        log.info("batch %s reserved: runs=%s calls=%d provider_call_ids=%d..%d", batch_id,
                 ",".join(sorted({c.run_id or "-" for c in reserved.calls})), len(reserved.calls),
                 reserved.calls[0].pk, reserved.calls[-1].pk)
        for call in reserved.calls:
            log_call("reserved", call.pk, call.run_id, call.lead_id, generation=call.generation,
                     attempt_reason=call.attempt_reason)


def trace_request(item: RunItem, *, request_id: str) -> TraceRequest:
    sanitized = item.attempt_reason == AttemptReason.ADDRESS_SANITIZED
    return TraceRequest(
        request_id=request_id,
        street=item.street_sanitized if sanitized else item.street,
        city=item.city,
        state=item.state,
        zip=item.zip,
        first=item.first,
        last=item.last,
    )


def request_audit(request: TraceRequest) -> dict:
    """The sanitized request kept on the call row: what was asked, never a credential."""
    body = {"propertyAddress": {k: v for k, v in (("street", request.street), ("city", request.city),
                                                   ("state", request.state), ("zip", request.zip)) if v}}
    if request.first or request.last:
        body["name"] = {"first": request.first, "last": request.last}
    return body
