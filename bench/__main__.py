"""``bench/run``: set up the bench database, load data, measure every figure, print the table.

Run it through ``bench/run`` (which prepares the venv and the environment), e.g.::

    bench/run                          # 1,000,000 events, every figure
    bench/run --quick                  # ~50k events, short runs: a smoke run of a few minutes
    bench/run --events 10000000        # the 10M data set
    bench/run --only ingestion,batch   # some figures; the data set is reused when it matches
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

FIGURES = ("ingestion", "batch", "contention", "export", "reports", "pages", "reset", "usage")
TITLES = dict(
    zip(
        FIGURES,
        (
            "1 Single-event ingestion",
            "2 Batch ingestion",
            "3 Hard limit under contention",
            "4 CSV export",
            "5 Usage reports",
            "6 Pages",
            "7 Month-start reset",
            "8 Usage query API",
        ),
        strict=True,
    )
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="ledger rows to load (default 1,000,000)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: ~50k events, short measurements"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures: {','.join(FIGURES)}"
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="recreate the database even if it holds a matching data set",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 2),
        help="gunicorn workers for the ingestion figures",
    )
    parser.add_argument("--clients", type=int, help="concurrent clients (default 4 per worker)")
    parser.add_argument("--duration", type=float, help="seconds per throughput measurement")
    parser.add_argument("--export-rows", type=int, help="rows of the export figure")
    parser.add_argument(
        "--reset-subscriptions",
        type=int,
        help="subscriptions of the month-start figure (default 100,000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of the server into bench/results/",
    )
    parser.add_argument(
        "--repeats", type=int, help="requests per report and page measurement (default 20)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default="bench/results/latest.json")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    return args


def settings_from(args):
    from bench.figures import Settings

    quick = args.quick
    return Settings(
        events=args.events or (50_000 if quick else 1_000_000),
        quick=quick,
        workers=args.workers,
        clients=args.clients or 4 * args.workers,
        duration=args.duration or (8.0 if quick else 30.0),
        batch_size=100 if quick else 1000,
        batch_clients=2,
        contention_clients=50,
        contention_room=150 if quick else 2000,
        export_rows=args.export_rows or (50_000 if quick else 1_000_000),
        reset_subscriptions=args.reset_subscriptions or (1_000 if quick else 100_000),
        repeats=args.repeats or (5 if quick else 20),
        profile=args.profile,
        seed=args.seed,
        now=datetime.now(UTC),
    )


def prepare(settings, *, reload: bool) -> dict:
    """The database with the data set asked for: reused if it matches, else made anew."""
    from bench import database
    from bench.generate import generate

    wanted = {"events": settings.events, "seed": settings.seed, "version": _dataset_version()}
    facts = None if reload else database.dataset()
    if facts and all(facts.get(key) == value for key, value in wanted.items()):
        print(
            f"==> Reusing {database.name()}: {facts['events']:,} events loaded "
            f"{facts['loaded_at']}",
            flush=True,
        )
        _migrate()
        return facts
    print(f"==> Creating {database.name()}", flush=True)
    database.recreate()
    _migrate()
    with database.connect() as connection:
        generated = generate(connection, events=settings.events, seed=settings.seed)
    facts = {
        **wanted,
        "subscription_ids": generated.subscription_ids,
        "seconds": round(generated.seconds, 1),
        "loaded_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    database.remember(facts)
    return facts


def _dataset_version() -> str:
    """Changes with the generator and the migrations: a data set loaded before either changed
    (a new rollup table, say) is loaded again rather than measured half-derived."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256((root / "bench" / "generate.py").read_bytes())
    for migration in sorted(root.glob("*/migrations/0*.py")):
        digest.update(migration.name.encode())
    return digest.hexdigest()[:12]


def _migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)


def main(argv: list[str]) -> int:
    args = parse(argv)
    # A terminated run still stops the gunicorn it started (the servers are context managers).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import django

    django.setup()
    from bench import database, report
    from bench.figures import ingestion, reading, reset

    settings = settings_from(args)
    context = {
        "started": report.now_text(),
        "machine": report.machine(),
        "revision": report.git_revision(),
        "database": database.name(),
        "quick": settings.quick,
    }
    facts = prepare(settings, reload=args.reload)
    settings.subscription_ids = facts["subscription_ids"]
    context.update(
        events=settings.events,
        generation_seconds=facts.get("seconds"),
        postgresql=database.postgresql_version(),
    )

    figures = {
        "ingestion": ingestion.single_events,
        "batch": ingestion.batches,
        "contention": ingestion.contention,
        "export": reading.export,
        "reports": lambda s: [*reading.reports(s), reading.rollup_compression(s)],
        "pages": reading.pages,
        "reset": reset.reset,
        "usage": reading.usage_api,
    }
    rows = []
    for name in args.only.split(","):
        print(f"==> Figure: {name}", flush=True)
        started = time.monotonic()
        try:
            produced = figures[name](settings)
        except Exception as error:
            traceback.print_exc()
            produced = [report.failed(TITLES[name], error)]
        for row in produced:
            print(
                f"    {row.metric}: {row.product} vs {row.baseline or '-'} -> {row.status}",
                flush=True,
            )
        print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
        rows.extend(produced)

    table = report.markdown(rows, context)
    print()
    print(table)
    report.write_json(Path(args.json), rows, context)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
