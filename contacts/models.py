"""Leads and the contacts found for them, with provenance (which provider call, cached or not)."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone


class Lead(models.Model):
    lead_id = models.CharField(primary_key=True, max_length=64)
    first_name = models.TextField(blank=True, default="")
    last_name = models.TextField(blank=True, default="")
    street = models.TextField(blank=True, default="")
    city = models.TextField(blank=True, default="")
    state = models.CharField(max_length=32, blank=True, default="")
    zip = models.CharField(max_length=16, blank=True, default="")
    address = models.TextField(blank=True, default="")  # display: "4410 Oak Hollow Dr, Tampa, FL 33610"
    owner = models.TextField(blank=True, default="")  # display: person or entity name
    is_entity = models.BooleanField(default=False)
    signature = models.CharField(max_length=64, blank=True, default="")
    # provenance of the current contacts
    source = models.CharField(max_length=32, blank=True, default="")
    cached = models.BooleanField(default=False)
    stale = models.BooleanField(default=False)
    matched = models.BooleanField(null=True, blank=True)
    provider_call = models.ForeignKey(
        "skiptrace.ProviderCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_id = models.CharField(max_length=64, null=True, blank=True)
    contacts_updated_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "leads"
        ordering = ["lead_id"]

    def __str__(self) -> str:
        return self.lead_id


class Phone(models.Model):
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="phones")
    number = models.CharField(max_length=16)  # E.164, +1XXXXXXXXXX
    type = models.CharField(max_length=16, default="Unknown")  # Mobile | Landline | VoIP | Unknown
    is_dnc = models.BooleanField(default=False)
    is_tcpa = models.BooleanField(default=False)
    confidence = models.IntegerField(null=True, blank=True)
    source = models.CharField(max_length=32, default="batchdata")
    provider_call = models.ForeignKey(
        "skiptrace.ProviderCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.IntegerField(default=0)
    # BatchData V3 (null for V1 answers and for contacts stored before V3)
    rank = models.IntegerField(null=True, blank=True)  # 1 = best
    carrier = models.TextField(null=True, blank=True)
    tested = models.BooleanField(null=True, blank=True)
    reachable = models.BooleanField(null=True, blank=True)
    # the person of the answer this number belongs to ("" / null: not known)
    person_name = models.TextField(blank=True, default="")
    person_is_owner = models.BooleanField(null=True, blank=True)  # the property owner; null: not said (V1)
    person_litigator = models.BooleanField(default=False)
    person_deceased = models.BooleanField(default=False)
    # when the provider checked this number's DNC status: the time of the answer that carried the flag
    # (the provider call's finished_at; a cached re-run keeps it). Null: not known, i.e. stale.
    dnc_checked_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "lead_phones"
        ordering = ["lead_id", "position"]

    def __str__(self) -> str:
        return f"phone of {self.lead_id}"

    @property
    def blocked(self) -> bool:
        """Never dialed whatever its age: a DNC or TCPA number, or a litigator's or deceased person's."""
        return self.is_dnc or self.is_tcpa or self.person_litigator or self.person_deceased

    def dnc_stale(self, fresh_after: dt.datetime | None) -> bool:
        """Its DNC status is older than the cut-off (``skiptrace.dialer.freshness_cutoff``)."""
        return fresh_after is not None and (self.dnc_checked_at is None or self.dnc_checked_at < fresh_after)

    def callable_at(self, fresh_after: dt.datetime | None) -> bool:
        """What the dialer may call: not :attr:`blocked` and a fresh DNC status."""
        return not self.blocked and not self.dnc_stale(fresh_after)

    @property
    def callable(self) -> bool:
        """Callable now (``DNC_MAX_AGE_DAYS``): not blocked, DNC status fresh."""
        from skiptrace.dialer import freshness_cutoff

        return self.callable_at(freshness_cutoff(timezone.now()))


class Email(models.Model):
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="emails")
    address = models.CharField(max_length=320)
    is_primary = models.BooleanField(default=False)
    confidence = models.IntegerField(null=True, blank=True)
    source = models.CharField(max_length=32, default="batchdata")
    provider_call = models.ForeignKey(
        "skiptrace.ProviderCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.IntegerField(default=0)
    rank = models.IntegerField(null=True, blank=True)  # BatchData V3, 1 = best
    tested = models.BooleanField(null=True, blank=True)
    person_name = models.TextField(blank=True, default="")
    person_is_owner = models.BooleanField(null=True, blank=True)

    class Meta:
        db_table = "lead_emails"
        ordering = ["lead_id", "position"]

    def __str__(self) -> str:
        return f"email of {self.lead_id}"
