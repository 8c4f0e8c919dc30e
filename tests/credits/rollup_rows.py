"""Rollup rows in a form two derivations can be compared in."""

import json


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
