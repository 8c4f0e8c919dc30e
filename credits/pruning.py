"""Deleting what no future event can need: the session claims of closed local days; and what
is kept for a documented time only: the hourly rollup (``HOURLY_USAGE_RETENTION_DAYS``).

``AgentSessionDay`` holds one row per (subscription, local day, agent, session) that
``add_to_rollups`` has counted in ``AgentRollup.sessions``. A claim only matters while another
event of the same session can still land on its day: then the claim is what stops the session
from being counted twice. Once no event can be recorded on that day any more, the claim is dead
weight; the rollups keep the counts it made, and ``rebuild_rollups`` derives claims again from
the ledger when it runs (the next pruning removes the old ones again).
"""

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction

from accounts.models import Subscription

from .models import AgentSessionDay, HourlyUsage
from .periods import local_date, month_start, previous_month_start

logger = logging.getLogger(__name__)

BATCH_SIZE = 10_000  # rows deleted per statement (and transaction)
# How long the hourly rollup (``HourlyUsage``) keeps an hour: the usage API answers hourly
# windows back that far; days and months read the daily rollups, kept for ever.
HOURLY_USAGE_RETENTION_DAYS = 90


def first_day_kept(*, now: datetime, zone: ZoneInfo) -> date:
    """The earliest local day whose session claims are kept at ``now`` in ``zone``.

    The rule comes from recording (``credits.recording._Resolver.resolve``): an event is
    refused once ``now`` is more than ``LATE_EVENT_GRACE_HOURS`` past the end of the billing
    period (local month) its timestamp falls in, and timestamps ahead of ``now`` are accepted
    only up to ``FUTURE_EVENT_TOLERANCE_SECONDS``. So the oldest local day that can still get an
    event is the first day of the period containing ``now - grace``; adjustments, which accept
    any timestamp, are not runs and never claim a session.

    We keep one whole period more than that rule needs: the month before the oldest open one.
    That margin absorbs clock skew between the worker and the API servers, a grace window
    raised later (by up to a month), a subscription whose time zone changed (its old claims
    were dated in the old zone, at most a day apart) and the instant at which a period's grace
    ends exactly. It costs about a month of claims, a small table next to the ledger.
    """
    grace = timedelta(hours=settings.LATE_EVENT_GRACE_HOURS)
    oldest_open_period = month_start(local_date(now - grace, zone))
    return previous_month_start(oldest_open_period)


def prune_session_claims(*, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete the session claims on local days before ``first_day_kept`` in each subscription's
    time zone; return how many went.

    Set-based: the first day kept is computed per time zone with ``zoneinfo`` (at most two
    distinct days at any instant, one each side of a month start), and each group of time
    zones is deleted by ``DELETE ... WHERE id IN (SELECT ... LIMIT n)`` in batches of
    ``batch_size``, each its own short transaction, until one deletes nothing.

    Safe to run twice, and concurrently with recording, which only writes claims on days that
    are kept. Each batch locks its rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two
    runs at once delete disjoint batches and never wait for each other (hence no deadlock).
    A time zone that ``zoneinfo`` does not know is logged and its subscriptions skipped.
    """
    zones_by_first_day: dict[date, list[str]] = defaultdict(list)
    for name in Subscription.objects.order_by().values_list("timezone", flat=True).distinct():
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            logger.error(
                "event=session_claims_not_pruned reason=unknown_time_zone timezone=%r", name
            )
            continue
        zones_by_first_day[first_day_kept(now=now, zone=zone)].append(name)
    deleted = 0
    for first_day, zones in sorted(zones_by_first_day.items()):
        stale = AgentSessionDay.objects.filter(subscription__timezone__in=zones, day__lt=first_day)
        deleted += _delete_in_batches(stale, batch_size)
    logger.info("event=session_claims_pruned claims=%s", deleted)
    return deleted


def prune_hourly_usage(*, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete the hourly rollup's rows of hours that started more than
    ``HOURLY_USAGE_RETENTION_DAYS`` days before ``now``; return how many went.

    One subscription at a time, so that each batch reads the rollup's unique index, which
    starts with (subscription, hour), rather than the table; in batches of ``batch_size``,
    each its own short transaction, skipping rows locked by a recording that adds to them.
    """
    cutoff = now - timedelta(days=HOURLY_USAGE_RETENTION_DAYS)
    deleted = 0
    subscriptions = Subscription.objects.order_by("pk").values_list("pk", flat=True)
    for subscription_id in subscriptions.iterator():
        stale = HourlyUsage.objects.filter(subscription_id=subscription_id, hour__lt=cutoff)
        deleted += _delete_in_batches(stale, batch_size)
    logger.info("event=hourly_usage_pruned rows=%s", deleted)
    return deleted


def _delete_in_batches(stale, batch_size: int) -> int:
    """Delete the rows of ``stale`` ``batch_size`` at a time, each batch its own transaction,
    skipping rows another transaction has locked; return how many went."""
    deleted = 0
    while True:
        with transaction.atomic():
            batch = stale.select_for_update(skip_locked=True, of=("self",)).order_by()
            count, _ = stale.model.objects.filter(pk__in=batch.values("pk")[:batch_size]).delete()
        deleted += count
        if not count:
            return deleted
