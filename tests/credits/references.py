"""What the rollups are checked against: their rows in a form two derivations can be compared
in, and PostgreSQL's ``percentile_cont`` in plain Python."""

import json
from decimal import Decimal


def rollup_rows(subscription, models) -> dict[str, list[str]]:
    """Every row of the rollup ``models`` for the subscription, without ids, in a comparable
    order."""
    rows = {}
    for model in models:
        fields = [f.attname for f in model._meta.concrete_fields if f.attname != "id"]
        values = model.objects.filter(subscription=subscription).values_list(*fields)
        rows[model.__name__] = sorted(
            json.dumps(row, default=str, sort_keys=True) for row in values
        )
    return rows


def percentile_cont(values: list[int], fraction: Decimal) -> Decimal:
    """The SQL standard's continuous percentile: linear interpolation between ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
