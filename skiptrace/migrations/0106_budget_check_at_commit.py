# The fast reservation's budget check, run by PostgreSQL at the reservation's COMMIT.
#
# A reservation far from the cap inserts its calls first; the statement that inserts them also
# sets ``convexa.budget_check`` ("<budget day>/<daily cap in cents>") for its transaction. Each row
# it inserts then queues this deferred trigger, which runs at COMMIT: the first takes the budget
# lock (the ``skiptrace_guards`` row the classic path locks), reads the day's spend (the delta rows,
# this transaction's own included; a fresh snapshot, after the lock) and fails the COMMIT if it
# passes the cap; the rest find the setting cleared and return. The lock is held from there to the
# end of the COMMIT: no network round trip inside it (the classic order held it for two).

from django.db import migrations

CHECK_SQLSTATE = "CXB01"  # skiptrace.money.reserve.BUDGET_CHECK_SQLSTATE

FUNCTION = f"""
CREATE OR REPLACE FUNCTION convexa_budget_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spec text := COALESCE(current_setting('convexa.budget_check', true), '');
    total bigint;
BEGIN
    IF spec = '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('convexa.budget_check', '', true);  -- once a transaction
    PERFORM 1 FROM skiptrace_guards WHERE name = 'budget' FOR UPDATE;
    IF NOT FOUND THEN  -- no lock row yet (a new database): make it, and lock it
        INSERT INTO skiptrace_guards (name, state, updated_at) VALUES ('budget', 'closed', now())
            ON CONFLICT (name) DO NOTHING;
        PERFORM 1 FROM skiptrace_guards WHERE name = 'budget' FOR UPDATE;
    END IF;
    SELECT COALESCE(SUM(cents), 0) INTO total FROM skiptrace_budget_deltas
     WHERE budget_day = split_part(spec, '/', 1)::date;
    IF total > split_part(spec, '/', 2)::bigint THEN
        RAISE EXCEPTION 'convexa: the reservation would pass the daily budget (% of % cents)',
            total, split_part(spec, '/', 2) USING ERRCODE = '{CHECK_SQLSTATE}';
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGER = (
    "CREATE CONSTRAINT TRIGGER convexa_budget_check AFTER INSERT ON provider_calls "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "WHEN (COALESCE(current_setting('convexa.budget_check', true), '') <> '') "
    "EXECUTE FUNCTION convexa_budget_check()"
)


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(FUNCTION)
        cursor.execute(TRIGGER)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS convexa_budget_check ON provider_calls")
        cursor.execute("DROP FUNCTION IF EXISTS convexa_budget_check()")


class Migration(migrations.Migration):

    dependencies = [
        ('skiptrace', '0105_drop_pattern_ops_indexes'),
    ]

    operations = [
        migrations.RunPython(install, uninstall),
    ]
