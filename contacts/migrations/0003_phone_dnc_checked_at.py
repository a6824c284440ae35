"""Per phone, when its DNC status was checked (``dnc_checked_at``), and phone types normalized.

Existing rows take the ``finished_at`` of the provider call that answered them (the time of the
answer that carried the flag); a row without a call keeps null, which reads as stale. Types stored
as the provider's "Land Line" become "Landline" (readers map old values too).
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def forwards(apps, schema_editor):
    Phone = apps.get_model("contacts", "Phone")
    ProviderCall = apps.get_model("skiptrace", "ProviderCall")
    finished = ProviderCall.objects.filter(pk=OuterRef("provider_call_id")).values("finished_at")[:1]
    Phone.objects.filter(dnc_checked_at__isnull=True, provider_call__isnull=False).update(
        dnc_checked_at=Subquery(finished)
    )
    Phone.objects.filter(type="Land Line").update(type="Landline")


def backwards(apps, schema_editor):
    Phone = apps.get_model("contacts", "Phone")
    Phone.objects.filter(type="Landline").update(type="Land Line")


class Migration(migrations.Migration):

    dependencies = [
        ("contacts", "0002_v3_persons"),
        ("skiptrace", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="phone",
            name="dnc_checked_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.RunPython(forwards, backwards),
    ]
