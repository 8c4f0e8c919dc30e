"""The credit ledger and balances in the admin: read-only, scoped, and cheap to list."""

from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import User
from credits.models import BillingPeriod, CreditEvent
from credits.periods import period_bounds
from tests import factories
from tests.admin_pages import admin_url

pytestmark = pytest.mark.django_db


LEDGER = reverse("admin:credits_creditevent_changelist")


def period_of(subscription, timestamp) -> BillingPeriod:
    bounds = period_bounds(timestamp, subscription.zone)
    period, _ = BillingPeriod.objects.get_or_create(
        subscription=subscription, start=bounds.start, defaults={"end": bounds.end}
    )
    return period


def record(environment, *, user=None, api_key=None, credits="2.5", **fields) -> CreditEvent:
    """A ledger row as the recording service would write it (without charging counters)."""
    subscription = environment.project.subscription
    timestamp = fields.pop("timestamp", factories.utc(2025, 3, 14, 10, 30))
    return CreditEvent.objects.create(
        subscription=subscription,
        period=period_of(subscription, timestamp),
        timestamp=timestamp,
        environment=environment,
        user=user,
        api_key=api_key,
        credits=Decimal(credits),
        **fields,
    )


@pytest.fixture
def events(world):
    api_key, _ = factories.api_key(world.subscription, name="Nightly translator")
    return {
        "by_member": record(world.environment, user=world.member, model="gpt-5-mini"),
        "by_key": record(world.environment, api_key=api_key, credits="7"),
        "of_globex": record(world.foreign_environment, user=world.outsider),
    }


def listed(client, **params) -> list:
    response = client.get(LEDGER, params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_each_admin_reads_only_their_own_ledger(client, world, events):
    client.force_login(world.admin)
    assert set(listed(client)) == {events["by_member"], events["by_key"]}

    client.force_login(world.outsider)
    assert listed(client) == [events["of_globex"]]


def test_another_subscriptions_event_does_not_open(client, world, events):
    client.force_login(world.outsider)

    response = client.get(admin_url(events["by_member"], "change"))

    assert response.status_code == 302
    assert response.url == reverse("admin:index")


def test_search_stays_inside_the_users_own_ledger(client, world, events):
    client.force_login(world.admin)
    assert listed(client, q="carol@acme.example") == [events["by_member"]]

    client.force_login(world.outsider)
    assert listed(client, q="carol@acme.example") == []


def test_the_actor_is_the_users_email_or_the_keys_name(client, world, events):
    client.force_login(world.admin)

    content = client.get(LEDGER).content.decode()

    assert '<td class="field-actor">carol@acme.example</td>' in content
    assert '<td class="field-actor">Nightly translator</td>' in content


def test_environment_filter_offers_only_the_users_own_environments(client, world, events):
    client.force_login(world.outsider)
    response = client.get(LEDGER)

    changelist = response.context["cl"]
    choices = {
        str(choice["display"])
        for spec in changelist.filter_specs
        for choice in spec.choices(changelist)
    }
    assert "Intranet / Production" in choices
    assert not {"Website / Production", "Website / Staging"} & choices


def test_environment_autocomplete_offers_only_the_users_own_environments(client, world):
    client.force_login(world.outsider)

    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "credits", "model_name": "creditevent", "field_name": "environment"},
    )

    assert [result["text"] for result in response.json()["results"]] == ["Intranet / Production"]


@pytest.mark.parametrize("persona", ["admin", "superuser"])
def test_the_ledger_is_read_only_for_everyone(client, world, events, persona):
    if persona == "superuser":
        client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))
    else:
        client.force_login(world.admin)
    event = events["by_member"]

    view = client.get(admin_url(event, "change"))
    change = client.post(admin_url(event, "change"), {"credits": "0"})

    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert change.status_code == 403
    assert client.get(reverse("admin:credits_creditevent_add")).status_code == 403
    assert client.post(admin_url(event, "delete"), {"post": "yes"}).status_code == 403
    assert "delete_selected" not in client.get(LEDGER).content.decode()
    event.refresh_from_db()
    assert event.credits == Decimal("2.5")


def test_listing_the_ledger_takes_a_fixed_number_of_queries(
    client, world, django_assert_max_num_queries
):
    """Forty events by forty actors, agents and products: still a handful of queries."""
    for n in range(20):
        user = factories.UserFactory()
        factories.membership(user, "member", environment=world.environment)
        api_key, _ = factories.api_key(world.subscription, name=f"Key {n}")
        product = factories.ProductFactory()
        agent = factories.AgentFactory(subscription=world.subscription)
        record(world.environment, user=user, product=product, agent=agent)
        record(world.other_environment, api_key=api_key, product=product, agent=agent)
    client.force_login(world.admin)

    with django_assert_max_num_queries(13):  # one reads the admin's subscriptions' time zones
        response = client.get(LEDGER)

    assert len(response.context["cl"].result_list) == 40


# --- Adjustments by platform staff -----------------------------------------------------------

ADJUST = reverse("admin:credits_creditevent_adjust")


@pytest.fixture
def platform_staff():
    return User.objects.create_superuser("root@creditdesk.example", "x")


def test_platform_staff_correct_usage_with_a_new_ledger_row(client, world, platform_staff):
    period = period_of(world.subscription, factories.utc(2025, 3, 14))
    BillingPeriod.objects.filter(pk=period.pk).update(credits_used=Decimal("10"))
    client.force_login(platform_staff)
    assert "Record adjustment" in client.get(LEDGER).content.decode()

    response = client.post(
        ADJUST,
        {
            "subscription": world.subscription.pk,
            "credits": "-2.5",
            "reason": "Refund: a failed batch was charged twice.",
            "timestamp": "2025-03-20 12:00",
        },
    )

    assert response.status_code == 302
    adjustment = CreditEvent.objects.get(kind=CreditEvent.Kind.ADJUSTMENT)
    assert adjustment.credits == Decimal("-2.5")
    assert adjustment.period == period
    assert adjustment.created_by == platform_staff
    assert adjustment.reason == "Refund: a failed batch was charged twice."
    period.refresh_from_db()
    assert period.credits_used == Decimal("7.5")


@pytest.mark.parametrize(
    ("credits", "error"),
    [
        ("0", "An adjustment of zero credits changes nothing."),
        ("-1", "This would take the period's usage below zero."),
    ],
)
def test_adjustment_mistakes_are_form_errors(client, world, platform_staff, credits, error):
    client.force_login(platform_staff)

    response = client.post(
        ADJUST, {"subscription": world.subscription.pk, "credits": credits, "reason": "Test"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["credits"] == [error]
    assert not CreditEvent.objects.exists()


def test_subscription_admins_do_not_record_adjustments(client, world):
    client.force_login(world.admin)

    assert "Record adjustment" not in client.get(LEDGER).content.decode()
    assert client.get(ADJUST).status_code == 403
    response = client.post(
        ADJUST, {"subscription": world.subscription.pk, "credits": "-5", "reason": "Mine"}
    )
    assert response.status_code == 403
    assert not CreditEvent.objects.exists()


# --- Balances -------------------------------------------------------------------------------


def test_balances_show_used_and_remaining_credits(client, world):
    period = period_of(world.subscription, factories.utc(2025, 3, 14))
    BillingPeriod.objects.filter(pk=period.pk).update(credits_used=Decimal("250"))
    period_of(world.other_subscription, factories.utc(2025, 3, 14))
    client.force_login(world.admin)

    response = client.get(reverse("admin:credits_billingperiod_changelist"))

    assert list(response.context["cl"].result_list) == [period]
    content = response.content.decode()
    assert '<td class="field-credits_used_amount">250.0000</td>' in content
    assert '<td class="field-credits_remaining">750.0000</td>' in content
    assert "March 2025" in content


def test_balances_are_read_only(client, world):
    period = period_of(world.subscription, factories.utc(2025, 3, 14))
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    assert client.post(admin_url(period, "change"), {"credits_used": "0"}).status_code == 403
    assert client.get(reverse("admin:credits_billingperiod_add")).status_code == 403


def test_another_subscriptions_balance_does_not_open(client, world):
    period = period_of(world.subscription, factories.utc(2025, 3, 14))
    client.force_login(world.outsider)

    assert client.get(admin_url(period, "change")).status_code == 302
