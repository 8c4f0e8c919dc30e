"""The benchmark loader builds the narrow rollups with set-based SQL; they equal the product's
own rebuild from the ledger (local days and months from ``AT TIME ZONE``, latency buckets
from ``width_bucket``)."""

import pytest
from django.db import connection

from accounts.models import Subscription
from bench.generate import generate
from credits.models import (
    AgentRollup,
    ModelRollup,
    PersonRollup,
    ProductRollup,
    SubscriptionRollup,
)
from credits.rollups import rebuild_rollups
from tests.credits.references import rollup_rows

pytestmark = pytest.mark.django_db

NARROW = (PersonRollup, AgentRollup, ModelRollup, ProductRollup, SubscriptionRollup)


def test_the_loaders_narrow_rollups_equal_the_rebuild():
    connection.ensure_connection()
    generated = generate(
        connection.connection,
        events=2000,
        subscriptions=3,
        commit=False,
        progress=lambda message: None,
    )

    for subscription in Subscription.objects.filter(pk__in=generated.subscription_ids):
        loaded = rollup_rows(subscription, NARROW)
        assert all(loaded.values())
        rebuild_rollups(subscription=subscription)
        assert rollup_rows(subscription, NARROW) == loaded
