"""Creditdesk's PostgreSQL backend (``config.postgresql``), pointed at the embedded cluster
whose data directory is HOST."""

from pathlib import Path

from config.postgresql import base

from . import cluster


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        params["host"] = str(cluster.connect(Path(self.settings_dict["HOST"])))
        return params
