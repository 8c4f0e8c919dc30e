"""Figures 1-3: recording events through the HTTP API against raw psycopg doing the same writes."""

from __future__ import annotations

import json
import os
import time
import uuid
from decimal import Decimal

from .. import database, profiling
from ..catalog import EventMaker, give_headroom, give_keys, load_targets
from ..load import HttpClient, LoadResult, run_threads
from ..raw import Refused, record_batch, record_one
from ..report import PASS, SHORT, Row
from ..server import CpuMeter, Server
from . import Settings

JSON = "application/json"


def _verdict(ratio: float, target: float) -> str:
    return PASS if ratio >= target else SHORT


def _latencies(result: LoadResult) -> str:
    summary = result.summary()["latency"]
    return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f} / {summary['p99_ms']:.1f}"


def _raw_connections(count: int) -> list:
    return [database.connect(autocommit=True) for _ in range(count)]


def _close(connections) -> None:
    for connection in connections:
        connection.close()


def _targets(settings: Settings) -> tuple[list, str]:
    """The first 20 subscriptions with room to spend and a key each, and a tag for this run's
    idempotency keys."""
    with database.connect() as connection:
        give_headroom(connection, settings.subscription_ids[:20], now=settings.now)
        targets = load_targets(connection, settings.subscription_ids[:20], now=settings.now)
    give_keys(targets)
    return targets, uuid.uuid4().hex[:8]


def _cpu_row(figure: str, product: LoadResult, product_cpu, baseline, baseline_cpu, **notes):
    """CPU time per event of the application and PostgreSQL, against the baseline's."""
    return Row(
        figure,
        "CPU ms per event: application + PostgreSQL",
        product_cpu.per_event_ms(product.units),
        baseline_cpu.per_event_ms(baseline.units),
        **notes,
    )


def _single_event_poster(makers: list[EventMaker], client: HttpClient):
    """A client thread's step: post the next event of its maker, counting a 201 as accepted."""

    def post(index, should_stop):
        event = makers[index].next()
        status, _, seconds = client.request(
            "POST",
            "/api/v1/events/",
            event.json(),
            {"Authorization": f"Api-Key {event.target.secret}", "Content-Type": JSON},
        )
        return status, seconds, int(status == 201)

    return post


def _warm_up(server: Server, client: HttpClient, settings: Settings, targets, run: str) -> None:
    """Single events from enough clients to reach every thread, until every worker is warm."""
    makers = [
        EventMaker(targets, run=f"warm-{run}-{i}", seed=settings.seed + 200 + i)
        for i in range(settings.clients)
    ]

    post = _single_event_poster(makers, client)

    duration = min(3.0, settings.duration / 4)
    server.warm_up(lambda: run_threads(post, clients=settings.clients, duration=duration))


def single_events(settings: Settings) -> list[Row]:
    figure = "1 Single-event ingestion"
    targets, run = _targets(settings)
    makers = [
        EventMaker(targets, run=f"http-{run}-{i}", seed=settings.seed + i)
        for i in range(settings.clients)
    ]

    with Server(workers=settings.workers, name="ingestion") as server:
        client = HttpClient(server.port)

        post = _single_event_poster(makers, client)

        _warm_up(server, client, settings, targets, run)
        with (
            profiling.maybe(settings, server, "ingestion", settings.duration),
            CpuMeter(server.worker_pids) as product_cpu,
        ):
            product = run_threads(post, clients=settings.clients, duration=settings.duration)

    raw_makers = [
        EventMaker(targets, run=f"raw-{run}-{i}", seed=settings.seed + i)
        for i in range(settings.clients)
    ]
    connections = _raw_connections(settings.clients)
    try:

        def record(index, should_stop):
            return 201, record_one(connections[index], raw_makers[index].next()), 1

        run_threads(record, clients=settings.clients, duration=min(3.0, settings.duration / 4))
        with CpuMeter(lambda: [os.getpid()]) as baseline_cpu:
            baseline = run_threads(record, clients=settings.clients, duration=settings.duration)
    finally:
        _close(connections)

    shape = f"{settings.clients} clients, {settings.workers} gunicorn workers"
    errors = {k: v for k, v in product.statuses.items() if k != 201}
    return [
        _rate_row(
            figure,
            shape,
            product,
            baseline,
            0.30,
            notes=f"non-201 responses: {errors}" if errors else "",
        ),
        Row(figure, "latency p50 / p95 / p99 (ms)", _latencies(product), _latencies(baseline)),
        _cpu_row(
            figure,
            product,
            product_cpu,
            baseline,
            baseline_cpu,
            notes="CPU time is what the load on the machine does not inflate much",
        ),
    ]


def batches(settings: Settings) -> list[Row]:
    figure = "2 Batch ingestion"
    size = settings.batch_size
    targets, run = _targets(settings)
    clients = settings.batch_clients
    duration = settings.duration * 1.5

    def batch_of(maker, target):
        return [maker.next(target) for _ in range(size)]

    makers = [
        EventMaker(targets, run=f"hb-{run}-{i}", seed=settings.seed + 100 + i)
        for i in range(clients)
    ]
    with Server(workers=settings.workers, name="batch") as server:
        client = HttpClient(server.port)

        def post(index, should_stop):
            maker = makers[index]
            target = targets[index % len(targets)]
            events = batch_of(maker, target)
            body = json.dumps({"events": [event.body for event in events]}).encode()
            status, data, seconds = client.request(
                "POST",
                "/api/v1/events/batch/",
                body,
                {"Authorization": f"Api-Key {target.secret}", "Content-Type": JSON},
            )
            accepted = json.loads(data).get("accepted", 0) if status == 200 else 0
            return status, seconds, accepted

        _warm_up(server, client, settings, targets, run)
        with (
            profiling.maybe(settings, server, "batch", duration),
            CpuMeter(server.worker_pids) as product_cpu,
        ):
            product = run_threads(post, clients=clients, duration=duration)

    raw_makers = [
        EventMaker(targets, run=f"rb-{run}-{i}", seed=settings.seed + 100 + i)
        for i in range(clients)
    ]
    connections = _raw_connections(clients)
    try:

        def record(index, should_stop):
            events = batch_of(raw_makers[index], targets[index % len(targets)])
            accepted, seconds = record_batch(connections[index], events)
            return 200, seconds, accepted

        with CpuMeter(lambda: [os.getpid()]) as baseline_cpu:
            baseline = run_threads(record, clients=clients, duration=duration)
    finally:
        _close(connections)

    shape = f"{size} per request, {clients} clients, {settings.workers} workers"
    return [
        _rate_row(
            figure,
            shape,
            product,
            baseline,
            0.50,
            notes="baseline: one transaction per batch, pipelined executemany + COPY",
        ),
        Row(figure, "seconds per batch p50 / p95", _seconds(product), _seconds(baseline)),
        _cpu_row(figure, product, product_cpu, baseline, baseline_cpu),
    ]


def _rate_row(
    figure: str, shape: str, product: LoadResult, baseline: LoadResult, target: float, *, notes
) -> Row:
    """Events per second of the product and of the baseline, and whether their ratio reaches
    ``target``."""
    ratio = product.rate() / baseline.rate() if baseline.rate() else 0.0
    return Row(
        figure,
        f"events/s ({shape})",
        f"{product.rate():.0f}",
        f"{baseline.rate():.0f}",
        f"{ratio:.0%}",
        f">= {target:.0%}",
        _verdict(ratio, target),
        notes=notes,
        details={"product": product.summary(), "baseline": baseline.summary(), "shape": shape},
    )


def _seconds(result: LoadResult) -> str:
    summary = result.summary()["latency"]
    return f"{summary['p50_ms'] / 1000:.2f} / {summary['p95_ms'] / 1000:.2f}"


def _contention_subscription(label: str, allocation: Decimal):
    """A hard-limit subscription with one member, one agent and the products enabled."""
    from accounts.models import Environment, Project, Role, Subscription, User
    from accounts.services import add_membership
    from credits.billing import period_for
    from credits.models import Agent, Product

    tag = uuid.uuid4().hex[:8]
    subscription = Subscription.objects.create(
        name=f"Bench contention {label} {tag}",
        plan="pro",
        timezone="UTC",
        base_allocation=allocation,
        limit_mode="hard",
    )
    project = Project.objects.create(subscription=subscription, name="Load")
    environment = Environment.objects.create(project=project, name="Production")
    user = User.objects.create_user(f"contention-{tag}@bench.example", "bench-password-x1")
    add_membership(user=user, subscription=subscription, role=Role.MEMBER, environment=environment)
    Agent.objects.create(subscription=subscription, name=f"agent-{tag}")
    for product in Product.objects.all():
        product.enabled_for.add(subscription)
    period_for(subscription=subscription, instant=settings_now())
    return subscription


def settings_now():
    from django.utils import timezone

    return timezone.now()


def _counters(subscription_id: int) -> dict:
    with database.connect() as connection:
        row = connection.execute(
            """
            SELECT p.credits_used,
                (SELECT COALESCE(SUM(credits), 0) FROM credits_creditevent
                 WHERE subscription_id = %(s)s),
                (SELECT COALESCE(SUM(credits), 0) FROM credits_dailyusage
                 WHERE subscription_id = %(s)s),
                s.base_allocation
            FROM credits_billingperiod p JOIN accounts_subscription s ON s.id = p.subscription_id
            WHERE p.subscription_id = %(s)s AND p.start <= now() AND p."end" > now()
            """,
            {"s": subscription_id},
        ).fetchone()
    return {
        "counter": row[0],
        "ledger": row[1],
        "rollups": row[2],
        "allocation": row[3],
        "overspend": max(Decimal(0), row[0] - row[3]),
    }


def contention(settings: Settings) -> list[Row]:
    figure = "3 Hard limit under contention"
    room = settings.contention_room
    allocation = Decimal(100_000)
    clients = settings.contention_clients

    product_subscription = _contention_subscription("http", allocation)
    with database.connect() as connection:
        (target,) = load_targets(connection, [product_subscription.pk], now=settings.now)
    give_keys([target])
    maker = EventMaker([target], run="fill", seed=settings.seed)
    fill = maker.next()
    fill.body["credits"] = str(allocation - room)
    done = [False] * clients
    makers = [EventMaker([target], run=f"c{i}", seed=i, credits="1") for i in range(clients)]
    headers = {"Authorization": f"Api-Key {target.secret}", "Content-Type": JSON}
    with Server(workers=settings.workers, name="contention") as server:
        client = HttpClient(server.port)
        status, body, _ = client.request("POST", "/api/v1/events/", fill.json(), headers)
        if status != 201:
            raise RuntimeError(f"filling the contention subscription failed: {status} {body!r}")

        def post(index, should_stop):
            if done[index]:
                return None
            status, _, seconds = client.request(
                "POST", "/api/v1/events/", makers[index].next().json(), headers
            )
            if status == 402:
                done[index] = True
            return status, seconds, int(status == 201)

        product = run_threads(post, clients=clients, duration=300.0)
    checked = _counters(product_subscription.pk)

    raw_subscription = _contention_subscription("raw", allocation)
    with database.connect() as connection:
        (raw_target,) = load_targets(connection, [raw_subscription.pk], now=settings.now)
    raw_clients = min(clients, 16)
    connections = _raw_connections(raw_clients)
    raw_done = [False] * raw_clients
    raw_makers = [
        EventMaker([raw_target], run=f"r{i}", seed=i, credits="1") for i in range(raw_clients)
    ]
    try:
        fill = EventMaker([raw_target], run="fill", seed=1).next()
        fill.credits = allocation - room
        record_one(connections[0], fill)

        def record(index, should_stop):
            if raw_done[index]:
                return None
            started = time.perf_counter()
            try:
                return 201, record_one(connections[index], raw_makers[index].next()), 1
            except Refused:
                raw_done[index] = True
                return 402, time.perf_counter() - started, 0

        baseline = run_threads(record, clients=raw_clients, duration=300.0)
    finally:
        _close(connections)
    raw_checked = _counters(raw_subscription.pk)

    def rate(result):
        seconds = getattr(result, "last_success_seconds", result.seconds) or result.seconds
        return result.units / seconds if seconds else 0.0

    consistent = checked["counter"] == checked["ledger"] == checked["rollups"]
    exact = product.units == room and checked["overspend"] == 0
    details = {
        "product": product.summary(),
        "baseline": baseline.summary(),
        "product_counters": {k: str(v) for k, v in checked.items()},
        "baseline_counters": {k: str(v) for k, v in raw_checked.items()},
    }
    return [
        Row(
            figure,
            f"accepted events/s ({clients} clients, {room} credits of room)",
            f"{rate(product):.0f}",
            f"{rate(baseline):.0f} ({raw_clients} connections)",
            f"{rate(product) / rate(baseline):.0%}" if rate(baseline) else "",
            "",
            details=details,
        ),
        Row(
            figure,
            "overspend (credits beyond the hard limit)",
            str(checked["overspend"]),
            str(raw_checked["overspend"]),
            "",
            "0, ledger = counters",
            PASS if exact and consistent else SHORT,
            notes=(
                f"accepted {product.units} of {room}; counter {checked['counter']}, "
                f"ledger {checked['ledger']}, rollups {checked['rollups']}; "
                f"responses {dict(product.statuses)}"
            ),
        ),
    ]
