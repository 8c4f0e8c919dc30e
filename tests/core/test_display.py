"""One look: one credit format, one time format (the zone named) and one set of design tokens,
seen through the admin's lists, the favicon and the stylesheets the pages link."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from accounts.models import Role
from core.display import design_tokens, format_credits, format_moment, format_money
from credits.models import BillingPeriod
from tests import factories
from tests.credits.test_admin_ledger import LEDGER, period_of, record

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("9605.7501"), "9,605.7501"),
        (Decimal("12345.25"), "12,345.2500"),
        (Decimal("1123.429"), "1,123.4290"),
        (Decimal("1000"), "1,000.0000"),
        (Decimal("0.0025"), "0.0025"),
        (Decimal("0"), "0.0000"),
        (Decimal("-0.00004"), "0.0000"),
        (Decimal("-0.00001"), "0.0000"),
        (Decimal("-2.5"), "-2.5000"),
        (Decimal("-1.5000"), "-1.5000"),
        (None, "—"),
    ],
)
def test_credits_have_four_places_and_thousands_separators(value, expected):
    """Always four places, so that the decimals of a column line up (the pages' ``credits``
    filter is this function)."""
    assert format_credits(value) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal("1234.50"), "EUR", "EUR 1,234.50"),
        (Decimal("0.00"), "EUR", "EUR 0.00"),
        (Decimal("-0.00"), "EUR", "EUR 0.00"),
        (Decimal("-12.30"), "USD", "USD -12.30"),
        (Decimal("1500"), "JPY", "JPY 1,500"),  # no minor unit
        (Decimal("1.234"), "BHD", "BHD 1.234"),
        (None, "EUR", "—"),  # no price: no cost, never a zero
        (Decimal("1.00"), None, "—"),
    ],
)
def test_money_keeps_its_currencys_places_and_names_it(amount, currency, expected):
    assert format_money(amount, currency) == expected


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Prague", "5 Dec 2026, 16:45 CET"),
        ("America/New_York", "5 Dec 2026, 10:45 EST"),
        ("UTC", "5 Dec 2026, 15:45 UTC"),
    ],
)
def test_a_moment_is_written_in_the_zone_and_names_it(zone, expected):
    assert format_moment(datetime(2026, 12, 5, 15, 45, tzinfo=UTC), zone) == expected


def test_the_ledger_lists_local_times_with_the_zone_and_fixed_decimals(client, world):
    record(
        world.environment,
        user=world.member,
        credits="1234.5",
        timestamp=factories.utc(2026, 7, 5, 15, 45),  # summer: Prague is UTC+2
    )
    client.force_login(world.admin)

    content = client.get(LEDGER).content.decode()

    assert '<th class="field-time"><a href=' in content
    assert ">5 Jul 2026, 17:45 CEST</a>" in content
    assert '<td class="field-credits_amount">1,234.5000</td>' in content
    assert '<td class="field-excess_amount">0.0000</td>' in content


def test_each_ledger_row_is_in_its_own_subscriptions_zone(client, world):
    """Platform staff see several subscriptions at once: each row names its own zone."""
    world.other_subscription.timezone = "America/New_York"
    world.other_subscription.save()
    moment = factories.utc(2026, 12, 5, 15, 45)
    record(world.environment, user=world.member, timestamp=moment)
    record(world.foreign_environment, user=world.outsider, timestamp=moment)
    client.force_login(factories.UserFactory(is_staff=True, is_superuser=True))

    content = client.get(LEDGER).content.decode()

    assert ">5 Dec 2026, 16:45 CET</a>" in content
    assert ">5 Dec 2026, 10:45 EST</a>" in content
    assert '<th scope="col" class="sortable column-subscription' in content


def test_an_admin_of_one_subscription_gets_no_subscription_column(client, world):
    record(world.environment, user=world.member)
    client.force_login(world.admin)

    content = client.get(LEDGER).content.decode()

    assert "column-subscription" not in content
    for column in ("time", "actor", "environment", "product", "agent", "model", "status"):
        assert f"column-{column}" in content
    assert "column-credits_amount" in content and "column-excess_amount" in content


def test_billing_periods_have_thousands_separators(client, world):
    world.subscription.base_allocation = Decimal("60000")
    world.subscription.save()
    period = period_of(world.subscription, factories.utc(2026, 11, 14))
    BillingPeriod.objects.filter(pk=period.pk).update(credits_used=Decimal("9605.7501"))
    client.force_login(world.admin)

    content = client.get(reverse("admin:credits_billingperiod_changelist")).content.decode()

    assert '<td class="field-credits_used_amount">9,605.7501</td>' in content
    assert '<td class="field-credits_remaining">50,394.2499</td>' in content


def test_other_admin_lists_name_the_subscriptions_zone(client, world):
    """Django's own datetime columns: in the admin's subscription's zone, named."""
    world.subscription.timezone = "America/New_York"
    world.subscription.save()
    client.force_login(world.admin)
    membership = world.member.memberships.get()
    membership.created_at = factories.utc(2026, 12, 5, 15, 45)
    membership.save()

    content = client.get(reverse("admin:accounts_membership_changelist")).content.decode()

    assert "5 Dec 2026, 10:45 EST" in content


def test_the_admin_links_the_tokens_the_theme_and_the_favicon(client, world):
    client.force_login(world.admin)

    content = client.get(reverse("admin:index")).content.decode()

    assert "/static/creditdesk/tokens.css" in content
    assert "/static/creditdesk/admin-theme.css" in content
    assert 'rel="icon" href="/static/creditdesk/favicon.ico"' in content


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_every_base_template_links_the_favicon_and_the_tokens(client, path):
    content = client.get(path).content.decode()

    assert 'rel="icon" href="/static/creditdesk/favicon.ico"' in content
    assert "/static/creditdesk/tokens.css" in content


def test_favicon_ico_is_served(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response.url == "/static/creditdesk/favicon.ico"
    with open(finders.find("creditdesk/favicon.ico"), "rb") as icon:
        assert icon.read(4) == b"\x00\x00\x01\x00"  # an ICO file


def test_the_emails_read_the_same_tokens_as_the_stylesheets():
    tokens = design_tokens()

    assert tokens["brand"] == "#1d4ed8"
    assert tokens["email_width"] == "600px"
    assert {"text", "muted", "border", "bg", "surface", "header", "font"} <= tokens.keys()
    with open(finders.find("reports/usage.css")) as sheet:
        assert "var(--cd-brand)" in sheet.read()


def test_celery_beat_screens_are_for_platform_staff_only(client, world):
    client.force_login(world.admin)

    index = client.get(reverse("admin:index")).content.decode()

    assert "Periodic tasks" not in index and "django_celery_beat" not in index
    response = client.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    assert response.status_code == 403
    client.force_login(factories.UserFactory(is_staff=True, is_superuser=True))
    assert "Periodic tasks" in client.get(reverse("admin:index")).content.decode()


def test_a_manager_or_member_gets_no_admin_list(client, world):
    for persona in (world.manager, world.member):
        client.force_login(persona)
        response = client.get(LEDGER)
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")


def test_the_admin_of_another_subscription_sees_none_of_its_rows(client, world):
    record(world.environment, user=world.member, credits="1234.5")
    factories.membership(
        factories.UserFactory(), Role.MEMBER, environment=world.foreign_environment
    )
    client.force_login(world.outsider)

    content = client.get(LEDGER).content.decode()

    assert "1,234.5000" not in content and world.member.email not in content


def test_the_detail_pages_use_the_same_formats(client, world):
    event = record(
        world.environment,
        user=world.member,
        credits="1234.5",
        timestamp=factories.utc(2026, 12, 5, 15, 45),
    )
    client.force_login(world.admin)

    event_page = client.get(
        reverse("admin:credits_creditevent_change", args=[event.pk])
    ).content.decode()
    period_page = client.get(
        reverse("admin:credits_billingperiod_change", args=[event.period.pk])
    ).content.decode()

    assert "1,234.5000" in event_page and "5 Dec 2026, 16:45 CET" in event_page
    assert "1 Dec 2026, 00:00 CET" in period_page  # the period's start, in Prague


def test_report_schedules_name_the_zone_of_their_send_time(client, world):
    from reports.models import ReportSchedule

    ReportSchedule.objects.create(
        subscription=world.subscription,
        created_by=world.admin,
        name="Weekly",
        recipients=["finance@acme.example"],
    )
    client.force_login(world.admin)

    content = client.get(reverse("admin:reports_reportschedule_changelist")).content.decode()

    assert "s at 08:00 (Europe/Prague)" in content
