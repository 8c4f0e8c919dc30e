"""The columns the rollup tables were created with, for the migrations that create them.

Part of the migration history, not live code: the loader skips modules starting with ``_``, and
nothing outside the migrations imports this one. Change it only together with a new migration.
Each call returns new field instances: an operation must not share one with another.
"""

from decimal import Decimal

from django.db import models


def sums() -> list:
    """What every rollup adds up."""
    return [
        ("credits", models.DecimalField(decimal_places=4, default=Decimal("0"), max_digits=18)),
        (
            "excess_credits",
            models.DecimalField(decimal_places=4, default=Decimal("0"), max_digits=18),
        ),
        ("runs", models.PositiveIntegerField(default=0)),
        ("failed_runs", models.PositiveIntegerField(default=0)),
        ("input_tokens", models.PositiveBigIntegerField(default=0)),
        ("output_tokens", models.PositiveBigIntegerField(default=0)),
        ("latency_ms_total", models.PositiveBigIntegerField(default=0)),
        ("latency_samples", models.PositiveIntegerField(default=0)),
    ]


def narrow() -> list:
    """A narrow rollup's first columns: its id, sums, grain and day."""
    return [
        (
            "id",
            models.BigAutoField(
                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
            ),
        ),
        *sums(),
        ("grain", models.CharField(choices=[("day", "Day"), ("month", "Month")], max_length=5)),
        (
            "day",
            models.DateField(help_text="The local day, or the first day of the local month."),
        ),
    ]


def optional(to: str) -> models.ForeignKey:
    """A rollup's key to a dimension's row, empty when the usage had none."""
    return models.ForeignKey(
        blank=True,
        db_index=False,
        null=True,
        on_delete=models.CASCADE,
        related_name="+",
        to=to,
    )


def money() -> list:
    """What every rollup adds up since issue 21 (0017_money): grant credits and cost."""
    return [
        (
            "grant_credits",
            models.DecimalField(
                db_default=Decimal("0"), decimal_places=4, default=Decimal("0"), max_digits=18
            ),
        ),
        (
            "cost",
            models.DecimalField(
                db_default=Decimal("0"), decimal_places=10, default=Decimal("0"), max_digits=32
            ),
        ),
    ]
