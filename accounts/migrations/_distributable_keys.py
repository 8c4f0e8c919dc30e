"""The operations of the three apps' ``distributable_keys`` migrations, built from their tables.

Part of the migration history, not live code: the loader skips modules starting with ``_``, and
nothing outside the migrations imports this one. Change it only together with a new migration.
"""

from django.db import migrations, models


def fk(to, on_delete, **options):
    """A foreign key without a database constraint: 0004_tenant_keys adds the composite one."""
    return models.ForeignKey(db_constraint=False, on_delete=on_delete, to=to, **options)


def subscription_column(app, model, parent_table, parent_column, editable):
    """Add ``subscription_id``, copy it from the parent row, then make it required."""

    def field(**null):
        return models.ForeignKey(
            db_index=False,
            on_delete=models.CASCADE,
            related_name="+",
            to="accounts.subscription",
            editable=editable,
            **null,
        )

    return [
        migrations.AddField(model_name=model, name="subscription", field=field(null=True)),
        migrations.RunSQL(
            "SET CONSTRAINTS ALL IMMEDIATE; "
            f"UPDATE {app}_{model} t SET subscription_id = p.subscription_id FROM {parent_table} p "
            f"WHERE p.id = t.{parent_column}; "
            "SET CONSTRAINTS ALL DEFERRED",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(model_name=model, name="subscription", field=field()),
    ]


def operations(*, dropped, subscription_columns, altered, added):
    """Unique constraints that gain the subscription are dropped first and added back last."""
    return [
        *(migrations.RemoveConstraint(model_name=model, name=name) for model, name in dropped),
        *(op for column in subscription_columns for op in subscription_column(*column)),
        *(
            migrations.AlterField(model_name=model, name=name, field=field)
            for model, name, field in altered
        ),
        *(
            migrations.AddConstraint(
                model_name=model, constraint=models.UniqueConstraint(name=name, **options)
            )
            for model, name, options in added
        ),
    ]
