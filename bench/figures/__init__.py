"""One module per group of figures; each returns ``report.Row``s and never raises for a
missing endpoint (it reports "n/a (not built)")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Settings:
    """What ``bench/run`` was asked for, and what the data set holds."""

    events: int
    quick: bool
    workers: int
    clients: int
    duration: float
    batch_size: int
    batch_clients: int
    contention_clients: int
    contention_room: int
    export_rows: int
    reset_subscriptions: int
    repeats: int
    profile: bool
    seed: int
    now: datetime
    subscription_ids: list[int] = field(default_factory=list)  # the main data set, busiest first
