"""A prepared serializer (fields bound once per process) answers as a fresh one would."""

import pytest
from rest_framework.exceptions import ValidationError

from core.serializers import Prepared
from credits.api import BalanceSerializer, UsageInputSerializer
from credits.selectors import ZERO, Balance, GrantStatus, KeyBudgetStatus, LimitStatus
from tests import factories
from tests.factories import utc

VALID = {
    "idempotency_key": "op-1",
    "environment": "7d1b0a5e-0000-4000-8000-000000000000",
    "product": "ai-agent",
    "credits": "1.5",
}


@pytest.mark.parametrize(
    "data",
    [
        VALID,
        {**VALID, "user": "carol@acme.example", "timestamp": "2026-11-23T10:00:00+01:00"},
        {**VALID, "credits": "-1", "user": "not an email", "status": "sideways"},
        {**VALID, "timestamp": "2026-11-23T10:00:00", "input_tokens": -3},
        {**VALID, "credit": "1"},
        {},
        None,
        [VALID],
        "text",
    ],
)
def test_validation_gives_what_is_valid_and_errors_give(data):
    fresh = UsageInputSerializer(data=data)
    prepared = Prepared(UsageInputSerializer)

    if fresh.is_valid():
        assert prepared.validate(data) == fresh.validated_data
        assert prepared.validate(data) == fresh.validated_data  # and again, same instance
    else:
        with pytest.raises(ValidationError) as refused:
            prepared.validate(data)
        assert refused.value.detail == fresh.errors
        assert refused.value.get_codes() == ValidationError(fresh.errors).get_codes()


def test_output_gives_what_data_gives(db):
    subscription = factories.SubscriptionFactory(name="Acme")
    read = Balance(
        subscription=subscription,
        period_start=utc(2026, 11, 1),
        period_end=utc(2026, 12, 1),
        next_reset=utc(2026, 12, 1),
        days_until_reset=8,
        base_allocation=subscription.base_allocation,
        used=subscription.base_allocation,
        excess_allowance=ZERO,
        excess_used=ZERO,
        limit_mode=subscription.limit_mode,
        grants=GrantStatus(ZERO, ZERO, ZERO),
        user=LimitStatus(limit=None, used=ZERO),
        api_key=KeyBudgetStatus(limit=ZERO, used=ZERO, id="abcd1234"),
    )

    assert Prepared(BalanceSerializer).represent(read) == BalanceSerializer(read).data
