"""Figure 7: the month-start reset for many subscriptions, against one set-based statement.

A cohort of subscriptions is created whose latest period is last month's (as on the 1st, before
beat has run). The product's task ``credits.tasks.open_billing_periods`` is called directly (as
beat's worker would), queueing its reset notices on the bench's Redis broker; then the cohort's
new periods and notices are removed and one SQL statement does the same work. The cohort is
deleted afterwards, and the queued messages with it.
"""

from __future__ import annotations

import os
import time

from .. import database, profiling
from ..generate import TIMEZONES
from ..report import PASS, SHORT, Row, failed, not_built
from . import Settings

COHORT = "Bench reset cohort"

CREATE_COHORT = """
WITH made AS (
    INSERT INTO accounts_subscription (name, plan, timezone, base_allocation, limit_mode,
                                       excess_allowance, created_at)
    SELECT %(name)s || ' ' || g, 'pro', (%(zones)s::text[])[1 + g %% %(zone_count)s], 1000,
           'hard', 0, now() - interval '70 days'
    FROM generate_series(1, %(count)s) g
    RETURNING id, timezone
)
INSERT INTO credits_billingperiod (subscription_id, start, "end", credits_used, excess_used,
                                   opened_at)
SELECT id,
       (date_trunc('month', now() AT TIME ZONE timezone) - interval '1 month')
           AT TIME ZONE timezone,
       date_trunc('month', now() AT TIME ZONE timezone) AT TIME ZONE timezone,
       0, 0, now() - interval '40 days'
FROM made
"""

# The same work as the task: open the current period of every subscription without one, and
# claim its reset notice when the subscription existed before the period started.
SET_BASED = """
WITH opened AS (
    INSERT INTO credits_billingperiod (subscription_id, start, "end", credits_used, excess_used,
                                       opened_at)
    SELECT s.id,
           date_trunc('month', now() AT TIME ZONE s.timezone) AT TIME ZONE s.timezone,
           (date_trunc('month', now() AT TIME ZONE s.timezone) + interval '1 month')
               AT TIME ZONE s.timezone,
           0, 0, now()
    FROM accounts_subscription s
    WHERE NOT EXISTS (SELECT 1 FROM credits_billingperiod p
                      WHERE p.subscription_id = s.id AND p.start <= now() AND p."end" > now())
    ON CONFLICT (subscription_id, start) DO NOTHING
    RETURNING id, subscription_id, start
)
INSERT INTO credits_thresholdalert (subscription_id, period_id, threshold, crossed_at)
SELECT o.subscription_id, o.id, 'period_opened', now()
FROM opened o JOIN accounts_subscription s ON s.id = o.subscription_id
WHERE s.created_at < o.start
ON CONFLICT (subscription_id, period_id, threshold) DO NOTHING
"""

COHORT_IDS = "SELECT id FROM accounts_subscription WHERE name LIKE %s"


def _cohort_periods(connection) -> tuple[int, int]:
    return connection.execute(
        """
        SELECT COUNT(*) FILTER (WHERE p.start <= now() AND p."end" > now()),
               (SELECT COUNT(*) FROM credits_thresholdalert t JOIN accounts_subscription s2
                    ON s2.id = t.subscription_id
                WHERE s2.name LIKE %(like)s AND t.threshold = 'period_opened')
        FROM credits_billingperiod p JOIN accounts_subscription s ON s.id = p.subscription_id
        WHERE s.name LIKE %(like)s
        """,
        {"like": COHORT + " %"},
    ).fetchone()


def _undo_current(connection) -> None:
    """Remove what the task made. Nothing refers to these rows, so the foreign-key triggers
    (one probe of every ledger partition per period) are skipped for this session."""
    like = COHORT + " %"
    connection.execute("SET session_replication_role = replica")
    connection.execute(
        "DELETE FROM credits_thresholdalert WHERE subscription_id IN (" + COHORT_IDS + ")", [like]
    )
    connection.execute(
        'DELETE FROM credits_billingperiod WHERE start <= now() AND "end" > now() '
        "AND subscription_id IN (" + COHORT_IDS + ")",
        [like],
    )


def _drop_cohort(connection) -> None:
    like = COHORT + " %"
    connection.execute("SET session_replication_role = replica")
    connection.execute(
        "DELETE FROM credits_thresholdalert WHERE subscription_id IN (" + COHORT_IDS + ")", [like]
    )
    connection.execute(
        "DELETE FROM credits_billingperiod WHERE subscription_id IN (" + COHORT_IDS + ")", [like]
    )
    connection.execute("DELETE FROM accounts_subscription WHERE name LIKE %s", [like])


def _drain_broker() -> None:
    """Drop the messages the task queued: no worker consumes the bench's broker."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        return
    import redis
    from django.conf import settings

    queues = {"celery", settings.CELERY_TASK_DEFAULT_QUEUE}
    queues |= {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    redis.Redis.from_url(url).delete(*queues)


def reset(settings: Settings) -> list[Row]:
    figure = "7 Month-start reset"
    count = settings.reset_subscriptions
    target = "<= 2x"
    try:
        from credits.tasks import open_billing_periods
    except ImportError as error:
        return [
            not_built(
                figure,
                f"{count:,} subscriptions",
                target,
                f"credits.tasks.open_billing_periods ({error})",
            )
        ]

    with database.connect(autocommit=True) as connection:
        _drop_cohort(connection)
        connection.execute(
            CREATE_COHORT,
            {
                "name": COHORT,
                "zones": list(TIMEZONES),
                "zone_count": len(TIMEZONES),
                "count": count,
            },
        )
        connection.execute("ANALYZE accounts_subscription")
        connection.execute("ANALYZE credits_billingperiod")
    try:
        from django.db import connection as django_connection

        started = time.perf_counter()
        with profiling.maybe_in_process(settings, "reset"):
            outcome = open_billing_periods()
        product_seconds = time.perf_counter() - started
        django_connection.close()
        with database.connect(autocommit=True) as connection:
            product_periods, product_notices = _cohort_periods(connection)
            _undo_current(connection)
            connection.execute("SET session_replication_role = DEFAULT")
            started = time.perf_counter()
            connection.execute(SET_BASED)
            baseline_seconds = time.perf_counter() - started
            baseline_periods, baseline_notices = _cohort_periods(connection)
    except Exception as error:
        return [failed(figure, error)]
    finally:
        with database.connect(autocommit=True) as connection:
            _drop_cohort(connection)
        _drain_broker()

    ratio = product_seconds / baseline_seconds if baseline_seconds else 0.0
    same = product_periods == baseline_periods == count
    return [
        Row(
            figure,
            f"seconds to open {count:,} periods and claim their reset notices",
            f"{product_seconds:.1f}",
            f"{baseline_seconds:.2f} (one INSERT ... SELECT)",
            f"{ratio:.0f}x",
            target,
            PASS if ratio <= 2 and same else SHORT,
            notes=(
                f"task returned {outcome}; periods opened {product_periods} vs {baseline_periods},"
                f" notices {product_notices} vs {baseline_notices}"
            ),
        )
    ]
