"""Monthly statements: the API (JSON and CSV), the admin page, the monthly email and the
``statement.closed`` event, each checked against the ledger to the minor unit.

The data is ``record_november`` (Acme, Europe/Prague, soft mode with a small allocation so
that November has excess), priced by its plan from 1 October and by its own price from
15 November 12:00 UTC: November's base and excess credits are each two lines.
"""

import csv
import io
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.models import Subscription
from core.display import format_money
from credits import grants
from credits.models import (
    BillingPeriod,
    CreditEvent,
    CreditGrant,
    WebhookDelivery,
    WebhookEndpoint,
)
from credits.pricing import price_at
from reports import tasks
from reports.models import ReportSchedule
from reports.services import save_schedule
from tests import factories
from tests.factories import utc
from tests.reports.recorder import logged_in, record_november

pytestmark = pytest.mark.django_db

CHANGE = utc(2026, 11, 15, 12)  # Acme's own price from then on
DECEMBER = utc(2026, 12, 5, 10)  # November closed (its grace window ended 2 Dec, 23:00 UTC)
CENT = Decimal("0.01")


@pytest.fixture
def priced(world):
    """Acme priced by its plan from October, then by its own price from ``CHANGE``; soft mode
    with 10 credits a month, so that November goes into excess."""
    Subscription.objects.filter(pk=world.subscription.pk).update(
        base_allocation=Decimal(10),
        limit_mode=Subscription.LimitMode.SOFT,
        excess_allowance=Decimal(1000),
    )
    world.subscription.refresh_from_db()
    with time_machine.travel(utc(2026, 9, 1), tick=False):
        factories.plan_price(
            Subscription.Plan.PRO,
            credit_price="0.125",
            excess_price="0.333333",
            effective_from=utc(2026, 10, 1),
        )
        factories.subscription_price(
            world.subscription, credit_price="0.2", excess_price="0.55", effective_from=CHANGE
        )
    return world


@pytest.fixture
def november(priced):
    return record_november(priced)


def statement(user, month="2026-11", *, at=DECEMBER, **params):
    with time_machine.travel(at, tick=False):
        return logged_in(user).get(f"/api/v1/statements/{month}/", params)


def ok(response) -> dict:
    assert response.status_code == 200, response.content
    return response.json()


def money(value) -> Decimal:
    return Decimal(value).quantize(CENT, ROUND_HALF_EVEN)


def ledger_by_price(subscription, start, end) -> dict:
    """The ledger's usage in [start, end) by the price in effect at each event: base and
    excess credits and the summed unrounded cost, computed here from the rows themselves."""
    sums = defaultdict(lambda: {"base": Decimal(0), "excess": Decimal(0), "cost": Decimal(0)})
    for event in CreditEvent.objects.filter(
        subscription=subscription, timestamp__gte=start, timestamp__lt=end
    ):
        terms = price_at(subscription, event.timestamp)
        key = (terms.credit_price, terms.excess_price)
        sums[key]["base"] += event.credits - event.grant_credits - event.excess_credits
        sums[key]["excess"] += event.excess_credits
        sums[key]["cost"] += event.cost
    return sums


def test_the_statement_equals_the_ledger_line_by_line_and_in_total(november):
    world = november.world
    period = BillingPeriod.objects.get(subscription=world.subscription, start=utc(2026, 10, 31, 23))

    body = ok(statement(world.admin))

    ledger = ledger_by_price(world.subscription, period.start, period.end)
    assert len(ledger) == 2  # the plan's price, then Acme's own
    expected_lines = []
    for (credit_price, excess_price), sums in ledger.items():
        # The ledger's cost is the lines' credits at their prices, unrounded.
        assert sums["cost"] == sums["base"] * credit_price + sums["excess"] * excess_price
        expected_lines.append(("base", sums["base"], credit_price))
        if sums["excess"]:
            expected_lines.append(("excess", sums["excess"], excess_price))
    lines = [line for line in body["lines"] if line["kind"] in ("base", "excess")]
    assert sorted(
        (line["kind"], Decimal(line["credits"]), Decimal(line["unit_price"])) for line in lines
    ) == sorted(expected_lines)
    for line in lines:
        assert Decimal(line["amount"]) == money(
            Decimal(line["credits"]) * Decimal(line["unit_price"])
        )
    assert [line["kind"] for line in body["lines"]].count("base") == 2
    assert body["currency"] == "EUR"
    assert body["closed"] is True
    assert Decimal(body["total"]) == sum(
        Decimal(line["amount"]) for line in body["lines"] if line["amount"] is not None
    )
    assert Decimal(body["total"]) == sum(
        money(credits * price) for _, credits, price in expected_lines
    )
    # November by hand: 18 credits, 10 of them base; the change at 15 Nov 12:00 UTC splits
    # them: 3.75 base at 0.125 before it; 6.25 base and 8 excess at Acme's prices after it.
    assert [
        (line["kind"], line["credits"], line["amount"])
        for line in body["lines"]
        if line["kind"] in ("base", "excess")
    ] == [
        ("base", "3.7500", "0.47"),  # 0.46875, rounded once
        ("base", "6.2500", "1.25"),
        ("excess", "8.0000", "4.40"),
    ]
    assert body["total"] == "6.12"


def test_csv_has_the_same_lines_and_the_total_last(november):
    world = november.world
    body = ok(statement(world.admin))

    response = statement(world.admin, format="csv")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="acme_statement_2026-11.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0] == [
        "Kind",
        "Description",
        "From",
        "To",
        "Credits",
        "Unit price",
        "Amount",
        "Currency",
    ]
    assert [(row[0], row[4], row[6]) for row in rows[1:-1]] == [
        (line["kind"], line["credits"] or "", line["amount"] or "") for line in body["lines"]
    ]
    assert rows[-1][0] == "total" and rows[-1][6] == body["total"] == "6.12"


def grant(world, kind, credits, reason, **fields) -> CreditGrant:
    """A grant of Acme's, usable from 5 November (``price`` in EUR for a top-up)."""
    if kind == CreditGrant.Kind.TOP_UP:
        fields["currency"] = "EUR"
    return CreditGrant.objects.create(
        subscription=world.subscription,
        kind=kind,
        credits=Decimal(credits),
        effective_at=utc(2026, 11, 5),
        reason=reason,
        created_by=world.admin,
        **fields,
    )


def test_grants_bought_and_used_are_lines(priced):
    world = priced
    with time_machine.travel(utc(2026, 11, 5), tick=False):
        grant(world, CreditGrant.Kind.TOP_UP, 50, "November top-up", price=Decimal("9.99"))
        grant(world, CreditGrant.Kind.BONUS, 5, "Welcome bonus")
    record_november(world)

    body = ok(statement(world.admin))

    bought = [line for line in body["lines"] if line["kind"] == "grant_bought"]
    assert [(line["credits"], line["amount"]) for line in bought] == [
        ("50.0000", "9.99"),
        ("5.0000", "0.00"),
    ]
    drawn = sum(
        CreditEvent.objects.filter(
            subscription=world.subscription, timestamp__gte=utc(2026, 10, 31, 23)
        ).values_list("grant_credits", flat=True),
        Decimal(0),
    )
    used = [line for line in body["lines"] if line["kind"] == "grants_used"]
    # The 8 credits beyond the allocation came from the grants, not from excess.
    assert drawn == Decimal(8)
    assert [line["credits"] for line in used] == ["8.0000"]
    assert "excess" not in [line["kind"] for line in body["lines"]]
    # 3.75 base at 0.125 (0.47), 6.25 at 0.2 (1.25), the top-up 9.99, the bonus 0.
    assert body["total"] == "11.71"
    assert Decimal(body["total"]) == sum(
        Decimal(line["amount"]) for line in body["lines"] if line["amount"] is not None
    )


def test_an_expired_grants_remainder_lapses_in_the_month_it_is_written(priced):
    world = priced
    with time_machine.travel(utc(2026, 11, 5), tick=False):
        # It expires before the 22nd, when the allocation runs out.
        grant(world, CreditGrant.Kind.BONUS, 5, "Trial bonus", expires_at=utc(2026, 11, 20, 9, 30))
    record_november(world)
    with time_machine.travel(utc(2026, 11, 23), tick=False):
        assert grants.lapse_expired_grants() == 1

    body = ok(statement(world.admin))

    (lapsed,) = [line for line in body["lines"] if line["kind"] == "lapsed"]
    assert (lapsed["credits"], lapsed["amount"]) == ("5.0000", None)
    assert "grants_used" not in [line["kind"] for line in body["lines"]]
    assert body["total"] == "6.12"  # the bonus was free and unused: as without it


def test_a_parent_rolls_up_its_sub_accounts_and_each_has_its_own(november):
    world = november.world
    labs, _ = november.record_sub_account(credits="2.5")  # on Pro: 0.3125 at the plan's price

    parent = ok(statement(world.admin))
    own = ok(statement(world.admin, subscription=labs.pk))

    assert own["total"] == "0.31"
    assert own["subscription"]["name"] == "Acme Labs"
    (line,) = [line for line in parent["lines"] if line["kind"] == "sub_account"]
    assert line["description"] == "Sub-account Acme Labs"
    assert line["amount"] == own["total"]
    assert Decimal(parent["total"]) == Decimal("6.12") + Decimal("0.31")


def test_a_sub_account_far_east_bills_its_own_local_month(november):
    """30 November 12:00 UTC is already 1 December, 01:00 in Auckland: December's."""
    world = november.world
    labs, _ = november.record_sub_account(
        at=utc(2026, 11, 30, 12), credits="2.5", timezone="Pacific/Auckland"
    )

    unknown = statement(world.admin, subscription=labs.pk)
    parent = ok(statement(world.admin))
    december = ok(statement(world.admin, "2026-12", at=utc(2027, 1, 5), subscription=labs.pk))

    assert unknown.status_code == 404  # Acme Labs had no November: its first event opened December
    (line,) = [line for line in parent["lines"] if line["kind"] == "sub_account"]
    assert line["amount"] == "0.00"
    assert december["period"]["start"] == "2026-11-30T11:00:00Z"  # midnight in Auckland (NZDT)
    assert december["total"] == "0.31"


def test_the_list_has_closed_periods_newest_first(november):
    world = november.world
    with time_machine.travel(utc(2027, 1, 10), tick=False):
        body = ok(logged_in(world.admin).get("/api/v1/statements/"))

    assert [row["month"] for row in body["results"]] == ["2026-11", "2026-10"]
    assert body["results"][0]["url"].endswith(
        f"/api/v1/statements/2026-11/?subscription={world.subscription.pk}"
    )
    assert body["results"][0]["closed_at"] == "2026-12-02T23:00:00Z"


@pytest.mark.parametrize("month", ["2026-13", "26-11", "2026-1", "november", "0001-12", "2026-00"])
def test_a_malformed_month_is_a_400(november, month):
    response = statement(november.world.admin, month)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_month"


def test_an_unknown_or_open_period_is_refused(november):
    world = november.world
    november.record(at=utc(2026, 12, 3, 9))  # opens December

    unknown = statement(world.admin, "2025-01")
    still_open = statement(world.admin, "2026-12")

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "statement_not_found")
    assert (still_open.status_code, still_open.json()["error"]["code"]) == (
        409,
        "period_not_closed",
    )


def test_another_subscription_and_lower_roles_get_nothing(november):
    world = november.world

    for response in (
        statement(world.outsider, subscription=world.subscription.pk),
        statement(world.outsider, format="csv", subscription=world.subscription.pk),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    with time_machine.travel(DECEMBER, tick=False):
        outsider_list = ok(logged_in(world.outsider).get("/api/v1/statements/"))
        foreign = logged_in(world.outsider).get(
            "/api/v1/statements/", {"subscription": world.subscription.pk}
        )
    assert outsider_list["results"] == []
    assert foreign.status_code == 404
    for person in (world.manager, world.member):
        for response in (
            statement(person),
            logged_in(person).get("/api/v1/statements/"),
        ):
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "permission_denied"
    _, secret = factories.api_key(world.subscription)
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    with time_machine.travel(DECEMBER, tick=False):
        assert key.get("/api/v1/statements/2026-11/").status_code == 403


def test_a_late_correction_goes_into_the_next_statement(november):
    world = november.world
    before = ok(statement(world.admin))
    with time_machine.travel(utc(2026, 12, 10), tick=False):
        factories.adjustment(world, "-2", "Refund of a failed run", timestamp=utc(2026, 11, 12, 9))
    november.record(at=utc(2026, 12, 11, 9), credits="1")

    after = ok(statement(world.admin))
    december = ok(statement(world.admin, "2026-12", at=utc(2027, 1, 5)))

    assert after == before  # November is closed: it does not change
    (late,) = [line for line in december["lines"] if line["kind"] == "late_correction"]
    assert late["credits"] == "-2.0000"
    # The refund was costed in November (at the plan's price, before the change).
    assert late["amount"] == str(money(Decimal(-2) * Decimal("0.125")))


def test_the_admin_page_shows_the_statement_to_admins_only(november, client):
    world = november.world
    body = ok(statement(world.admin))

    client.force_login(world.admin)
    with time_machine.travel(DECEMBER, tick=False):
        page = client.get("/admin/statements/", {"month": "2026-11"})
        foreign = client.get("/admin/statements/", {"subscription": world.other_subscription.pk})
    assert page.status_code == 200
    html = page.content.decode()
    # The exact total, and as people read it: money with its currency.
    total = format_money(Decimal(body["total"]), "EUR")
    assert f'data-figure="statement-total" data-value="{body["total"]}">{total}<' in html
    assert "Base credits at 0.125000 EUR per credit" in html
    assert foreign.status_code == 404

    for person in (world.outsider, world.manager):
        client.force_login(person)
        with time_machine.travel(DECEMBER, tick=False):
            response = client.get(
                "/admin/statements/", {"subscription": world.subscription.pk, "month": "2026-11"}
            )
        assert response.status_code in (302, 404)
        assert body["total"] not in response.content.decode()


@pytest.mark.usefixtures("eager_celery", "site_url")
def test_the_monthly_email_attaches_the_latest_closed_statement(
    november, mailoutbox, django_capture_on_commit_callbacks
):
    world = november.world
    with time_machine.travel(utc(2026, 10, 1), tick=False):
        save_schedule(
            schedule=ReportSchedule(
                subscription=world.subscription,
                created_by=world.admin,
                name="Monthly credits",
                frequency="monthly",
                recipients=["finance@acme.example"],
            ),
            actor=world.admin,
        )
    due = utc(2027, 1, 1, 7, 5)  # December's report: December is still in its grace window
    with time_machine.travel(due, tick=False), django_capture_on_commit_callbacks(execute=True):
        tasks.dispatch_due_reports()

    (email,) = mailoutbox
    attachments = {
        part.get_filename(): part.get_payload(decode=True)
        for part in email.message().walk()
        if part.get_content_disposition() == "attachment"
    }
    expected = statement(world.admin, format="csv", at=due)
    assert attachments == {"acme_statement_2026-11.csv": b"".join(expected.streaming_content)}
    total = list(
        csv.reader(io.StringIO(attachments["acme_statement_2026-11.csv"].decode("utf-8-sig")))
    )[-1]
    assert total[6] == "6.12"


def test_statement_closed_is_published_once_per_period(
    november, django_capture_on_commit_callbacks
):
    world = november.world
    endpoint = WebhookEndpoint.objects.create(
        subscription=world.subscription, name="Finance", url="https://hooks.example/cd", secret="s"
    )
    WebhookEndpoint.objects.create(
        subscription=world.other_subscription,
        name="Globex",
        url="https://hooks.example/g",
        secret="t",
    )

    with time_machine.travel(utc(2026, 12, 2, 22, 59), tick=False):
        # November is not closed yet; October closed a month ago, too long for an event.
        assert tasks.announce_closed_statements() == 0
    with time_machine.travel(utc(2026, 12, 2, 23, 15), tick=False):
        with django_capture_on_commit_callbacks() as queued:
            closed = tasks.announce_closed_statements()
        again = tasks.announce_closed_statements()

    assert (closed, again) == (1, 0)
    assert len(queued) == 1
    november_event = WebhookDelivery.objects.get(
        event_type="statement.closed", payload__data__month="2026-11"
    )
    assert november_event.endpoint == endpoint
    body = ok(statement(world.admin))
    assert november_event.payload["data"]["total"] == body["total"] == "6.12"
    assert november_event.payload["data"]["currency"] == "EUR"
    assert november_event.payload["data"]["closed_at"] == "2026-12-02T23:00:00+00:00"
    assert not WebhookDelivery.objects.filter(subscription=world.other_subscription).exists()


def test_queries_are_bounded_whatever_the_number_of_sub_accounts(
    november, django_assert_max_num_queries
):
    world = november.world
    client = logged_in(world.admin)
    for number in range(4):
        factories.SubscriptionFactory(name=f"Labs {number}", parent=world.subscription)
        with time_machine.travel(DECEMBER, tick=False), django_assert_max_num_queries(13):
            assert client.get("/api/v1/statements/2026-11/").status_code == 200


def test_the_openapi_document_describes_statements_and_the_event():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()

    read = schema["paths"]["/api/v1/statements/{month}/"]["get"]
    assert set(read["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {"400", "401", "403", "404", "409"} <= set(read["responses"])
    assert "/api/v1/statements/" in schema["paths"]
    line = schema["components"]["schemas"]["StatementLine"]["properties"]
    assert {"kind", "from", "to", "credits", "unit_price", "amount"} <= set(line)
    events = schema["components"]["schemas"]["WebhookEvent"]["oneOf"]
    assert {"$ref": "#/components/schemas/StatementClosedEvent"} in events


@pytest.mark.parametrize(
    ("path", "nothing"),
    [
        ("/admin/statements/", "statement"),
        ("/admin/reports/", "report"),
        ("/admin/credit-usage/", "credit usage"),
    ],
)
def test_staff_who_administer_no_subscription_are_told_so(client, path, nothing):
    client.force_login(factories.UserFactory(is_staff=True))
    page = client.get(path)
    assert page.status_code == 200
    assert f"You administer no subscription, so there is no {nothing} to show here." in (
        page.content.decode()
    )


def test_the_admin_page_says_what_is_wrong_with_a_month(november, client):
    client.force_login(november.world.admin)
    with time_machine.travel(DECEMBER, tick=False):
        malformed = client.get("/admin/statements/", {"month": "2026-13"})
        still_open = client.get("/admin/statements/", {"month": "2026-12"})
    assert malformed.status_code == 400
    assert "Give the month as YYYY-MM" in malformed.content.decode()
    assert still_open.status_code in (404, 409)
    html = still_open.content.decode()
    assert 'data-month="2026-11"' in html  # the closed months are still there to choose
    assert "statement-lines" not in html
