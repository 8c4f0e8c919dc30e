"""Figures 4-6: the CSV export, usage reports and pages, against raw SQL on the ledger.

The endpoints are looked up in the URLconf first: one that is not there yet gives an
"n/a (not built)" line instead of a failure. Requests are authenticated as a subscription admin
(or a member, for the member page) with a Django session made by the session engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .. import database, profiling
from ..generate import TIMEZONES, generate
from ..load import HttpClient
from ..report import INFO, PASS, SHORT, Row, not_built, percentile
from ..server import Server, memory_kib, reset_peak
from . import Settings

EXPORT_PATH = "/api/v1/exports/credit-usage/?scope=subscription&format=csv"
REPORTS = ("usage-by-user", "usage-by-agent", "usage-by-model")
TIMEFRAMES = ("last_30_days", "last_12_months")
PAGES = (
    ("admin analytics", "/admin/credit-usage/", "admin"),
    ("member usage", "/usage/", "member"),
)


def resolves(path: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(path.split("?", 1)[0])
        return True
    except Resolver404:
        return False


@dataclass
class Session:
    user_id: int
    cookie: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"sessionid={self.cookie}"}


def session_for(user_id: int) -> Session:
    """A logged-in session for ``user_id``, as ``django.contrib.auth.login`` would store it."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User

    user = User.objects.get(pk=user_id)
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    # The backend that checks passwords (the first one only throttles login forms and cannot
    # load a session's user).
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return Session(user_id, store.session_key)


def admin_and_member(subscription_id: int) -> tuple[int, int]:
    with database.connect() as connection:
        admin = connection.execute(
            "SELECT user_id FROM accounts_membership WHERE subscription_id = %s "
            "AND role = 'subscription_admin' ORDER BY user_id LIMIT 1",
            [subscription_id],
        ).fetchone()[0]
        member = connection.execute(
            "SELECT m.user_id FROM accounts_membership m JOIN credits_creditevent e "
            "ON e.user_id = m.user_id WHERE m.subscription_id = %s AND m.role = 'member' "
            "GROUP BY m.user_id ORDER BY COUNT(*) DESC LIMIT 1",
            [subscription_id],
        ).fetchone()[0]
    return admin, member


def admin_session(subscription_id: int) -> Session:
    """A logged-in session of the subscription's first admin."""
    admin, _ = admin_and_member(subscription_id)
    return session_for(admin)


@contextmanager
def admin_client(subscription_id: int, name: str) -> Iterator[HttpClient]:
    """A client logged in as the subscription's first admin, against a one-worker server."""
    session = admin_session(subscription_id)
    with Server(workers=1, name=name) as server:
        yield HttpClient(server.port, session.headers)


# --- 4. Export -------------------------------------------------------------------------------

# The export's columns (reports/exports.py: time, user or key, environment, EnvironmentId,
# credits), formatted by PostgreSQL, in the same order.
EXPORT_SQL = """
SELECT to_char(e.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
       COALESCE(u.email, k.name, '') AS "user",
       concat_ws(' / ', p.name, env.name) AS environment,
       env.public_id AS environment_id,
       e.credits
FROM credits_creditevent e
LEFT JOIN accounts_user u ON u.id = e.user_id
LEFT JOIN accounts_apikey k ON k.id = e.api_key_id
LEFT JOIN accounts_environment env ON env.id = e.environment_id
LEFT JOIN accounts_project p ON p.id = env.project_id
WHERE e.subscription_id = {subscription} AND e.timestamp >= %s AND e.timestamp < %s
ORDER BY e.timestamp, e.id
"""


def _export_subscription(settings: Settings) -> int:
    """A subscription with exactly ``export_rows`` events, all in its current billing period
    (the export's timeframe): reused, or loaded now."""
    from credits.periods import period_bounds

    with database.connect() as connection:
        for (subscription_id,) in connection.execute(
            "SELECT id FROM accounts_subscription WHERE name LIKE 'Export customer 1 (%%'"
        ).fetchall():
            start = period_bounds(settings.now, _zone(subscription_id)).start
            count = connection.execute(
                "SELECT COUNT(*) FROM credits_creditevent WHERE subscription_id = %s "
                "AND timestamp >= %s",
                [subscription_id, start],
            ).fetchone()[0]
            if count == settings.export_rows:
                return subscription_id
        zone = ZoneInfo(TIMEZONES[1])  # the time zone the generator gives its first customer
        elapsed = settings.now - period_bounds(settings.now, zone).start
        generated = generate(
            connection,
            events=settings.export_rows,
            subscriptions=1,
            seed=settings.seed + 4,
            label="Export",
            now=settings.now,
            days=max(1, elapsed.days),
        )
    return generated.subscription_ids[0]


def export(settings: Settings) -> list[Row]:
    from credits.periods import period_bounds

    figure = "4 CSV export"
    target = "<= 3x time; flat memory"
    if not resolves(EXPORT_PATH):
        return [not_built(figure, f"{settings.export_rows:,} rows", target, EXPORT_PATH)]
    subscription_id = _export_subscription(settings)
    session = admin_session(subscription_id)
    # The export covers the current billing period, where all of this subscription's rows are.
    window_ = period_bounds(settings.now, _zone(subscription_id))

    with Server(workers=1, name="export") as server:
        (worker,) = server.worker_pids()
        client = HttpClient(server.port, session.headers)
        client.request("GET", "/api/v1/balance/")  # warm the worker up
        reset_peak(worker)
        idle = memory_kib(worker)
        samples: list[tuple[int, int]] = []  # (bytes received, RSS KiB)
        received = [0, 0]  # bytes, lines
        done = threading.Event()

        def sample():
            while not done.wait(0.05):
                samples.append((received[0], memory_kib(worker)))

        def on_chunk(chunk: bytes):
            received[0] += len(chunk)
            received[1] += chunk.count(b"\n")

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        with profiling.maybe(settings, server, "export", 30):
            status = client.stream(EXPORT_PATH, on_chunk)
        product_seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        peak = memory_kib(worker, "VmHWM")

    with database.connect() as connection:
        started = time.perf_counter()
        copied = 0
        query = EXPORT_SQL.format(subscription=int(subscription_id))
        statement = f"COPY ({query}) TO STDOUT WITH CSV HEADER"
        with connection.cursor().copy(statement, (window_.start, window_.end)) as copy:
            for block in copy:
                copied += len(block)
        baseline_seconds = time.perf_counter() - started

    ratio = product_seconds / baseline_seconds if baseline_seconds else 0.0
    total = received[0] or 1
    early = [rss for got, rss in samples if got <= total * 0.1] or [idle]
    growth_mib = (peak - max(early)) / 1024
    flat = growth_mib < 32
    details = {
        "status": status,
        "bytes": received[0],
        "lines": received[1],
        "baseline_bytes": copied,
        "idle_rss_kib": idle,
        "peak_rss_kib": peak,
        "rss_after_10_percent_kib": max(early),
        "samples": samples[:: max(1, len(samples) // 50)],
    }
    rows = [
        Row(
            figure,
            f"seconds for {settings.export_rows:,} rows (HTTP {status})",
            f"{product_seconds:.1f}",
            f"{baseline_seconds:.1f} (COPY ... TO STDOUT)",
            f"{ratio:.1f}x",
            "<= 3x",
            PASS if status == 200 and ratio <= 3 else SHORT,
            details=details,
            notes=(
                f"{received[1] - 1:,} CSV rows from the API; baseline query: "
                "bench/figures/reading.py EXPORT_SQL (the same five columns)"
            ),
        ),
        Row(
            figure,
            "server worker peak RSS (MiB): idle -> peak; growth after 10% of rows",
            f"{idle / 1024:.0f} -> {peak / 1024:.0f}; +{growth_mib:.0f}",
            "",
            "",
            "flat (< 32 MiB growth)",
            PASS if flat else SHORT,
        ),
    ]
    return rows


# --- 5. Reports --------------------------------------------------------------------------------


def _zone(subscription_id: int):
    from accounts.models import Subscription

    return Subscription.objects.get(pk=subscription_id).zone


def window(subscription_id: int, **params: str):
    """The product's own reading of a timeframe (UTC bounds), for the baseline's WHERE."""
    from accounts.models import Subscription
    from reports.timeframes import resolve_timeframe

    subscription = Subscription.objects.get(pk=subscription_id)
    return resolve_timeframe(subscription=subscription, params=params)


def _report_sql(report: str, subscription_id: int, timeframe: str) -> str:
    bounds = window(subscription_id, timeframe=timeframe)
    where = (
        f"e.subscription_id = {int(subscription_id)} "
        f"AND e.timestamp >= '{bounds.start.isoformat()}' "
        f"AND e.timestamp < '{bounds.end.isoformat()}'"
    )
    if report == "usage-by-user":
        return (
            f"SELECT e.user_id, u.email, SUM(e.credits), COUNT(*), SUM(e.input_tokens), "
            f"SUM(e.output_tokens) FROM credits_creditevent e LEFT JOIN accounts_user u "
            f"ON u.id = e.user_id WHERE {where} GROUP BY e.user_id, u.email ORDER BY 3 DESC"
        )
    if report == "usage-by-agent":
        return (
            f"SELECT e.agent_id, a.name, SUM(e.credits), COUNT(*), "
            f"COUNT(*) FILTER (WHERE e.status = 'failed'), AVG(e.latency_ms), "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_ms) "
            f"FROM credits_creditevent e LEFT JOIN credits_agent a ON a.id = e.agent_id "
            f"WHERE {where} GROUP BY e.agent_id, a.name ORDER BY 3 DESC"
        )
    return (
        f"SELECT e.model, SUM(e.credits), COUNT(*), SUM(e.input_tokens), "
        f"SUM(e.output_tokens) FROM credits_creditevent e WHERE {where} "
        f"GROUP BY e.model ORDER BY 2 DESC"
    )


def _time_http(client: HttpClient, path: str, repeats: int) -> tuple[list[float], int]:
    status, _, _ = client.request("GET", path)
    timings = []
    for _ in range(repeats):
        status, _, seconds = client.request("GET", path)
        timings.append(seconds)
    return timings, status


def _time_sql(query: str, repeats: int) -> list[float]:
    timings = []
    with database.connect(autocommit=True) as connection:
        connection.execute(query).fetchall()
        for _ in range(repeats):
            started = time.perf_counter()
            connection.execute(query).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


def reports(settings: Settings) -> list[Row]:
    figure = "5 Usage reports"
    target = "faster than raw ledger SQL"
    paths = {report: f"/api/v1/reports/{report}/" for report in REPORTS}
    if not any(resolves(path) for path in paths.values()):
        return [not_built(figure, "usage-by-user|agent|model", target, "/api/v1/reports/...")]
    subscription_id = settings.subscription_ids[0]
    rows = []
    with admin_client(subscription_id, "reports") as client:
        for report, path in paths.items():
            for timeframe in TIMEFRAMES:
                metric = f"{report} {timeframe} p50 ms"
                if not resolves(path):
                    rows.append(not_built(figure, metric, target, path))
                    continue
                url = f"{path}?timeframe={timeframe}&format=json&subscription={subscription_id}"
                timings, status = _time_http(client, url, settings.repeats)
                raw = _time_sql(_report_sql(report, subscription_id, timeframe), settings.repeats)
                product, baseline = percentile(timings, 0.5), percentile(raw, 0.5)
                ok = status == 200 and product < baseline
                rows.append(
                    Row(
                        figure,
                        metric,
                        f"{product * 1000:.1f} (HTTP {status})",
                        f"{baseline * 1000:.1f}",
                        f"{product / baseline:.2f}x" if baseline else "",
                        target,
                        PASS if ok else SHORT,
                        details={
                            "product_p95_ms": percentile(timings, 0.95) * 1000,
                            "baseline_p95_ms": percentile(raw, 0.95) * 1000,
                        },
                    )
                )
    return rows


# --- 6. Pages -------------------------------------------------------------------------------


def _query_count(path: str, user_id: int) -> tuple[int, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_id))
    client.get(path)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    return len(queries), response.status_code


def pages(settings: Settings) -> list[Row]:
    figure = "6 Pages"
    target = "p95 < 500 ms, queries flat"
    subscription_id = settings.subscription_ids[0]
    admin, member = admin_and_member(subscription_id)
    sessions = {"admin": session_for(admin), "member": session_for(member)}
    rows = []
    built = [page for page in PAGES if resolves(page[1])]
    for name, path, _ in PAGES:
        if (name, path, _) not in built:
            rows.append(not_built(figure, f"{name} ({path})", target, path))
    if not built:
        return rows
    with Server(workers=1, name="pages") as server:
        for name, path, who in built:
            client = HttpClient(server.port, sessions[who].headers)
            timings, status = _time_http(client, path, settings.repeats)
            queries, in_process_status = _query_count(path, sessions[who].user_id)
            p50, p95 = percentile(timings, 0.5) * 1000, percentile(timings, 0.95) * 1000
            rows.append(
                Row(
                    figure,
                    f"{name} ({path}) p50 / p95 ms, queries",
                    f"{p50:.0f} / {p95:.0f}; {queries} queries (HTTP {status})",
                    "",
                    "",
                    target,
                    PASS if status == 200 and p95 < 500 else SHORT,
                    details={"in_process_status": in_process_status},
                )
            )
    return rows


def rollup_compression(settings: Settings) -> Row:
    """How many ledger rows each rollup row stands for: what reading rollups can save. For the
    narrow rollups, their monthly rows (a 12-month report reads eleven months of them, plus
    the current month's daily rows)."""
    narrow = (
        ("person", "credits_personrollup"),
        ("agent", "credits_agentrollup"),
        ("model", "credits_modelrollup"),
        ("product", "credits_productrollup"),
        ("subscription", "credits_subscriptionrollup"),
    )
    subscription = {"s": settings.subscription_ids[0]}
    with database.connect() as connection:
        ledger, daily = connection.execute(
            "SELECT (SELECT COUNT(*) FROM credits_creditevent WHERE subscription_id = %(s)s), "
            "(SELECT COUNT(*) FROM credits_dailyusage WHERE subscription_id = %(s)s)",
            subscription,
        ).fetchone()
        monthly = []
        for name, table in narrow:
            (count,) = connection.execute(
                f"SELECT COUNT(*) FROM {table} WHERE subscription_id = %(s)s AND grain = 'month'",
                subscription,
            ).fetchone()
            monthly.append(f"{name} {count:,}")
    return Row(
        "5 Usage reports",
        "busiest subscription: ledger rows / DailyUsage rows; narrow rollups' monthly rows",
        f"{ledger:,} / {daily:,}; {', '.join(monthly)}",
        "",
        f"{ledger / max(1, daily):.1f}x",
        "",
        INFO,
        notes="DailyUsage keeps 9 dimensions per local day, so it compresses the ledger only "
        "where events repeat the same user, agent, model and feature on a day; reports read "
        "the narrowest rollup that holds what they group and filter by (credits.rollups), "
        "monthly rows for whole months",
    )


# --- 8. The usage query API --------------------------------------------------------------------

USAGE_PATH = "/api/v1/usage/"
# Each query the figure times: hours read the hourly rollup, days and months the daily ones.
USAGE_QUERIES = (
    ("user,model per hour, last 24 h", "window=hour&group_by=user,model"),
    ("agent per day, last 30 days", "window=day&group_by=agent"),
    ("environment,product per month, last 12 months", "window=month&group_by=environment,product"),
)


def usage_api(settings: Settings) -> list[Row]:
    """p50 / p95 of ``GET /api/v1/usage/`` for the busiest subscription's admin, a page of
    JSON each: it reads rollups only, so the p95 should stay flat from 1M to 10M events
    (compare this row across ``--events`` runs)."""
    figure = "8 Usage query API"
    target = "p95 < 500 ms, flat from 1M to 10M events"
    if not resolves(USAGE_PATH):
        return [not_built(figure, "GET /api/v1/usage/", target, USAGE_PATH)]
    subscription_id = settings.subscription_ids[0]
    rows = []
    with admin_client(subscription_id, "usage") as client:
        for name, query in USAGE_QUERIES:
            url = f"{USAGE_PATH}?{query}&subscription={subscription_id}&format=json"
            timings, status = _time_http(client, url, settings.repeats)
            p50, p95 = percentile(timings, 0.5) * 1000, percentile(timings, 0.95) * 1000
            rows.append(
                Row(
                    figure,
                    f"{name}: p50 / p95 ms",
                    f"{p50:.0f} / {p95:.0f} (HTTP {status})",
                    "",
                    "",
                    target,
                    PASS if status == 200 and p95 < 500 else SHORT,
                    details={"events": settings.events, "p95_ms": p95, "query": query},
                )
            )
    return rows
