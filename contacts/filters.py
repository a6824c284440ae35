"""The contact-list filters shared by the ops console and ``GET /api/exports/contacts.csv``.

Each filter is one ``Exists`` / column condition in SQL, so a filtered export of 100,000 leads is
still one streamed query per chunk. ``callable`` and ``stale`` follow ``skiptrace.dialer``: a number
is callable when not DNC, not TCPA, not a litigator's or deceased person's, and its DNC status is
fresh; it is *stale* when only its DNC status keeps it out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from django.db.models import Exists, OuterRef, Q, QuerySet

from contacts.models import Email, Lead, Phone
from skiptrace.dialer import freshness_cutoff
from skiptrace.models import RunItem

UPDATED_WINDOWS = {"1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}

# name -> allowed values (None: any text up to 200 characters without NUL)
API_FILTERS: dict[str, tuple[str, ...] | None] = {
    "run_id": None,
    "source": None,
    "has_phone": ("yes", "dnc_only", "no"),
    "has_email": ("yes", "no"),
    "updated_since": ("1d", "7d", "30d", "never"),
    "cached": ("yes", "stale", "no"),
    "dnc_stale": ("yes", "no"),
}
MAX_TEXT = 200


class FilterError(ValueError):
    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name, self.why = name, why


def _not_blocked() -> Q:
    return Q(is_dnc=False, is_tcpa=False, person_litigator=False, person_deceased=False)


def callable_phone(fresh_after: dt.datetime) -> Exists:
    """The lead has a number the dialer may call at the cut-off (``Phone.callable_at``)."""
    return Exists(Phone.objects.filter(_not_blocked(), lead=OuterRef("pk"), dnc_checked_at__gte=fresh_after))


def stale_phone(fresh_after: dt.datetime) -> Exists:
    """The lead has a number kept out of Phone1..3 only because its DNC status is stale (or unknown)."""
    return Exists(Phone.objects.filter(_not_blocked(), Q(dnc_checked_at__isnull=True) | Q(dnc_checked_at__lt=fresh_after),
                                       lead=OuterRef("pk")))


def any_phone() -> Exists:
    return Exists(Phone.objects.filter(lead=OuterRef("pk")))


def any_email() -> Exists:
    return Exists(Email.objects.filter(lead=OuterRef("pk")))


def of_run(run_id: str) -> Exists:
    return Exists(RunItem.objects.filter(lead_id=OuterRef("pk"), run_id=run_id))


def of_source(label: str) -> Exists:
    return Exists(RunItem.objects.filter(lead_id=OuterRef("pk"), run__source_label=label))


def has_phone(queryset: QuerySet[Lead], value: str, *, now: dt.datetime) -> QuerySet[Lead]:
    fresh_after = freshness_cutoff(now)
    if value == "yes":
        return queryset.filter(callable_phone(fresh_after))
    if value == "dnc_only":
        return queryset.filter(any_phone()).exclude(callable_phone(fresh_after))
    if value == "no":
        return queryset.exclude(any_phone())
    return queryset


def has_email(queryset: QuerySet[Lead], value: str) -> QuerySet[Lead]:
    if value == "yes":
        return queryset.filter(any_email())
    if value == "no":
        return queryset.exclude(any_email())
    return queryset


def updated_since(queryset: QuerySet[Lead], value: str, *, now: dt.datetime) -> QuerySet[Lead]:
    if value in UPDATED_WINDOWS:
        return queryset.filter(contacts_updated_at__gte=now - UPDATED_WINDOWS[value])
    if value == "never":
        return queryset.filter(contacts_updated_at__isnull=True)
    return queryset


def cached(queryset: QuerySet[Lead], value: str) -> QuerySet[Lead]:
    if value == "yes":
        return queryset.filter(cached=True)
    if value == "stale":
        return queryset.filter(cached=True, stale=True)
    if value == "no":
        return queryset.filter(cached=False, contacts_updated_at__isnull=False)
    return queryset


def dnc_stale(queryset: QuerySet[Lead], value: str, *, now: dt.datetime, max_age_days: float | None = None
              ) -> QuerySet[Lead]:
    fresh_after = freshness_cutoff(now, max_age_days)
    if value == "yes":
        return queryset.filter(stale_phone(fresh_after))
    if value == "no":
        return queryset.exclude(stale_phone(fresh_after))
    return queryset


def apply(queryset: QuerySet[Lead], params: Mapping[str, str], *, now: dt.datetime) -> QuerySet[Lead]:
    """``queryset`` narrowed by the known filters of ``params`` (others are ignored); a bad value
    raises :class:`FilterError` naming the filter."""
    values: dict[str, str] = {}
    for name, allowed in API_FILTERS.items():
        raw = params.get(name)
        if raw is None:
            continue
        if allowed is None:
            if not 0 < len(raw) <= MAX_TEXT or "\x00" in raw:
                raise FilterError(name, f"must be 1 to {MAX_TEXT} characters without NUL")
        elif raw not in allowed:
            raise FilterError(name, f"must be one of {', '.join(allowed)}")
        values[name] = raw
    if "run_id" in values:
        queryset = queryset.filter(of_run(values["run_id"]))
    if "source" in values:
        queryset = queryset.filter(of_source(values["source"]))
    if "has_phone" in values:
        queryset = has_phone(queryset, values["has_phone"], now=now)
    if "has_email" in values:
        queryset = has_email(queryset, values["has_email"])
    if "updated_since" in values:
        queryset = updated_since(queryset, values["updated_since"], now=now)
    if "cached" in values:
        queryset = cached(queryset, values["cached"])
    if "dnc_stale" in values:
        queryset = dnc_stale(queryset, values["dnc_stale"], now=now)
    return queryset
