"""The usage pages through HTTP: the admin's "Credit usage", the project manager's environments
and every member's /usage/. Usage is recorded through the metering API, at frozen times, so the
ledger, rollups and counters are what production would hold; each page's figures are compared
with the ledger and with the balance API."""

import re
from datetime import datetime
from decimal import Decimal
from html import unescape
from urllib.parse import parse_qsl

import pytest
import time_machine
from django.db import connection
from django.db.models import Max, Sum
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import Role, Subscription
from credits.models import CreditEvent, CreditLimit
from reports import member_table
from tests import factories
from tests.factories import frozen_at, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 23, 10)  # 11:00 in Prague, the subscriptions' time zone
ADMIN_PAGE = "/admin/credit-usage/"
ENVIRONMENT_PAGE = "/usage/environments/"
MY_PAGE = "/usage/"


frozen_now = frozen_at(NOW)


class Recorder:
    """Records events through POST /api/v1/events/ as a product would, at the time they happen."""

    def __init__(self, world):
        self.world = world
        self.ai_agent = factories.ProductFactory(slug="ai-agent", name="AI agent")
        self.writing = factories.ProductFactory(slug="writing", name="Writing assistant")
        for product in (self.ai_agent, self.writing):
            product.enabled_for.add(world.subscription, world.other_subscription)
        self.clients = {}
        self.count = 0

    def client(self, subscription) -> APIClient:
        if subscription.pk not in self.clients:
            _, secret = factories.api_key(subscription)
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
            self.clients[subscription.pk] = client
        return self.clients[subscription.pk]

    def payload(self, *, at: datetime, credits, user=None, environment=None, **fields) -> dict:
        self.count += 1
        payload = {
            "idempotency_key": f"page-op-{self.count}",
            "timestamp": at.isoformat(),
            "environment": str((environment or self.world.environment).public_id),
            "product": "ai-agent",
            "feature": "chat",
            "agent": "Support bot",
            "credits": str(credits),
            "status": "succeeded",
            **fields,
        }
        if user is not None:
            payload["user"] = user.email
        return payload

    def record(self, *, at: datetime, subscription=None, **fields) -> None:
        client = self.client(subscription or self.world.subscription)
        with time_machine.travel(at, tick=False):
            response = client.post("/api/v1/events/", self.payload(at=at, **fields), format="json")
        assert response.status_code == 201, response.json()

    def record_batch(self, events: list[dict]) -> None:
        """Many events of this period at once, recorded now."""
        client = self.client(self.world.subscription)
        for start in range(0, len(events), 1000):
            chunk = [self.payload(**event) for event in events[start : start + 1000]]
            response = client.post("/api/v1/events/batch/", {"events": chunk}, format="json")
            assert response.json()["refused"] == 0, response.json()


@pytest.fixture
def recorder(world) -> Recorder:
    return Recorder(world)


@pytest.fixture
def usage(world, recorder):
    """A month of usage in Acme: members, a project manager, the admin and an API key, two
    products, a team with a limit, last month's usage and another subscription's."""
    content = factories.TeamFactory(subscription=world.subscription, name="Content")
    factories.team_membership(world.member, content)
    CreditLimit.objects.create(subscription=world.subscription, team=content, credits=100)
    CreditLimit.objects.create(subscription=world.subscription, user=world.manager, credits=50)

    record = recorder.record
    record(at=utc(2026, 10, 10, 9), user=world.member, credits="20")  # last month
    record(at=utc(2026, 11, 2, 9), user=world.member, credits="10.5")
    record(at=utc(2026, 11, 15, 12), credits="5")  # the API key alone
    record(at=utc(2026, 11, 20, 9), user=world.member, credits="4.25", feature="summarize")
    record(at=utc(2026, 11, 21, 9), user=world.manager, credits="3.125", product="writing")
    record(
        at=utc(2026, 11, 22, 9),
        user=world.manager,
        credits="7",
        environment=world.other_environment,
    )
    record(at=utc(2026, 11, 22, 10), user=world.admin, credits="1")
    record(
        at=utc(2026, 11, 23, 8), user=world.member, credits="2", product="writing", status="failed"
    )
    record(
        at=utc(2026, 11, 10, 9),
        subscription=world.other_subscription,
        environment=world.foreign_environment,
        user=world.outsider,
        credits="99",
    )
    return recorder


def ledger(**filters) -> Decimal:
    total = CreditEvent.objects.filter(**filters).aggregate(total=Sum("credits"))["total"]
    return total or Decimal(0)


def november(**filters) -> Decimal:
    return ledger(
        timestamp__gte=utc(2026, 10, 31, 23), timestamp__lt=utc(2026, 11, 30, 23), **filters
    )


def figure(response, name: str) -> str:
    """The text of the element marked ``data-figure="name"``."""
    match = re.search(rf'data-figure="{name}"[^>]*>([^<]*)<', response.content.decode())
    assert match, f"no figure {name!r} on the page"
    return match.group(1).strip()


def logged_in(client, user):
    client.force_login(user)
    return client


def page_seen(client, viewer, path, params=None):
    """The page ``viewer`` gets at ``path`` (a 200), with its response."""
    response = logged_in(client, viewer).get(path, params)
    assert response.status_code == 200
    return response, response.context["page"]


def balance_api(viewer, **params) -> dict:
    client = APIClient()
    client.force_login(viewer)
    response = client.get("/api/v1/balance/", params)
    assert response.status_code == 200, response.json()
    return response.json()


# --- The subscription admin's analytics ------------------------------------------------------


def test_admin_cards_equal_the_ledger_and_the_balance_api(client, world, usage):
    response, page = page_seen(client, world.admin, ADMIN_PAGE)

    api = balance_api(world.admin)
    used = november(subscription=world.subscription)
    assert used == Decimal("32.875")
    assert page.balance.used == used == Decimal(api["used"])
    assert page.balance.remaining == Decimal(api["remaining"]) == Decimal("967.125")
    assert page.range_credits == used
    assert figure(response, "used") == "32.8750"
    assert figure(response, "remaining") == "967.1250"
    assert figure(response, "utilisation") == "3.3%"  # 3.29% of 1,000
    assert figure(response, "days-until-reset") == str(api["days_until_reset"]) == "8"
    assert figure(response, "reset-date") == "1 December 2026"
    assert figure(response, "active-products") == "2"
    # 32.875 over 23 days so far
    assert figure(response, "average-daily") == "1.4293"
    # 32.875 so far against October's 20 by 23 October
    assert figure(response, "trend") == "+64.4%"
    # 32.875 in 23 days: 967.125 more at 1.4293 a day takes past the reset
    assert figure(response, "run-out") == "Lasts until the reset"


def test_admin_chart_and_tables_add_up_to_the_ledger(client, world, usage):
    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    page = response.context["page"]
    by_product = {row.name: row.credits for row in page.products}
    assert by_product == {
        "AI agent": november(subscription=world.subscription, product__slug="ai-agent"),
        "Writing assistant": november(subscription=world.subscription, product__slug="writing"),
    }
    chart = page.chart
    assert len(chart["days"]) == 30  # one point per day of November
    assert chart["days"][1] == "2026-11-02"
    ai_agent = next(d for d in chart["datasets"] if d["label"] == "AI agent")
    assert ai_agent["display"][1] == "10.5000"
    assert ai_agent["values"][25] is None  # 26 November is still to come
    assert sum(Decimal(t.replace(",", "")) for t in chart["totals"]) == Decimal("32.875")

    members = {row.email: row for row in page.members.rows}
    for user in (world.member, world.manager, world.admin):
        assert members[user.email].credits == november(subscription=world.subscription, user=user)
    assert page.members.keys_row.credits == november(
        subscription=world.subscription, user__isnull=True
    )
    assert page.members.total_credits == Decimal("32.875")
    assert figure(response, "members-total") == "32.8750"
    assert world.outsider.email not in response.content.decode()


def test_admin_member_table_shows_roles_teams_limits_and_activity(client, world, usage):
    response = logged_in(client, world.admin).get(ADMIN_PAGE)
    page, html = response.context["page"], response.content.decode()

    rows = {row.email: row for row in page.members.rows}
    member, manager = rows[world.member.email], rows[world.manager.email]
    assert (member.role, member.team, member.runs, member.failed_runs) == (
        "Member",
        "Content",
        3,
        1,
    )
    # The team's limit: 100 a period, of which the Content team (the member) used 16.75.
    assert (member.limit, member.limit_scope, member.limit_used) == (100, "team", Decimal("16.75"))
    assert member.limit_percent == Decimal("16.8")
    assert (manager.limit, manager.limit_scope, manager.limit_used) == (
        50,
        "own",
        Decimal("10.125"),
    )
    assert manager.role == "Project manager, Member"
    assert member.last_activity == utc(2026, 11, 23, 8)
    assert rows[world.admin.email].role == "Subscription admin"
    # In the subscription's time zone (Prague, UTC+1 in November).
    assert '<time datetime="2026-11-23T09:00:00+01:00">23 Nov 2026, 09:00 CET</time>' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"sort": "-credits"}, ["carol", "bob", "alice"]),
        ({"sort": "credits"}, ["alice", "bob", "carol"]),
        ({"sort": "member"}, ["alice", "bob", "carol"]),
        ({"sort": "-limit"}, ["bob", "carol", "alice"]),  # 20.3%, 16.8%, then no limit
        ({"q": "CAROL"}, ["carol"]),
        ({"team": "content"}, ["carol"]),
        ({"feature": "summarize", "sort": "-credits"}, ["carol", "alice", "bob"]),
    ],
)
def test_admin_member_table_sorts_searches_and_filters(client, world, usage, query, expected):
    if query.get("team") == "content":
        query = {"team": str(world.member.teams.get().pk)}

    page = logged_in(client, world.admin).get(ADMIN_PAGE, query).context["page"]

    assert [row.email.split("@")[0] for row in page.members.rows] == expected


def test_admin_member_table_filters_usage_by_feature_and_product(client, world, usage, recorder):
    response = logged_in(client, world.admin).get(
        ADMIN_PAGE, {"feature": "chat", "product": str(recorder.writing.pk)}
    )

    rows = {row.email: row for row in response.context["page"].members.rows}
    assert rows[world.member.email].credits == november(
        user=world.member, feature="chat", product=recorder.writing
    )
    assert rows[world.manager.email].credits == Decimal("3.125")
    # The limit still counts the whole period.
    assert rows[world.manager.email].limit_used == Decimal("10.125")


def test_admin_date_range_narrows_chart_and_tables_but_not_the_period_cards(client, world, usage):
    response = logged_in(client, world.admin).get(
        ADMIN_PAGE, {"from": "2026-11-20", "to": "2026-11-22"}
    )

    page = response.context["page"]
    assert page.range_credits == ledger(
        subscription=world.subscription,
        timestamp__gte=utc(2026, 11, 19, 23),
        timestamp__lt=utc(2026, 11, 22, 23),
    )
    assert page.range_credits == Decimal("15.375")
    assert page.chart["days"] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert figure(response, "used") == "32.8750"  # the period's balance
    assert figure(response, "average-daily") == "5.1250"
    assert [change.change for change in page.day_over_day] == [
        Decimal("4.25"),
        Decimal("-1.125"),
        Decimal("4.875"),
    ]
    # The member table counts the range too; limits and their use stay the period's.
    in_range = {"timestamp__gte": utc(2026, 11, 19, 23), "timestamp__lt": utc(2026, 11, 22, 23)}
    members = {row.email: row for row in page.members.rows}
    for user in (world.member, world.manager, world.admin):
        events = CreditEvent.objects.filter(subscription=world.subscription, user=user, **in_range)
        assert members[user.email].credits == ledger(user=user, **in_range)
        assert (
            members[user.email].last_activity
            == events.aggregate(Max("timestamp"))["timestamp__max"]
        )
    assert members[world.manager.email].limit_used == Decimal("10.125")
    assert page.members.total_credits == page.range_credits


def test_admin_looks_back_at_a_past_billing_period(client, world, usage):
    response = logged_in(client, world.admin).get(ADMIN_PAGE, {"period": "2026-10"})

    page = response.context["page"]
    assert not page.cycle.is_current
    assert page.balance.used == Decimal("20") == page.range_credits
    assert len(page.chart["days"]) == 31
    assert [period.month for period in page.periods] == ["2026-11", "2026-10"]
    assert "Period closed" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"period": "2026-12"}, "has not started yet"),
        ({"period": "November"}, "must be a month"),
        ({"from": "23/11/2026"}, "is not a date"),
        ({"from": "2026-11-20", "to": "2026-11-02"}, "ended before it started"),
    ],
)
def test_admin_says_what_was_wrong_with_the_range_and_shows_the_period(
    client, world, usage, query, problem
):
    response = logged_in(client, world.admin).get(ADMIN_PAGE, query)

    assert response.status_code == 200
    assert problem in response.content.decode()
    assert response.context["page"].date_range.is_whole_cycle
    assert response.context["page"].cycle.month == "2026-11"


def test_admin_picks_a_sub_account(client, world, usage):
    sub_account = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)

    response = logged_in(client, world.admin).get(ADMIN_PAGE, {"subscription": sub_account.pk})

    page = response.context["page"]
    assert page.subscription == sub_account
    assert [s.name for s in page.subscriptions] == ["Acme", "Acme Labs"]
    assert page.balance.used == 0
    assert "sub-account of Acme" in response.content.decode()


def test_admin_index_links_to_the_credit_usage_page(client, world, settings):
    response = logged_in(client, world.admin).get("/admin/")

    assert '<a href="/admin/credit-usage/">' in response.content.decode()


def test_another_subscriptions_admin_sees_only_their_own(client, world, usage):
    logged_in(client, world.outsider)

    own = client.get(ADMIN_PAGE)
    acme = client.get(ADMIN_PAGE, {"subscription": world.subscription.pk})
    member = client.get(f"{ADMIN_PAGE}members/{world.member.pk}/")
    member_of_acme = client.get(
        f"{ADMIN_PAGE}members/{world.member.pk}/", {"subscription": world.subscription.pk}
    )

    assert own.context["page"].subscription == world.other_subscription
    assert own.context["page"].balance.used == Decimal("99")
    assert "Acme" not in own.content.decode()
    assert (acme.status_code, member.status_code, member_of_acme.status_code) == (404, 404, 404)


@pytest.mark.parametrize("persona", ["manager", "member"])
def test_lower_roles_get_no_admin_analytics(client, world, usage, persona):
    logged_in(client, getattr(world, persona))

    for url in (ADMIN_PAGE, f"{ADMIN_PAGE}members/{world.member.pk}/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")


def test_anonymous_people_are_sent_to_log_in(client, world):
    assert client.get(ADMIN_PAGE).url.startswith("/admin/login/")
    assert client.get(MY_PAGE).url == "/login/?next=/usage/"
    assert client.get(ENVIRONMENT_PAGE).url == "/login/?next=/usage/environments/"


def test_free_plan_shows_totals_and_says_which_plans_have_team_views(client, world, usage):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)
    logged_in(client, world.admin)

    response = client.get(ADMIN_PAGE)
    detail = client.get(f"{ADMIN_PAGE}members/{world.member.pk}/")

    page = response.context["page"]
    assert page.members is None
    assert figure(response, "used") == "32.8750"
    html = response.content.decode()
    assert "available on the Pro, Premium or Scale plans" in html
    assert "is on the Free plan" in html
    assert world.member.email not in html
    assert detail.status_code == 403
    assert "available on the Pro, Premium or Scale plans" in detail.content.decode()


def test_no_products_enabled_shows_zero_usage_and_why(client, world):
    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    page = response.context["page"]
    assert figure(response, "used") == "0.0000"
    assert page.products == []
    assert "No AI products are enabled for Acme" in response.content.decode()
    assert "nothing to chart yet" in response.content.decode()


def test_no_usage_yet_says_so(client, world, recorder):
    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    html = response.content.decode()
    assert "No usage recorded for this subscription in this period yet." in html
    assert figure(response, "run-out") == "No usage yet"
    assert [row.credits for row in response.context["page"].products] == [0, 0]


def test_the_first_of_the_month_starts_a_new_period(client, world, usage):
    with time_machine.travel(utc(2026, 11, 30, 23, 30), tick=False):  # 00:30, 1 December
        response = logged_in(client, world.admin).get(ADMIN_PAGE)

    page = response.context["page"]
    assert page.cycle.month == "2026-12"
    assert figure(response, "used") == "0.0000"
    assert figure(response, "days-until-reset") == "31"
    html = response.content.decode()
    assert "A new billing period started today (1 December)" in html
    assert figure(response, "trend") == "—"  # nothing to compare 1 December with
    assert [period.month for period in page.periods] == ["2026-11", "2026-10"]


@pytest.mark.parametrize("chip", ["Last 7 days", "Last 14 days"])
def test_on_the_3rd_the_clicked_quick_range_is_the_one_marked(client, world, usage, chip):
    # 3 December: both ranges reach back before the period and show the 1st to the 3rd.
    with time_machine.travel(utc(2026, 12, 3, 9), tick=False):
        admin = logged_in(client, world.admin)
        first = admin.get(ADMIN_PAGE)
        link = unescape(re.search(rf'<a href="([^"]*)"[^>]*>{chip}</a>', first.content.decode())[1])
        response = admin.get(ADMIN_PAGE + link)

    marked = re.findall(r'aria-current="true">([^<]*)</a>', response.content.decode())
    assert marked == [chip]
    page = response.context["page"]
    assert (page.date_range.first_day.isoformat(), page.date_range.last_day.isoformat()) == (
        "2026-12-01",
        "2026-12-03",
    )


def test_the_allocation_used_up_shows_the_day_it_ran_out(client, world, recorder):
    Subscription.objects.filter(pk=world.subscription.pk).update(
        base_allocation=10, limit_mode=Subscription.LimitMode.SOFT, excess_allowance=100
    )
    recorder.record(at=utc(2026, 11, 3, 9), user=world.member, credits="6")
    recorder.record(at=utc(2026, 11, 5, 9), user=world.member, credits="6")

    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    assert figure(response, "run-out") == "5 Nov 2026"
    assert figure(response, "excess-used") == "2.0000"
    assert figure(response, "excess-remaining") == "98.0000"
    assert figure(response, "utilisation") == "120%"
    html = response.content.decode()
    # Over 100% the usage bar is past its "high" mark: browsers draw it red, not amber.
    assert re.search(r'<meter [^>]*value="120[.0-9]*" optimum="0" low="80" high="99.99"', html)
    assert '<h3 id="card-run-out">Ran out on</h3>' in html


def test_the_cards_show_credits_by_type_and_the_grants_left(client, world, recorder):
    Subscription.objects.filter(pk=world.subscription.pk).update(base_allocation=10)
    factories.grant(
        world.subscription,
        "5",
        effective_at=utc(2026, 11, 1),
        expires_at=utc(2026, 11, 26),  # within 7 days of NOW
        now=utc(2026, 11, 1),
    )
    factories.grant(world.subscription, "4", effective_at=utc(2026, 11, 1), now=utc(2026, 11, 1))
    recorder.record(at=utc(2026, 11, 3, 9), user=world.member, credits="6")
    recorder.record(at=utc(2026, 11, 5, 9), user=world.member, credits="6")

    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    assert figure(response, "used") == "12.0000"
    assert figure(response, "base-used") == "10.0000"
    assert figure(response, "grant-used") == "2.0000"
    assert figure(response, "grants-remaining") == "7.0000"
    assert figure(response, "grants-expiring") == "3.0000"


def test_admin_member_detail_matches_the_ledger_and_the_balance_api(client, world, usage):
    response, page = page_seen(
        client,
        world.admin,
        f"{ADMIN_PAGE}members/{world.member.pk}/",
        {"subscription": world.subscription.pk},
    )

    api = balance_api(world.admin, user=world.member.email)
    assert page.range_credits == november(user=world.member) == Decimal("16.75")
    assert figure(response, "period-credits") == "16.7500" == api["user"]["used"]
    assert figure(response, "limit-remaining") == "83.2500"
    assert Decimal(api["team"]["remaining"]) == Decimal("83.25")
    assert [event.credits for event in page.runs] == [
        Decimal("2"),
        Decimal("4.25"),
        Decimal("10.5"),
    ]


def test_member_rows_link_to_their_detail(client, world, usage):
    response = logged_in(client, world.admin).get(ADMIN_PAGE)

    link = (
        f'href="/admin/credit-usage/members/{world.member.pk}/?subscription={world.subscription.pk}'
    )
    assert link in response.content.decode()


# --- The member table, one page at a time -----------------------------------------------------


def names(page) -> list[str]:
    return [row.email.split("@")[0] for row in page.members.rows]


def member_page_links(response) -> list[dict]:
    """The member table's page links: the query each keeps, its text and its attributes."""
    nav = re.search(
        r'<nav class="pagination member-pages"[^>]*>(.*?)</nav>', response.content.decode(), re.S
    )
    assert nav, "no pages of the member table"
    return [
        {
            "query": dict(parse_qsl(unescape(query), keep_blank_values=True)),
            "attributes": attributes,
            "text": re.sub(r"<[^>]+>", "", text).strip(),
        }
        for query, attributes, text in re.findall(
            r'<a href="\?([^"#]*)#members"([^>]*)>(.*?)</a>', nav.group(1), re.S
        )
    ]


@pytest.fixture
def two_per_page(monkeypatch):
    monkeypatch.setattr(member_table, "MEMBERS_PER_PAGE", 2)


def test_admin_member_table_shows_one_page_and_its_links_keep_the_range(
    client, world, usage, two_per_page
):
    query = {"period": "2026-11", "from": "2026-11-02", "to": "2026-11-22", "sort": "member"}
    logged_in(client, world.admin)

    first = client.get(ADMIN_PAGE, query)
    second = client.get(ADMIN_PAGE, {**query, "page": "2"})

    assert names(first.context["page"]) == ["alice", "bob"]
    assert names(second.context["page"]) == ["carol"]
    assert second.context["page"].members.page.number == 2
    # The total is everyone's, on every page: the range's credits in the ledger.
    in_range = ledger(
        subscription=world.subscription,
        timestamp__gte=utc(2026, 11, 1, 23),
        timestamp__lt=utc(2026, 11, 22, 23),
    )
    assert in_range == Decimal("30.875")
    assert figure(first, "members-total") == figure(second, "members-total") == "30.8750"
    html = second.content.decode()
    assert "3 of 3 people (showing 3\N{EN DASH}3, page 2 of 2)" in html
    links = member_page_links(second)
    assert [(link["text"], link["query"]["page"]) for link in links] == [
        ("← Previous page of people", "1"),
        ("Page 1", "1"),
        ("Page 2", "2"),
    ]
    for link in links:
        assert link["query"] == {**query, "page": link["query"]["page"]}
    assert 'rel="prev"' in links[0]["attributes"]
    assert 'aria-current="page"' in links[2]["attributes"]
    assert "aria-current" not in links[1]["attributes"]
    # Sorting, searching and choosing another range start again at the first page.
    sort_link = re.search(r'<a href="\?([^"]*)" data-sort="credits"', html).group(1)
    assert "page" not in dict(parse_qsl(unescape(sort_link.split("#")[0])))
    assert 'name="page"' not in html


def test_environment_member_table_is_paginated_too(client, world, usage, two_per_page):
    logged_in(client, world.manager)

    response = client.get(ENVIRONMENT_PAGE, {"sort": "member", "page": "2"})

    page = response.context["page"]
    assert names(page) == ["carol"]
    assert page.active_users == 3  # everyone listed, not only this page
    assert figure(response, "members-total") == "25.8750"
    assert [link["text"] for link in member_page_links(response)] == [
        "← Previous page of people",
        "Page 1",
        "Page 2",
    ]


@pytest.mark.parametrize("number", ["abc", "0", "-1", "3", "99", "1.5", "", str(10**30)])
def test_a_member_page_that_does_not_exist_gives_the_first(
    client, world, usage, two_per_page, number
):
    logged_in(client, world.admin)

    response = client.get(ADMIN_PAGE, {"sort": "member", "page": number})

    assert response.status_code == 200
    assert response.context["page"].members.page.number == 1
    assert names(response.context["page"]) == ["alice", "bob"]


def test_pages_of_members_show_nothing_to_other_subscriptions_or_lower_roles(
    client, world, usage, two_per_page
):
    acme = {"subscription": world.subscription.pk, "page": "2", "sort": "member"}
    acme_environment = {"environment": str(world.environment.public_id), "page": "2"}

    logged_in(client, world.outsider)
    own = client.get(ADMIN_PAGE, {"page": "2"})
    assert own.status_code == 200
    assert own.context["page"].subscription == world.other_subscription
    assert "acme.example" not in own.content.decode()
    assert client.get(ADMIN_PAGE, acme).status_code == 404
    assert client.get(ENVIRONMENT_PAGE, acme_environment).status_code == 404

    for persona in (world.manager, world.member):
        logged_in(client, persona)
        response = client.get(ADMIN_PAGE, acme)
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")

    logged_in(client, world.member)
    response = client.get(ENVIRONMENT_PAGE, acme_environment)
    assert response.status_code == 403
    assert world.admin.email not in response.content.decode()


@pytest.mark.parametrize("page_url", [ADMIN_PAGE, ENVIRONMENT_PAGE])
def test_the_member_table_costs_the_same_queries_for_5_and_50_members(
    client, world, recorder, django_assert_max_num_queries, page_url
):
    def add_members(count: int, events_each: int) -> None:
        people = [factories.UserFactory() for _ in range(count)]
        team = factories.TeamFactory(subscription=world.subscription)
        for n, person in enumerate(people):
            factories.membership(person, Role.MEMBER, environment=world.environment)
            if n % 2:
                factories.team_membership(person, team)
            else:
                CreditLimit.objects.create(subscription=world.subscription, user=person, credits=99)
        CreditLimit.objects.create(subscription=world.subscription, team=team, credits=500)
        recorder.record_batch(
            [
                {
                    "at": utc(2026, 11, 1 + n % 22, n % 24),
                    "user": people[n % count],
                    "product": ["ai-agent", "writing"][n % 2],
                    "feature": ["chat", "summarize", "translate"][n % 3],
                    "credits": "0.25",
                }
                for n in range(count * events_each)
            ]
        )

    viewer = world.admin if page_url == ADMIN_PAGE else world.manager
    # The admin is listed in the environment once they used it.
    recorder.record(at=utc(2026, 11, 2, 9), user=world.admin, credits="1")
    add_members(2, events_each=3)  # with alice, bob and carol: 5 people
    logged_in(client, viewer)
    with CaptureQueriesContext(connection) as five:
        response = client.get(page_url)
    assert response.context["page"].members.listed_count == 5
    five_members_queries = len(five)

    add_members(45, events_each=20)  # 50 people, 900 more events
    with django_assert_max_num_queries(five_members_queries):
        response = client.get(page_url)

    members = response.context["page"].members
    assert members.listed_count == 50
    assert len(members.rows) == member_table.MEMBERS_PER_PAGE == 50
    # The admin reads its subscriptions' time zones once (accounts.middleware), its header's
    # Usage menu the admin's roles (reports.usage_menu), and its balance the grants' status.
    assert five_members_queries <= (16 if page_url == ADMIN_PAGE else 12)


@pytest.mark.parametrize("page_url", [ADMIN_PAGE, ENVIRONMENT_PAGE, MY_PAGE])
def test_pages_read_no_ledger_rows_but_one_page_of_runs(client, world, usage, page_url):
    persona = {ADMIN_PAGE: world.admin, ENVIRONMENT_PAGE: world.manager, MY_PAGE: world.member}
    logged_in(client, persona[page_url])

    with CaptureQueriesContext(connection) as queries:
        assert client.get(page_url).status_code == 200

    ledger_reads = [q["sql"] for q in queries if "credits_creditevent" in q["sql"]]
    if page_url == MY_PAGE:
        # Recent runs: one page and one row more (is there an older page?), never a COUNT.
        assert len(ledger_reads) == 1
        assert ledger_reads[0].endswith("LIMIT 21")
    else:
        assert ledger_reads == []


@pytest.mark.parametrize("page_url", [ADMIN_PAGE, ENVIRONMENT_PAGE, MY_PAGE])
def test_each_page_reads_a_constant_number_of_queries(
    client, world, usage, recorder, django_assert_max_num_queries, page_url
):
    persona = {ADMIN_PAGE: world.admin, ENVIRONMENT_PAGE: world.manager, MY_PAGE: world.member}
    logged_in(client, persona[page_url])
    with CaptureQueriesContext(connection) as small:
        assert client.get(page_url).status_code == 200
    small_data_queries = len(small)  # now: the next request clears the connection's log

    more_products = [
        factories.ProductFactory(slug=f"product-{n}", name=f"Product {n}") for n in range(4)
    ]
    for product in more_products:
        product.enabled_for.add(world.subscription)
    people = [factories.UserFactory() for _ in range(12)]
    for person in people:
        factories.membership(person, Role.MEMBER, environment=world.environment)
    team = factories.TeamFactory(subscription=world.subscription)
    for person in people[:6]:
        factories.team_membership(person, team)
        CreditLimit.objects.create(subscription=world.subscription, user=person, credits=500)
    recorder.record_batch(
        [
            {
                "at": utc(2026, 11, 1 + n % 22, 8 + n % 12),
                "user": [*people, world.member, world.manager][n % 14],
                "product": ["ai-agent", "writing", *(p.slug for p in more_products)][n % 6],
                "feature": ["chat", "summarize", "translate"][n % 3],
                "credits": "0.25",
            }
            for n in range(120)
        ]
    )

    with django_assert_max_num_queries(small_data_queries):
        response = client.get(page_url)
    assert response.status_code == 200
    assert small_data_queries <= 16


# --- The project manager's environments -------------------------------------------------------


def test_manager_sees_everyones_usage_in_their_environment(client, world, usage):
    response, page = page_seen(client, world.manager, ENVIRONMENT_PAGE)

    assert page.environment == world.environment
    in_environment = november(environment=world.environment)
    assert page.range_credits == in_environment == Decimal("25.875")
    api = balance_api(world.manager, environment=str(world.environment.public_id))
    assert page.balance.environment_used == Decimal(api["environment_used"]) == in_environment
    assert figure(response, "period-credits") == "25.8750"
    rows = {row.email: row.credits for row in page.members.rows}
    assert rows == {
        world.member.email: Decimal("16.75"),
        world.manager.email: Decimal("3.125"),
        world.admin.email: Decimal("1"),
    }
    assert page.members.keys_row.credits == Decimal("5")
    # Teams and limits are the subscription admin's business.
    assert not page.members.for_admin
    assert "Limit used" not in response.content.decode()
    assert 'id="id_team"' not in response.content.decode()
    # Staging, where the manager is only a member, is not theirs to see.
    assert [e.name for e in page.environments] == ["Production"]


def test_manager_page_links_the_environment_csv(client, world, usage):
    response = logged_in(client, world.manager).get(ENVIRONMENT_PAGE)

    href = (
        f"/api/v1/exports/credit-usage/?scope=environment&amp;"
        f"environment={world.environment.public_id}&amp;format=csv"
    )
    assert f'href="{href}"' in response.content.decode()


def csv_credits(body: str) -> list[Decimal]:
    """The Credits column of a credit usage export (the fifth: money columns follow it)."""
    return [Decimal(line.split(",")[4]) for line in body.strip().splitlines()[1:]]


def test_the_environment_csv_adds_up_to_the_page(client, world, usage):
    logged_in(client, world.manager)
    page = client.get(ENVIRONMENT_PAGE).context["page"]

    response = client.get(page.export_url)

    assert response.status_code == 200, response.content[:500]
    body = b"".join(response.streaming_content).decode()
    assert sum(csv_credits(body)) == page.period_credits


def test_manager_sees_one_persons_usage_in_the_environment(client, world, usage):
    response = logged_in(client, world.manager).get(
        f"/usage/environments/members/{world.member.pk}/",
        {"environment": str(world.environment.public_id)},
    )

    assert response.status_code == 200
    page = response.context["page"]
    assert page.range_credits == november(user=world.member, environment=world.environment)
    assert page.balance.user is None  # limits are the subscription admin's business
    assert "Limit" not in response.content.decode()


def test_manager_cannot_see_people_or_environments_outside_theirs(client, world, usage):
    logged_in(client, world.manager)

    staging = client.get(ENVIRONMENT_PAGE, {"environment": str(world.other_environment.public_id)})
    foreign = client.get(
        ENVIRONMENT_PAGE, {"environment": str(world.foreign_environment.public_id)}
    )
    outsider = client.get(
        f"/usage/environments/members/{world.outsider.pk}/",
        {"environment": str(world.environment.public_id)},
    )

    assert (staging.status_code, foreign.status_code, outsider.status_code) == (404, 404, 404)


def test_members_and_other_subscriptions_admins_get_no_environment_page(client, world, usage):
    member = logged_in(client, world.member).get(ENVIRONMENT_PAGE)
    assert member.status_code == 403
    assert "You don't manage any environment" in member.content.decode()

    outsider = logged_in(client, world.outsider).get(
        ENVIRONMENT_PAGE, {"environment": str(world.environment.public_id)}
    )
    assert outsider.status_code == 404


def test_free_plan_environment_page_shows_totals_only(client, world, usage):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)
    logged_in(client, world.manager)

    response = client.get(ENVIRONMENT_PAGE)
    detail = client.get(
        f"/usage/environments/members/{world.member.pk}/",
        {"environment": str(world.environment.public_id)},
    )

    assert response.context["page"].members is None
    assert figure(response, "period-credits") == "25.8750"
    assert "available on the Pro, Premium or Scale plans" in response.content.decode()
    assert detail.status_code == 403


# --- Every member's own usage -----------------------------------------------------------------


def test_my_usage_equals_the_ledger_and_the_balance_api(client, world, usage):
    response, page = page_seen(client, world.member, MY_PAGE)

    api = balance_api(world.member)
    mine = november(user=world.member)
    assert page.range_credits == mine == Decimal(api["user"]["used"]) == Decimal("16.75")
    assert figure(response, "range-credits") == "16.7500"
    assert figure(response, "period-credits") == "16.7500"
    # No limit of their own: their team's limit of 100 applies.
    assert api["user"]["limit"] is None
    assert figure(response, "limit-remaining") == "83.2500" == api["team"]["remaining"]
    assert figure(response, "limit") == "100.0000"
    assert figure(response, "days-until-reset") == "8 days"
    assert world.manager.email not in response.content.decode()


def test_my_usage_in_one_environment(client, world, usage):
    logged_in(client, world.manager)

    everywhere = client.get(MY_PAGE).context["page"]
    staging = client.get(
        MY_PAGE, {"scope": f"environment:{world.other_environment.public_id}"}
    ).context["page"]

    assert everywhere.range_credits == november(user=world.manager) == Decimal("10.125")
    assert staging.range_credits == Decimal("7")
    assert [event.credits for event in staging.runs] == [Decimal("7")]
    assert everywhere.balance.user.limit == 50
    assert everywhere.balance.user.remaining == Decimal("39.875")


def test_my_recent_runs_are_paginated_newest_first(client, world, usage, recorder):
    recorder.record_batch(
        [{"at": utc(2026, 11, 3, 8, n), "user": world.member, "credits": "0.5"} for n in range(25)]
    )
    logged_in(client, world.member)

    first = client.get(MY_PAGE).context["page"].runs
    response = client.get(MY_PAGE, {"page": "2"})
    last = response.context["page"].runs

    # How many: from the rollup, not a COUNT over the ledger.
    in_november = CreditEvent.objects.filter(
        user=world.member, timestamp__gte=utc(2026, 10, 31, 23)
    )
    assert first.run_count == 28 == in_november.count()
    assert first[0].timestamp == utc(2026, 11, 23, 8)
    assert len(first) == 20 and len(last) == 8
    assert (first.has_previous, first.has_next, last.has_previous, last.has_next) == (
        False,
        True,
        True,
        False,
    )
    assert last[-1].timestamp == utc(2026, 11, 2, 9)
    assert "Page 2 (28 runs in this range)" in response.content.decode()
    assert 'href="?page=1" rel="prev"' in response.content.decode()


@pytest.mark.parametrize("number", ["abc", "0", "-1", "3", "1.5", "", str(10**30)])
def test_a_page_of_runs_that_does_not_exist_gives_the_first(client, world, usage, number):
    logged_in(client, world.member)

    response = client.get(MY_PAGE, {"page": number})

    assert response.status_code == 200
    runs = response.context["page"].runs
    assert runs.number == 1
    assert [event.credits for event in runs] == [Decimal("2"), Decimal("4.25"), Decimal("10.5")]


def test_my_usage_links_my_csv(client, world, usage):
    logged_in(client, world.member)

    response = client.get(MY_PAGE)
    csv = client.get(response.context["page"].export_url)

    html = response.content.decode()
    assert (
        f'href="/api/v1/exports/credit-usage/?scope=mine&amp;subscription='
        f'{world.subscription.pk}&amp;format=csv"' in html
    )
    assert "Download my CSV" in html
    assert csv.status_code == 200
    body = b"".join(csv.streaming_content).decode()
    assert sum(csv_credits(body)) == Decimal("16.75")


def test_my_usage_refuses_environments_that_are_not_mine(client, world, usage):
    logged_in(client, world.member)

    foreign = client.get(MY_PAGE, {"environment": str(world.foreign_environment.public_id)})
    other = client.get(MY_PAGE, {"scope": f"subscription:{world.other_subscription.pk}"})

    assert (foreign.status_code, other.status_code) == (404, 404)


def test_someone_without_a_subscription_sees_why(client, world):
    loner = factories.UserFactory()

    response = logged_in(client, loner).get(MY_PAGE)

    assert response.status_code == 200
    assert "You don't belong to any subscription yet" in response.content.decode()


def test_members_log_in_with_the_usage_login(client, world):
    response = client.post(
        "/login/", {"username": world.member.email, "password": factories.PASSWORD}
    )

    assert response.status_code == 302
    assert response.url == "/usage/"
    assert client.get(MY_PAGE).status_code == 200
