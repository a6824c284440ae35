from django.db import migrations

# Django adds a second index, with varchar_pattern_ops (for LIKE 'abc%'), to every indexed or
# unique varchar column on PostgreSQL. Nothing here ever filters these columns with LIKE, and each
# of them is written on the money path: a provider call's row is updated three times (reserved,
# sent, completed), never as a HOT update, so every index of the table takes a new entry each time.
# Twelve indexes on provider_calls became nine; the in-flight rows (one per request) keep one.
TABLES = ("provider_calls", "leads", "lead_phones", "lead_emails", "skiptrace_in_flight")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
            "AND indexname LIKE %s AND indexdef LIKE %s",
            [list(TABLES), "%\\_like", "%varchar_pattern_ops%"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):

    dependencies = [
        ("skiptrace", "0104_in_flight_batches"),
        ("contacts", "0003_phone_dnc_checked_at"),
    ]

    operations = [migrations.RunPython(drop, migrations.RunPython.noop)]
