"""Run reports: the seed's report JSON and the dialer ``enriched.csv`` of a run.

Counters come from SQL aggregates over ``skiptrace_run_items`` and ``provider_calls``; the only
per-item work is one streamed pass over the done items' contact JSON (phone/email hit rate and the
enriched samples) and one streamed pass for the CSV, both with ``.iterator()`` so memory stays flat
whatever the run's size. ``run_report`` issues the same handful of queries for 10 items or 100,000.

Files go to ``RUN_REPORTS_DIR/<run_id>/{report.json,enriched.csv}``, each written to a temporary
file in the same folder and renamed over the old one: a reader sees the old file or the new one,
never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    ExpressionWrapper,
    F,
    Min,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, Left, RowNumber, StrIndex, Trim
from django.utils import timezone

from skiptrace import guards
from skiptrace.dialer import (
    ALL_STALE,
    Cells,
    contact_cells,
    freshness_cutoff,
    row_from_cells,
    write_dialer_csv,
)
from skiptrace.guards import budget as budget_guard
from skiptrace.models import ItemStatus, Run, RunItem

REPORT_NAME = "report.json"
CSV_NAME = "enriched.csv"
DEFAULT_SOURCE = "batchdata"

SAMPLES_ENRICHED = 10
SAMPLES_FAILED = 10
ERROR_SAMPLES = 5
ERROR_REASONS_MAX = 50  # beyond this, the rarest reasons are folded into one "other" group
OTHER_REASON = "other"
UNKNOWN_REASON = "unknown"
CHUNK_SIZE = 2000
CONTACTS_CACHE_SIZE = 4096

PREDECESSOR_LABEL = "sanitized_retry_predecessor"
SANITIZED_LABEL = "address_sanitized"

# A run_id becomes a folder name: no separators, no dot-files, no "..".
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


# --------------------------------------------------------------------------------------------
# Paths and files


def artifact_paths(run_id: str) -> tuple[Path, Path]:
    """``(RUN_REPORTS_DIR/<run_id>/report.json, RUN_REPORTS_DIR/<run_id>/enriched.csv)``.

    Raises ValueError for a run_id that is not a safe folder name (it may come from a URL).
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise ValueError(f"not a valid run_id: {run_id!r}")
    folder = Path(settings.RUN_REPORTS_DIR) / run_id
    return folder / REPORT_NAME, folder / CSV_NAME


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, write: Callable[[TextIO], Any], *, encoding: str) -> Any:
    """Write through ``write(fh)`` into a temp file next to ``path``, fsync, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return result


def write_run_artifacts(run: Run, *, now: datetime | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``enriched.csv`` of ``run``; set ``run.report_written_at``.

    The CSV's DNC freshness is judged at ``now`` (default: the current time) against each answer's
    time (its provider call's ``finished_at``; a cache hit's call is the one that fetched it).
    """
    report_path, csv_path = artifact_paths(run.run_id)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    # One pass over the items writes the CSV and tallies the report's hit rate and samples.
    scan = _ContactScan(fresh_after=freshness_cutoff(now or timezone.now()))
    _atomic_write(
        csv_path,
        lambda fh: write_dialer_csv(_dialer_rows(run, scan), fh, _rows_are_safe=True),
        encoding="utf-8-sig",
    )
    report = _build_report(run, scan)
    _atomic_write(
        report_path,
        lambda fh: json.dump(report, fh, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )
    written_at = now or timezone.now()
    Run.objects.filter(pk=run.pk).update(report_written_at=written_at)
    run.report_written_at = written_at
    return report_path, csv_path


def dnc_expiry(run: Run) -> datetime | None:
    """When the first number of the run's ``enriched.csv`` goes stale: its oldest answer's time plus
    ``DNC_MAX_AGE_DAYS`` (None when no done item has an answer). One aggregate query."""
    oldest = RunItem.objects.filter(run_id=run.pk, status=ItemStatus.DONE, provider_call__isnull=False).aggregate(
        oldest=Min("provider_call__finished_at"))["oldest"]
    if oldest is None:
        return None
    return oldest + timedelta(days=settings.DNC_MAX_AGE_DAYS)


def refresh_artifacts_if_stale(run: Run, *, now: datetime | None = None) -> bool:
    """Write the run's files again when the ``enriched.csv`` on disk was written before one of its
    numbers' DNC status went stale (so a download never hands out a number as freshly checked that
    is not). Returns True when it rewrote them. For the download views: call before serving the CSV."""
    now = now or timezone.now()
    if run.finished_at is None or run.report_written_at is None:
        return False
    expiry = dnc_expiry(run)
    if expiry is None or now < expiry or run.report_written_at >= expiry:
        return False
    write_run_artifacts(run, now=now)
    return True


# --------------------------------------------------------------------------------------------
# Contacts JSON


def parse_contacts(raw: str | None) -> dict | None:
    """``ProviderCall.parsed_contacts_json`` as a dict; None when absent or unreadable."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_any(contacts: dict | None, key: str) -> bool:
    values = contacts.get(key) if contacts else None
    return bool(values) and isinstance(values, list) and any(isinstance(x, dict) for x in values)


def _phones(contacts: dict | None) -> list[dict]:
    return [p for p in ((contacts or {}).get("phones") or ()) if isinstance(p, dict)]


def _emails(contacts: dict | None) -> list[dict]:
    return [e for e in ((contacts or {}).get("emails") or ()) if isinstance(e, dict)]


class _CallFacts:
    """What one provider call's contacts mean for a report and a CSV row (dialer cells on demand)."""

    __slots__ = ("contacts", "has_phone", "has_email", "_cells")

    def __init__(self, contacts: dict | None) -> None:
        self.contacts = contacts
        self.has_phone = _has_any(contacts, "phones")
        self.has_email = _has_any(contacts, "emails")
        self._cells: Cells | None = None

    def cells(self, source: str, *, checked_at: datetime | None, fresh_after: datetime | None) -> Cells:
        """The dialer cells (the same for every item the call serves: one answer time, one cut-off)."""
        if self._cells is None:
            self._cells = contact_cells(self.contacts, source, checked_at=checked_at, fresh_after=fresh_after)
        return self._cells


class _ContactScan:
    """One streamed pass over a run's items: parses each distinct call's contacts JSON once (a small
    LRU keyed by call id: cache hits of one run share a call) and tallies, over the done items, how
    many have a phone / an email, keeping the first few enriched item ids as samples."""

    def __init__(self, maxsize: int = CONTACTS_CACHE_SIZE, *, fresh_after: datetime | None = None) -> None:
        self.maxsize = maxsize
        self.fresh_after = fresh_after  # the DNC freshness cut-off of the CSV rows
        self._facts: OrderedDict[int, _CallFacts] = OrderedDict()
        self.phone_any = 0
        self.email_any = 0
        self.sample_ids: list[int] = []

    def facts(self, call_id: int, raw: str | None) -> _CallFacts:
        facts = self._facts.get(call_id)
        if facts is not None:
            self._facts.move_to_end(call_id)
            return facts
        facts = self._facts[call_id] = _CallFacts(parse_contacts(raw))
        if len(self._facts) > self.maxsize:
            self._facts.popitem(last=False)
        return facts

    def tally(self, item_id: int, facts: _CallFacts) -> None:
        """Count one done item served by a call (call in position order)."""
        self.phone_any += facts.has_phone
        self.email_any += facts.has_email
        if (facts.has_phone or facts.has_email) and len(self.sample_ids) < SAMPLES_ENRICHED:
            self.sample_ids.append(item_id)


# --------------------------------------------------------------------------------------------
# Dialer CSV rows


def _dialer_rows(run: Run, scan: _ContactScan) -> Iterator[list[str]]:
    # the answer's time (its call's finished_at; a cache hit's call is the one that fetched it) against
    # the DNC freshness cut-off; NULL (no time) reads as stale
    fresh_after = scan.fresh_after or ALL_STALE
    answer_fresh = ExpressionWrapper(Q(provider_call__finished_at__gte=fresh_after), output_field=BooleanField())
    rows = (
        RunItem.objects.filter(run_id=run.pk)
        .order_by("position", "id")
        .annotate(answer_fresh=answer_fresh)
        .values_list(
            "id",
            "lead_id",
            "address_display",
            "owner_display",
            "cached",
            "status",
            "provider_call_id",
            "provider_call__provider",
            "provider_call__parsed_contacts_json",
            "answer_fresh",
        )
    )
    done = ItemStatus.DONE.value
    fresh_after = scan.fresh_after
    for item_id, lead_id, address, owner, cached, status, call_id, provider, raw, fresh in rows.iterator(
        chunk_size=CHUNK_SIZE
    ):
        cells = None
        if status == done and call_id is not None:
            facts = scan.facts(call_id, raw)
            scan.tally(item_id, facts)
            # The answer's time is compared in SQL (no datetime per row to convert): a fresh answer is
            # passed as checked at the cut-off itself, a stale or unknown one as not checked.
            checked_at = fresh_after if fresh else None
            cells = facts.cells(provider or DEFAULT_SOURCE, checked_at=checked_at, fresh_after=fresh_after)
        yield row_from_cells(
            lead_id=lead_id, address=address or "", owner=owner or "", cells=cells, cached=cached
        )


def iter_run_dialer_rows(run: Run, *, now: datetime | None = None) -> Iterator[list[str]]:
    """One dialer row per item of ``run``, by position; failed/unmatched items keep an empty row.

    One streamed query (items joined to their call, only the columns the CSV needs); a done item's
    contact cells are computed once per distinct provider call. DNC freshness is judged at ``now``.
    """
    return _dialer_rows(run, _ContactScan(fresh_after=freshness_cutoff(now or timezone.now())))


# --------------------------------------------------------------------------------------------
# Report JSON


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _usd(cents: int | None) -> float:
    return round((cents or 0) / 100, 2)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _item_counts(run: Run) -> dict[str, int]:
    done = Q(status=ItemStatus.DONE)
    return RunItem.objects.filter(run_id=run.pk).aggregate(
        total=Count("id"),
        queued=Count("id", filter=Q(status=ItemStatus.QUEUED)),
        in_flight=Count("id", filter=Q(status=ItemStatus.IN_FLIGHT)),
        done=Count("id", filter=done),
        failed=Count("id", filter=Q(status=ItemStatus.FAILED)),
        cached_hits=Count("id", filter=done & Q(cached=True)),
        stale_hits=Count("id", filter=done & Q(cached=True, stale=True)),
        provider_served=Count("id", filter=done & Q(cached=False, provider_call__isnull=False)),
        # ``selectors.run_matched_leads``' definition, in the same query
        matched_leads=Count("id", filter=done & Q(provider_call__matched=True)),
    )


def _call_counts(run: Run) -> dict[str, int]:
    """The run's provider calls and spend by the one definition every page and API answer uses
    (``selectors.run_money``); ``spend_cents`` is the settled cost (open calls cost nothing yet)."""
    from skiptrace.selectors import run_money

    money = run_money([run.pk])[run.pk]
    return {**money, "spend_cents": money["settled_cents"]}


def _scan_done_items(run: Run) -> _ContactScan:
    """The report's own pass (when no CSV is being written): the done items that have a call."""
    scan = _ContactScan()
    rows = (
        RunItem.objects.filter(run_id=run.pk, status=ItemStatus.DONE, provider_call__isnull=False)
        .order_by("position", "id")
        .values_list("id", "provider_call_id", "provider_call__parsed_contacts_json")
    )
    for item_id, call_id, raw in rows.iterator(chunk_size=CHUNK_SIZE):
        scan.tally(item_id, scan.facts(call_id, raw))
    return scan


def _enriched_samples(sample_ids: list[int]) -> list[dict]:
    if not sample_ids:
        return []
    rows = RunItem.objects.filter(id__in=sample_ids).values_list(
        "id",
        "lead_id",
        "cached",
        "provider_call_id",
        "predecessor_call_id",
        "provider_call__parsed_contacts_json",
    )
    by_id = {row[0]: row for row in rows}
    samples = []
    for item_id in sample_ids:
        if item_id not in by_id:  # deleted meanwhile
            continue
        _, lead_id, cached, call_id, predecessor_id, raw = by_id[item_id]
        contacts = parse_contacts(raw)
        sample: dict[str, Any] = {
            "lead_id": lead_id,
            "phones": [str(p.get("number")) for p in _phones(contacts) if p.get("number")],
            "emails": [str(e.get("address")) for e in _emails(contacts) if e.get("address")],
            "cached": bool(cached),
            "provider_call_id": call_id,
        }
        if predecessor_id is not None:
            sample["attempts"] = [
                {"provider_call_id": predecessor_id, "label": PREDECESSOR_LABEL},
                {"provider_call_id": call_id, "label": SANITIZED_LABEL},
            ]
        samples.append(sample)
    return samples


def _failed_samples(run: Run) -> list[dict]:
    rows = (
        RunItem.objects.filter(run_id=run.pk, status=ItemStatus.FAILED)
        .order_by("position", "id")
        .values_list("lead_id", "last_error")[:SAMPLES_FAILED]
    )
    return [{"lead_id": lead_id, "last_error": last_error or ""} for lead_id, last_error in rows]


def _failed_with_reason(run: Run):
    """Failed items annotated with ``reason``: ``last_error`` up to its first ":", trimmed (in SQL)."""
    return (
        RunItem.objects.filter(run_id=run.pk, status=ItemStatus.FAILED)
        .annotate(_err=Coalesce(F("last_error"), Value(""), output_field=CharField()))
        .annotate(_colon=StrIndex(F("_err"), Value(":")))
        .annotate(
            reason=Trim(
                Case(
                    When(_colon__gt=0, then=Left(F("_err"), F("_colon") - 1)),
                    default=F("_err"),
                    output_field=CharField(),
                )
            )
        )
    )


def _error_groups(run: Run, failed: int) -> list[dict]:
    """``[{reason, count, samples}]``, most frequent first; counts by one GROUP BY, samples by one
    window query (the first ``ERROR_SAMPLES`` lead_ids of each reason, by position)."""
    if not failed:
        return []
    grouped = (
        _failed_with_reason(run).values("reason").annotate(count=Count("id")).order_by("-count", "reason")
    )
    counts: dict[str, int] = {}
    sql_reasons: dict[str, list[str]] = {}  # shown reason -> reasons as SQL computed them
    for row in grouped:
        shown = row["reason"] or UNKNOWN_REASON
        counts[shown] = counts.get(shown, 0) + row["count"]
        sql_reasons.setdefault(shown, []).append(row["reason"])
    ranked = sorted(counts, key=lambda r: (-counts[r], r))
    top, rest = ranked, []
    if len(ranked) > ERROR_REASONS_MAX:  # keep the list bounded; the counts still add up to `failed`
        top, rest = ranked[: ERROR_REASONS_MAX - 1], ranked[ERROR_REASONS_MAX - 1 :]

    wanted = [sql for shown in top for sql in sql_reasons[shown]]
    samples: dict[str, list[str]] = {shown: [] for shown in top}
    sample_rows = (
        _failed_with_reason(run)
        .filter(reason__in=wanted)
        .annotate(
            rn=Window(RowNumber(), partition_by=[F("reason")], order_by=[F("position").asc(), F("id").asc()])
        )
        .filter(rn__lte=ERROR_SAMPLES)
        .order_by("position", "id")
        .values_list("reason", "lead_id")
    )
    for reason, lead_id in sample_rows:
        bucket = samples[reason or UNKNOWN_REASON]
        if len(bucket) < ERROR_SAMPLES:
            bucket.append(lead_id)

    errors = [{"reason": shown, "count": counts[shown], "samples": samples[shown]} for shown in top]
    if rest:
        errors.append(
            {
                "reason": OTHER_REASON,
                "count": sum(counts[r] for r in rest),
                "samples": [],
                "reasons_folded": len(rest),
            }
        )
    return errors


def run_report(run: Run) -> dict:
    """The seed's report JSON for ``run`` (every key of its schema), plus a few extras for ops."""
    return _build_report(run, None)


def _build_report(run: Run, scan: _ContactScan | None) -> dict:
    generated_at = timezone.now()
    items = _item_counts(run)
    calls = _call_counts(run)
    if scan is None:
        scan = _scan_done_items(run)
    hit_rate = {
        "phone_any_pct": _pct(scan.phone_any, items["done"]),
        "email_any_pct": _pct(scan.email_any, items["done"]),
    }
    served = items["cached_hits"] + items["provider_served"]
    scan_matched = items["matched_leads"]
    duration = 0.0
    if run.started_at and run.finished_at:
        duration = round(max(0.0, (run.finished_at - run.started_at).total_seconds()), 3)

    return {
        "run_id": run.run_id,
        "source_label": run.source_label or "",
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": duration,
        "totals": {
            "total": items["total"],
            "done": items["done"],
            "failed": items["failed"],
            "cached_hits": items["cached_hits"],
            "provider_calls": calls["provider_calls"],
            "cost_usd": _usd(calls["spend_cents"]),
        },
        "hit_rate": hit_rate,
        "cache_hit_ratio": round(items["cached_hits"] / served, 4) if served else 0.0,
        "budgets": {
            "daily_cap_usd": _usd(budget_guard.daily_cap_cents()),
            "spent_usd": _usd(guards.budget_spent_cents_today(generated_at)),
            "soft_paused": bool(run.soft_paused),
        },
        "errors": _error_groups(run, items["failed"]),
        "samples": {
            "enriched": _enriched_samples(scan.sample_ids),
            "failed": _failed_samples(run),
        },
        # --- extras (allowed by the contract) ---
        "state": run.state,
        "reason": run.reason,
        "generated_at": _iso(generated_at),
        "items_by_status": {
            "queued": items["queued"],
            "in_flight": items["in_flight"],
            "done": items["done"],
            "failed": items["failed"],
        },
        "provider_served": items["provider_served"],
        "stale_hits": items["stale_hits"],
        "provider_requests": calls["provider_requests"],
        "lost_calls": calls["lost_calls"],
        "unreadable_calls": calls["unreadable_calls"],
        "bill_mismatch_calls": calls["bill_mismatch_calls"],
        "cost_cents": calls["spend_cents"],
        # the settled cost above, and apart from it the worst case of the run's calls still in flight
        "in_flight_worst_case_usd": _usd(calls["in_flight_cents"]),
        "matched_leads": scan_matched,
        "cost_per_match_usd": round(calls["spend_cents"] / scan_matched / 100, 4) if scan_matched else None,
    }
