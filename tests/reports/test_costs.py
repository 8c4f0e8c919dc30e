"""Money in every surface: each report (JSON and CSV), the credit usage export, the usage API,
the admin's dashboard and the scheduled email carry cost; each total is the sum of its rounded
rows and equals the ledger's cost to the cent; a subscription without a price shows no cost;
other subscriptions and lower roles see nothing new.

The data is ``record_november`` (Acme, Europe/Prague, Pro plan). At one euro per credit every
event costs whole cents, so sums of rounded rows equal the ledger's exact cost; at a cent per
credit rows round, half to even.
"""

import csv
import io
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import time_machine
from django.db.models import Sum
from django.urls import reverse

from accounts.models import Subscription
from credits.models import CreditEvent, CreditGrant
from tests import factories
from tests.factories import utc
from tests.reports.recorder import EventRecorder, logged_in, record_november
from tests.reports.slugs import REPORT_SLUGS

pytestmark = pytest.mark.django_db

NOVEMBER = {"period": "2026-11"}
NOW = utc(2026, 11, 25, 11)  # Wednesday 25 November 2026, 12:00 in Prague
# November in Prague, in UTC.
NOVEMBER_START, NOVEMBER_END = utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)
EXPORT = "/api/v1/exports/credit-usage/"
CENT = Decimal("0.01")
JANUARY = utc(2026, 1, 1)


def price_plan(plan=Subscription.Plan.PRO, *, credit="1", excess="2", at=JANUARY):
    return factories.plan_price(plan, credit_price=credit, excess_price=excess, effective_from=at)


@pytest.fixture
def priced(world):
    """Acme's plan at one euro per credit (two per excess credit) since January."""
    return price_plan()


def get(client, url, **params):
    with time_machine.travel(NOW, tick=False):
        response = client.get(url, params)
    assert response.status_code == 200, response.content
    return response


def rows_of_csv(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def ledger_cost(subscription, start=NOVEMBER_START, end=NOVEMBER_END, **filters) -> Decimal:
    events = CreditEvent.objects.filter(
        subscription=subscription, timestamp__gte=start, timestamp__lt=end, **filters
    )
    return events.aggregate(total=Sum("cost"))["total"] or Decimal(0)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_EVEN)


# --- Reports ------------------------------------------------------------------------------


@pytest.mark.parametrize("report", REPORT_SLUGS)
def test_every_report_costs_what_the_ledger_costs_in_json_and_csv(world, priced, report):
    record_november(world)
    client = logged_in(world.admin)
    url = f"/api/v1/reports/{report}/"
    body = get(client, url, **NOVEMBER).json()
    rows = body["results"]
    ledger = ledger_cost(world.subscription)
    assert ledger == Decimal("18")  # 1.5 + 2.25 + 4 + 0.25 + 10 credits at one euro

    assert {row["currency"] for row in rows} == {"EUR"}
    assert Decimal(body["totals"]["cost"]) == sum(Decimal(row["cost"]) for row in rows) == ledger
    assert body["totals"]["currency"] == "EUR"
    for row in rows:  # credits by type add up on every row
        if "base_credits" in row:
            parts = ("base_credits", "grant_credits", "excess_credits")
            assert sum(Decimal(row[part]) for part in parts) == Decimal(row["credits_consumed"])

    csv_rows = rows_of_csv(get(client, url, format="csv", **NOVEMBER))
    assert sum(Decimal(row["cost"]) for row in csv_rows) == ledger
    assert all(
        row["cost"].count(".") == 1 and len(row["cost"].split(".")[1]) == 2 for row in csv_rows
    )


def test_a_row_is_rounded_once_half_to_even_and_the_total_adds_the_rows(world):
    price_plan(credit="0.01", excess="0.02")
    record_november(world)
    body = get(logged_in(world.admin), "/api/v1/reports/usage-by-user/", **NOVEMBER).json()

    costs = {row["user_email"]: row["cost"] for row in body["results"]}
    # carol 3.75 credits: 0.0375 -> 0.04; bob 4: 0.04; alice 10: 0.10; the key 0.25: 0.0025
    # -> 0.00 (half to even).
    assert costs == {
        "alice@acme.example": "0.10",
        "bob@acme.example": "0.04",
        "carol@acme.example": "0.04",
        "Backend": "0.00",
    }
    assert body["totals"]["cost"] == "0.18"
    assert cents(ledger_cost(world.subscription)) == Decimal("0.18")


def test_a_subscription_without_a_price_shows_no_cost_never_zero(world):
    price_plan(Subscription.Plan.PREMIUM)  # another plan's price
    record_november(world)
    client = logged_in(world.admin)

    body = get(client, "/api/v1/reports/usage-by-feature/", **NOVEMBER).json()
    assert {(row["cost"], row["currency"]) for row in body["results"]} == {(None, None)}
    assert (body["totals"]["cost"], body["totals"]["currency"]) == (None, None)
    csv_rows = rows_of_csv(
        get(client, "/api/v1/reports/usage-by-feature/", format="csv", **NOVEMBER)
    )
    assert {(row["cost"], row["currency"]) for row in csv_rows} == {("", "")}


def test_a_subscription_price_overrides_its_plans(world, priced):
    factories.subscription_price(
        world.subscription, credit_price="3", excess_price="4", effective_from=utc(2026, 2, 1)
    )
    record_november(world)
    body = get(logged_in(world.admin), "/api/v1/reports/usage-by-model/", **NOVEMBER).json()
    assert body["totals"]["cost"] == "54.00"  # 18 credits at three euros


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_read_the_same_figures_without_money(world, priced, persona):
    record_november(world)
    client = logged_in(getattr(world, persona))
    for report in ("usage-by-feature", "usage-by-model", "usage-by-member-feature-credit-type"):
        body = get(client, f"/api/v1/reports/{report}/", **NOVEMBER).json()
        assert body["results"]
        assert {(row["cost"], row["currency"]) for row in body["results"]} == {(None, None)}
        assert body["totals"]["cost"] is None


def test_another_subscriptions_admin_reads_no_cost_of_acme(world, priced):
    record_november(world)
    client = logged_in(world.outsider)
    with time_machine.travel(NOW, tick=False):
        response = client.get(
            "/api/v1/reports/usage-by-feature/", {"subscription": world.subscription.pk, **NOVEMBER}
        )
        own = client.get("/api/v1/reports/usage-by-feature/", NOVEMBER).json()
    assert response.status_code == 404
    assert own["results"] == [] and own["totals"]["cost"] is None  # Globex: no usage, no price


def test_the_credit_type_report_costs_base_grant_and_excess_apart(world):
    """Soft mode at 5 credits: carol's first 5 credits are base, the rest excess; a price
    change on 15 November sends the split to the ledger (each row at its own time)."""
    world.subscription.limit_mode = Subscription.LimitMode.SOFT
    world.subscription.base_allocation = Decimal(5)
    world.subscription.excess_allowance = Decimal(100)
    world.subscription.save()
    price_plan(credit="1", excess="2")
    recorder = EventRecorder(world)
    recorder.record(at=utc(2026, 11, 2, 9), credits="4", feature="chat")
    price_plan(credit="1", excess="3", at=utc(2026, 11, 15))
    recorder.record(at=utc(2026, 11, 3, 9), credits="3", feature="chat")  # 1 base, 2 excess
    recorder.record(at=utc(2026, 11, 20, 9), credits="2", feature="chat")  # excess at 3

    body = get(
        logged_in(world.admin), "/api/v1/reports/usage-by-member-feature-credit-type/", **NOVEMBER
    ).json()
    rows = {row["credit_type"]: row for row in body["results"]}
    assert rows["base"]["credits_consumed"] == "5.0000"
    assert rows["base"]["cost"] == "5.00"
    assert rows["excess"]["credits_consumed"] == "4.0000"
    assert rows["excess"]["cost"] == "10.00"  # 2 at 2 euros, 2 at 3
    assert body["totals"]["cost"] == "15.00" == f"{ledger_cost(world.subscription):.2f}"


# What each read costs; the pages' bounds are in test_pages.py. Money adds one query: a read
# without ?subscription= finds its default subscription first, then reads it with its prices
# by its id, so that the prices' statement is routed by the subscription id.
QUERIES = {
    "/api/v1/reports/usage-by-user/?period=2026-11": 8,
    "/api/v1/reports/usage-by-member-feature-credit-type/?period=2026-11": 5,
    "/api/v1/reports/usage-by-sub-account/?period=2026-11": 8,
    f"{EXPORT}?scope=subscription": 8,
    "/api/v1/usage/?group_by=user&window=day&from=2026-11-01&to=2026-11-30": 7,
}


def test_money_adds_one_query_at_most(world, priced, django_assert_max_num_queries):
    record_november(world)
    client = logged_in(world.admin)
    for url, queries in QUERIES.items():  # in this order: the first reads the session
        with time_machine.travel(NOW, tick=False), django_assert_max_num_queries(queries):
            assert client.get(url).status_code == 200


# --- The credit usage export ----------------------------------------------------------------


def test_the_export_costs_each_event_and_its_total_is_the_sum(world):
    price_plan(credit="0.01", excess="0.02")
    record_november(world)
    client = logged_in(world.admin)
    params = {"scope": "subscription"}

    csv_rows = rows_of_csv(get(client, EXPORT, format="csv", **params))
    body = get(client, EXPORT, page_size=500, **params).json()

    assert [row["Cost"] for row in csv_rows] == ["0.02", "0.02", "0.04", "0.00", "0.10"]
    assert [row["Cost"] for row in body["results"]] == [row["Cost"] for row in csv_rows]
    assert {row["Currency"] for row in csv_rows} == {"EUR"}
    assert body["totals"]["Cost"] == "0.18" and body["totals"]["Currency"] == "EUR"
    for row in csv_rows:
        parts = (Decimal(row[name]) for name in ("BaseCredits", "GrantCredits", "ExcessCredits"))
        assert sum(parts) == Decimal(row["Credits"])


def test_the_export_of_a_member_has_no_money(world, priced):
    record_november(world)
    rows = rows_of_csv(get(logged_in(world.member), EXPORT, scope="mine", format="csv"))
    assert rows and {(row["Cost"], row["Currency"]) for row in rows} == {("", "")}


# --- The usage API ---------------------------------------------------------------------------


def test_the_usage_api_costs_its_rows_for_admins_only(world, priced):
    record_november(world)
    params = {"group_by": "user", "window": "month", "from": "2026-11-01", "to": "2026-11-30"}
    body = get(logged_in(world.admin), "/api/v1/usage/", **params).json()
    assert sum(Decimal(row["cost"]) for row in body["results"]) == Decimal(body["totals"]["cost"])
    assert Decimal(body["totals"]["cost"]) == ledger_cost(world.subscription)

    split = get(logged_in(world.admin), "/api/v1/usage/", credit_type="base", **params).json()
    assert {row["cost"] for row in split["results"]} == {None}
    mine = get(logged_in(world.member), "/api/v1/usage/", **params).json()
    assert {row["cost"] for row in mine["results"]} == {None}


# --- The admin's dashboard and the emails ----------------------------------------------------


def test_the_dashboard_shows_spend_and_projects_it_at_this_pace(world, priced):
    record_november(world)
    with time_machine.travel(NOW, tick=False):
        response = logged_in(world.admin).get("/admin/credit-usage/")
    page = response.context["page"]
    assert str(page.spend) == "EUR 18.00"
    # 25 of November's 30 days elapsed (today counted whole): 18 / 25 * 30.
    assert str(page.projected_spend) == "EUR 21.60"
    html = response.content.decode()
    assert 'data-figure="spend">EUR 18.00<' in html
    assert 'data-figure="projected-spend">EUR 21.60<' in html
    # The products table's cost adds its rows.
    assert page.range_cost.amount == sum(row.cost.amount for row in page.products)


def test_a_dashboard_without_a_price_says_so(world):
    record_november(world)
    with time_machine.travel(NOW, tick=False):
        response = logged_in(world.admin).get("/admin/credit-usage/")
    assert 'data-figure="spend">—<' in response.content.decode()
    assert "No price is set" in response.content.decode()


def test_lower_roles_pages_show_no_money(world, priced):
    record_november(world)
    with time_machine.travel(NOW, tick=False):
        mine = logged_in(world.member).get("/usage/").content.decode()
        environment = logged_in(world.manager).get("/usage/environments/").content.decode()
    assert "EUR" not in mine and "EUR" not in environment


@pytest.mark.usefixtures("eager_celery", "site_url")
def test_the_monthly_email_shows_cost_beside_credits(
    world, priced, mailoutbox, django_capture_on_commit_callbacks
):
    from tests.reports.test_schedule_email import MONTHLY_DUE, make_schedule, run_beat

    record_november(world)
    make_schedule(
        world, frequency="monthly", recipients=["finance@acme.example"], created=utc(2026, 11, 2)
    )
    run_beat(MONTHLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    assert "Credits used: 18.0000\nCost: EUR 18.00\n" in email.body
    assert "1. alice@acme.example: 10.0000 (55.6%), EUR 10.00\n" in email.body
    assert "Cost <strong>EUR 18.00</strong>" in email.alternatives[0][0]


@pytest.mark.usefixtures("eager_celery", "site_url")
def test_the_email_of_a_project_managers_schedule_has_no_money(
    world, priced, mailoutbox, django_capture_on_commit_callbacks
):
    from tests.reports.test_schedule_email import WEEKLY_DUE, make_schedule, run_beat

    record_november(world)
    production = {"scope": "environment", "environment": world.environment}
    make_schedule(
        world, created_by=world.manager, recipients=["lead@outside.example"], **production
    )
    run_beat(WEEKLY_DUE, django_capture_on_commit_callbacks)

    (email,) = mailoutbox
    assert "Credits used: 4.0000\n" in email.body  # the week's, in Production
    assert "EUR" not in email.body and "EUR" not in email.alternatives[0][0]


@pytest.fixture
def granted(world, priced):
    """Hard mode at 5 credits with a 3-credit top-up: 4 credits, then 3 (1 base, 2 from the
    grant: the base allocation first)."""
    world.subscription.base_allocation = Decimal(5)
    world.subscription.save()
    CreditGrant.objects.create(
        subscription=world.subscription,
        kind=CreditGrant.Kind.TOP_UP,
        credits=Decimal(3),
        price=Decimal("2.50"),
        currency="EUR",
        effective_at=utc(2026, 11, 1),
        expires_at=utc(2026, 11, 30),
        reason="Top-up",
    )
    recorder = EventRecorder(world)
    recorder.record(at=utc(2026, 11, 2, 9), credits="4", feature="chat")
    recorder.record(at=utc(2026, 11, 3, 9), credits="3", feature="chat")


def test_grant_credits_are_a_row_of_their_own_that_costs_nothing_at_use(world, granted):
    body = get(
        logged_in(world.admin), "/api/v1/reports/usage-by-member-feature-credit-type/", **NOVEMBER
    ).json()
    rows = {row["credit_type"]: (row["credits_consumed"], row["cost"]) for row in body["results"]}
    assert rows == {"base": ("5.0000", "5.00"), "grant": ("2.0000", "0.00")}
    assert body["totals"]["cost"] == "5.00" == f"{ledger_cost(world.subscription):.2f}"
    feature = get(logged_in(world.admin), "/api/v1/reports/usage-by-feature/", **NOVEMBER).json()
    (chat,) = feature["results"]
    assert (chat["base_credits"], chat["grant_credits"], chat["cost"]) == (
        "5.0000",
        "2.0000",
        "5.00",
    )


def test_an_admins_page_of_a_member_shows_the_cost_of_the_range(world, priced):
    record_november(world)
    url = reverse("admin-credit-usage-member", args=[world.member.pk])
    with time_machine.travel(NOW, tick=False):
        html = logged_in(world.admin).get(url).content.decode()
    assert 'data-figure="range-cost">EUR 3.75<' in html  # carol's 3.75 credits


def test_the_dashboard_shows_the_grants_used_left_and_expiring(world, granted):
    with time_machine.travel(NOW, tick=False):
        html = logged_in(world.admin).get("/admin/credit-usage/").content.decode()
    assert 'data-figure="grants-remaining">1.0000<' in html
    assert 'data-figure="grants-used">2.0000<' in html
    assert 'data-figure="grants-expiring">1.0000<' in html  # on the 30th: within 7 days
    assert 'data-figure="spend">EUR 5.00<' in html  # the grant's credits cost nothing at use
