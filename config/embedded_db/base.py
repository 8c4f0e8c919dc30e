"""PostgreSQL's own backend, pointed at the embedded cluster whose data directory is HOST."""

from pathlib import Path

from django.db.backends.postgresql import base

from . import cluster


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        params["host"] = str(cluster.connect(Path(self.settings_dict["HOST"])))
        return params
