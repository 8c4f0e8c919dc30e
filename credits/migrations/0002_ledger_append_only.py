"""A trigger refuses UPDATE and DELETE on the ledger, whatever the caller.

TRUNCATE (used by test teardown and by archiving whole partitions) is not a row operation and
stays possible.
"""

from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION creditdesk_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'credit events are append-only; record an adjustment instead'
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER credits_creditevent_append_only
    BEFORE UPDATE OR DELETE ON credits_creditevent
    FOR EACH ROW EXECUTE FUNCTION creditdesk_ledger_append_only();
"""

ALLOW = """
DROP TRIGGER IF EXISTS credits_creditevent_append_only ON credits_creditevent;
DROP FUNCTION IF EXISTS creditdesk_ledger_append_only();
"""


def forbid(apps, schema_editor):
    schema_editor.execute(FORBID)


def allow(apps, schema_editor):
    schema_editor.execute(ALLOW)


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]

    operations = [migrations.RunPython(forbid, allow)]
