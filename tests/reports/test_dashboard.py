"""The date arithmetic and projections behind the usage pages (reports.dashboard), and how the
pages write credits and percentages."""

from datetime import date
from decimal import Decimal

import pytest
import time_machine

from accounts.models import Subscription
from reports.cycle_usage import CycleUsage, DayChange, projected_run_out, trend_days
from reports.member_table import MemberRow, _sorted
from reports.templatetags.usage_format import percent, signed_credits, signed_percent
from reports.timeframes import Cycle, DateRange, date_range_from
from reports.usage import Sums
from tests import factories
from tests.factories import utc


def prague(**fields) -> Subscription:
    return Subscription(name="Acme", timezone="Europe/Prague", base_allocation=1000, **fields)


def usage(cycle: Cycle, by_day: dict[int, str]) -> CycleUsage:
    cells = {
        (cycle.first_day.replace(day=day), 1): Sums(credits=Decimal(value))
        for day, value in by_day.items()
    }
    return CycleUsage(cycle=cycle, cells=cells, product_names={1: "AI agent"})


# --- Date ranges ----------------------------------------------------------------------------


def test_the_default_range_is_the_whole_current_period_in_local_days():
    # 23:30 UTC on 31 October is already 1 November in Prague.
    date_range, problems = date_range_from(
        subscription=prague(), query={}, now=utc(2026, 10, 31, 23, 30)
    )

    assert problems == []
    assert (date_range.first_day, date_range.last_day) == (date(2026, 11, 1), date(2026, 11, 30))
    assert date_range.cycle.is_current
    assert date_range.cycle.today == date(2026, 11, 1)
    assert date_range.start == utc(2026, 10, 31, 23)  # 00:00 on 1 November, CET
    assert date_range.end == utc(2026, 11, 30, 23)


def test_a_range_inside_the_period_and_one_clipped_to_it():
    subscription = prague()
    now = utc(2026, 11, 23, 10)

    inside, _ = date_range_from(
        subscription=subscription, query={"from": "2026-11-05", "to": "2026-11-09"}, now=now
    )
    clipped, _ = date_range_from(
        subscription=subscription, query={"from": "2026-10-20", "to": "2026-11-03"}, now=now
    )

    assert (inside.first_day, inside.last_day) == (date(2026, 11, 5), date(2026, 11, 9))
    assert (clipped.first_day, clipped.last_day) == (date(2026, 11, 1), date(2026, 11, 3))


def test_a_range_left_over_from_another_period_gives_the_whole_period():
    date_range, problems = date_range_from(
        subscription=prague(),
        query={"period": "2026-09", "from": "2026-11-05", "to": "2026-11-09"},
        now=utc(2026, 11, 23, 10),
    )

    assert problems == []
    assert (date_range.first_day, date_range.last_day) == (date(2026, 9, 1), date(2026, 9, 30))
    assert not date_range.cycle.is_current
    assert date_range.elapsed_days[-1] == date(2026, 9, 30)


def test_the_periods_days_follow_daylight_saving_time():
    # New York leaves DST on 1 November 2026: the period starts at 04:00 UTC, ends at 05:00.
    new_york = Subscription(name="Globex", timezone="America/New_York")

    date_range, _ = date_range_from(subscription=new_york, query={}, now=utc(2026, 11, 10, 12))

    assert date_range.start == utc(2026, 11, 1, 4)
    assert date_range.end == utc(2026, 12, 1, 5)


def test_presets_stay_inside_the_period():
    cycle = Cycle(prague(), date(2026, 11, 1), today=date(2026, 11, 4))
    date_range = DateRange(cycle, date(2026, 11, 1), date(2026, 11, 4))

    presets = {preset.label: (preset.first_day, preset.last_day) for preset in date_range.presets}

    assert presets == {
        "Whole period": (date(2026, 11, 1), date(2026, 11, 30)),
        "Last 7 days": (date(2026, 11, 1), date(2026, 11, 4)),
        "Last 14 days": (date(2026, 11, 1), date(2026, 11, 4)),
        "Today": (date(2026, 11, 4), date(2026, 11, 4)),
    }


def selected(date_range: DateRange) -> list[str]:
    return [preset.label for preset in date_range.presets if preset.selected]


@pytest.mark.parametrize("day", range(1, 8))
def test_one_preset_is_marked_on_the_first_days_of_a_period(day):
    # On the 1st to the 7th "Last 7 days" and "Last 14 days" are both the period so far.
    cycle = Cycle(prague(), date(2026, 12, 1), today=date(2026, 12, day))
    so_far = (date(2026, 12, 1), date(2026, 12, day))

    clicked = {
        key: selected(DateRange(cycle, *so_far, chosen=key))
        for key in ("last_7_days", "last_14_days")
    }
    typed_in = selected(DateRange(cycle, *so_far))

    assert clicked == {"last_7_days": ["Last 7 days"], "last_14_days": ["Last 14 days"]}
    assert typed_in == (["Today"] if day == 1 else ["Last 7 days"])


def test_a_preset_named_in_the_query_is_marked_only_when_its_days_are_shown():
    cycle = Cycle(prague(), date(2026, 11, 1), today=date(2026, 11, 20))

    assert selected(DateRange(cycle, date(2026, 11, 14), date(2026, 11, 20))) == ["Last 7 days"]
    assert selected(
        DateRange(cycle, date(2026, 11, 7), date(2026, 11, 20), chosen="last_14_days")
    ) == ["Last 14 days"]
    assert (
        selected(DateRange(cycle, date(2026, 11, 2), date(2026, 11, 5), chosen="last_7_days")) == []
    )
    assert selected(DateRange(cycle, cycle.first_day, cycle.last_day, chosen="bogus")) == [
        "Whole period"
    ]


# --- Projections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("by_day", "allocation", "expected"),
    [
        # 100 a day for 10 days: 1,000 - 1,000 = 0 left -> used up on the 10th.
        ({day: "100" for day in range(1, 11)}, "1000", (date(2026, 11, 10), "used_up")),
        # 300 in 10 days (30 a day): 700 more takes 24 days -> past the reset.
        ({1: "300"}, "1000", (None, "lasts")),
        # 600 in 10 days (60 a day): 400 more takes 7 days (6.7 rounded up) -> the 17th.
        ({3: "250", 9: "350"}, "1000", (date(2026, 11, 17), "projected")),
        ({}, "1000", (None, "no_usage")),
        ({1: "5"}, "0", (None, "no_allocation")),
    ],
)
def test_projected_run_out(by_day, allocation, expected):
    cycle = Cycle(prague(), date(2026, 11, 1), today=date(2026, 11, 10))

    run_out = projected_run_out(usage(cycle, by_day), Decimal(allocation))

    assert (run_out.day, run_out.status) == expected


def test_a_closed_period_that_never_ran_out_lasted():
    cycle = Cycle(prague(), date(2026, 10, 1), today=date(2026, 11, 10))

    run_out = projected_run_out(usage(cycle, {5: "10"}), Decimal(1000))

    assert (run_out.day, run_out.status, run_out.title, run_out.message) == (
        None,
        "lasts",
        "Base allocation",
        "Lasted the period",
    )


def test_a_closed_period_that_ran_out_says_when_not_projected():
    cycle = Cycle(prague(), date(2026, 10, 1), today=date(2026, 11, 10))

    run_out = projected_run_out(usage(cycle, {5: "600", 9: "600"}), Decimal(1000))

    assert (run_out.day, run_out.status, run_out.title) == (
        date(2026, 10, 9),
        "used_up",
        "Ran out on",
    )


def test_an_open_period_projects_its_run_out():
    cycle = Cycle(prague(), date(2026, 11, 1), today=date(2026, 11, 10))

    run_out = projected_run_out(usage(cycle, {1: "500"}), Decimal(1000))

    assert (run_out.status, run_out.title) == ("projected", "Projected run-out")


def test_day_over_day_starts_without_a_change_on_the_first():
    cycle = Cycle(prague(), date(2026, 11, 1), today=date(2026, 11, 3))
    date_range = DateRange(cycle, cycle.first_day, cycle.last_day)

    changes = usage(cycle, {1: "4", 2: "6", 3: "3"}).day_over_day(date_range)

    assert [(c.credits, c.change, c.change_percent) for c in changes] == [
        (Decimal("4"), None, None),
        (Decimal("6"), Decimal("2"), Decimal("50.0")),
        (Decimal("3"), Decimal("-3"), Decimal("-50.0")),
    ]


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2026, 11, 23), (date(2026, 10, 1), date(2026, 10, 23))),
        (date(2026, 11, 1), (date(2026, 10, 1), date(2026, 10, 1))),
        (date(2027, 3, 31), (date(2027, 2, 1), date(2027, 2, 28))),  # February is shorter
        (date(2028, 3, 30), (date(2028, 2, 1), date(2028, 2, 29))),  # a leap year
        (date(2027, 1, 15), (date(2026, 12, 1), date(2026, 12, 15))),  # across the year end
    ],
)
def test_the_trend_compares_with_last_period_up_to_the_same_day(today, expected):
    assert trend_days(Cycle(prague(), today.replace(day=1), today)) == expected


def test_a_closed_periods_trend_compares_whole_periods():
    cycle = Cycle(prague(), date(2026, 9, 1), today=date(2026, 11, 23))

    assert trend_days(cycle) == (date(2026, 8, 1), date(2026, 8, 30))  # September has 30 days


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-credits", ["cy", "ann", "bea", "dan"]),  # ties by email
        ("credits", ["ann", "bea", "dan", "cy"]),
        ("-last_activity", ["bea", "ann", "cy", "dan"]),  # no activity: last, by email
        ("last_activity", ["ann", "bea", "cy", "dan"]),
        ("-limit", ["ann", "dan", "bea", "cy"]),  # 10%, 0%, then no limit
    ],
)
def test_member_rows_have_one_place_in_every_order(sort, expected):
    rows = [
        MemberRow(4, "dan@x.example", "", credits=Decimal(1), limit=Decimal(2)),
        MemberRow(3, "cy@x.example", "", credits=Decimal(5)),
        MemberRow(2, "Bea@x.example", "", credits=Decimal(1), last_activity=utc(2026, 11, 2)),
        MemberRow(1, "ann@x.example", "", credits=Decimal(1), last_activity=utc(2026, 11, 1)),
    ]
    rows[3].limit, rows[3].limit_used = Decimal(10), Decimal(1)

    ordered = _sorted(rows, sort)

    assert [row.email.split("@")[0].lower() for row in ordered] == expected


@pytest.mark.django_db
def test_trend_on_the_31st_compares_with_the_whole_of_a_shorter_month(client, world, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    product = factories.ProductFactory(slug="ai-agent", name="AI agent")
    product.enabled_for.add(world.subscription)
    _, secret = factories.api_key(world.subscription)
    for at, amount in ((utc(2027, 2, 27, 12), "8"), (utc(2027, 3, 30, 12), "10")):
        with time_machine.travel(at, tick=False):
            response = client.post(
                "/api/v1/events/",
                {
                    "idempotency_key": f"k-{amount}",
                    "environment": str(world.environment.public_id),
                    "product": "ai-agent",
                    "credits": amount,
                    "timestamp": at.isoformat(),
                },
                content_type="application/json",
                headers={"authorization": f"Api-Key {secret}"},
            )
            assert response.status_code == 201, response.json()
    with time_machine.travel(utc(2027, 3, 31, 12), tick=False):
        client.force_login(world.admin)
        page = client.get("/admin/credit-usage/").context["page"]

    # 31 March is day 31; February has 28 days, so the same point is 28 February.
    assert page.trend.last_period_through == date(2027, 2, 28)
    assert (page.trend.this_period, page.trend.last_period) == (Decimal("10"), Decimal("8"))
    assert page.trend.percent == Decimal("25.0")


# --- Formatting -------------------------------------------------------------------------------


def test_days_are_written_as_the_date_filter_would():
    from django.template.defaultfilters import date as date_filter

    for day in (date(2026, 11, 23), date(2027, 1, 1), date(2028, 2, 29)):
        assert DayChange(day, Decimal(0), None, None).title == date_filter(day, "D j M Y")


def test_percentages_and_signed_figures():
    assert percent(Decimal("84.65")) == "84.7%"  # half up, as the cards compute it
    assert percent(Decimal("100.00")) == "100%"
    assert percent(None) == "—"
    assert signed_percent(Decimal("12.5")) == "+12.5%"
    assert signed_percent(Decimal("-3")) == "-3%"
    assert signed_credits(Decimal("2.5")) == "+2.5000"
    assert signed_credits(Decimal("-0.25")) == "-0.2500"
