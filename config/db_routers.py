"""Send report reads to a read replica, and never anything else.

When ``REPLICA_DATABASE_URL`` is set, code that reads for reports wraps its queries in
``core.replica.reading_for_reports()``; inside it, reads go to the ``replica`` alias. Writes
always go to ``default``, inside or outside, and migrations run on ``default`` only. Without a
replica the block changes nothing.
"""

from django.conf import settings

from core.replica import is_reading_for_reports

REPLICA = "replica"


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


class ReportsReplicaRouter:
    def db_for_read(self, model, **hints):
        if is_reading_for_reports() and replica_configured():
            return REPLICA
        return "default"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica holds the same data as default

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
