"""PostgreSQL's own backend, told that a tenant table's primary key is not Django's.

In the database, every tenant table's primary key is (subscription_id, id) (see
``reports/migrations/0004_tenant_keys.py``), while Django's primary key stays ``id``. Django
groups an aggregate by a table's primary key alone and leaves out the other columns, which
PostgreSQL accepts only when that is the table's whole primary key. So for the models with a
``subscription_id`` column, Django groups by every selected column instead.
"""

from django.db.backends.postgresql import base, features


class DatabaseFeatures(features.DatabaseFeatures):
    def allows_group_by_selected_pks_on_model(self, model) -> bool:
        keyed_by_tenant = any(
            field.column == "subscription_id" for field in model._meta.concrete_fields
        )
        return not keyed_by_tenant and super().allows_group_by_selected_pks_on_model(model)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
