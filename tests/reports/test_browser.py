"""The usage pages in a real browser: Playwright driving Debian's Chromium against the live test
server, logged in as each role of the demo data (``seed_demo``).

Each test checks a figure against the balance API, hovers a chart point and reads its tooltip,
changes the date range, downloads the CSV, finds no console errors, and saves screenshots to
``test-artifacts/screenshots/`` (git-ignored) for people to look at.

Run only these with ``bin/pytest -m browser``; skip them with ``-m "not browser"``.
"""

import csv
import io
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect, sync_playwright

from core.display import format_money
from credits.management.demo_world import DEMO_PASSWORD
from reports import member_table
from reports.templatetags.usage_format import credits

pytestmark = [
    pytest.mark.browser,
    # The live server runs in another thread: data must be committed, and the migrations'
    # rows (the admins' group and its permissions) restored after each test's flush.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def demo(transactional_db):
    """The README's demo data (one month back, few runs: the same credits in fewer events)."""
    call_command("seed_demo", months=1, scale=Decimal("0.05"), verbosity=0)


@pytest.fixture
def browser(demo, live_server, monkeypatch):
    """Chromium, started once the database is ready and stopped before it is flushed.

    Playwright's sync API runs an event loop in this thread, and while it runs Django sees
    other database connection objects here (asgiref's ``Local`` is context-bound): so the
    database is set up, seeded and flushed outside it, and the tests only talk HTTP. The
    flag is for anything that still touches the ORM from here.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class Visit:
    """One person's browser session, collecting console errors and failed requests."""

    def __init__(self, browser, live_server, *, viewport=DESKTOP):
        self.base = live_server.url
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on(
            "response",
            lambda response: (
                self.errors.append(f"{response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def log_in(self, email: str, *, admin: bool = False) -> None:
        self.page.goto(self.base + ("/admin/login/" if admin else "/login/"))
        self.page.fill("input[name=username]", email)
        self.page.fill("input[name=password]", DEMO_PASSWORD)
        self.page.click("[type=submit]")
        self.page.wait_for_load_state()
        self.errors.clear()  # what the pages under test do is what counts

    def api(self, path: str, **params) -> dict:
        response = self.page.request.get(self.base + path, params=params)
        assert response.ok, response.text()
        return response.json()

    def figure(self, name: str) -> str:
        return self.page.locator(f'[data-figure="{name}"]').first.inner_text().strip()

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, live_server):
    visits = []

    def open_visit(**options) -> Visit:
        visits.append(Visit(browser, live_server, **options))
        return visits[-1]

    yield open_visit
    for each in visits:
        each.close()


def ensure_chart(visit: Visit) -> None:
    """On the 1st, early, the current period may have nothing to chart yet: look at last month."""
    if visit.page.locator("#trend-chart").count():
        return
    visit.page.select_option("#id_period", index=1)
    visit.page.click(".range-form [type=submit]")
    expect(visit.page.locator("#trend-chart")).to_be_visible()


def hover_latest_day(visit: Visit, chart_id: str = "trend-chart") -> dict:
    """Move the mouse over the latest day with credits; return what its tooltip must say."""
    page = visit.page
    page.wait_for_function(
        "id => window.Chart && Chart.getChart(document.getElementById(id))", arg=chart_id
    )
    page.locator(f"#{chart_id}").scroll_into_view_if_needed()
    point = page.evaluate(
        """id => {
            const canvas = document.getElementById(id);
            const chart = Chart.getChart(canvas);
            const data = JSON.parse(document.getElementById(id + "-data").textContent);
            let index = data.days.length - 1;
            while (index > 0 && (data.future[index] || data.totals[index] === "0.0000")) index -= 1;
            const box = canvas.getBoundingClientRect();
            return {
                day: data.days[index], title: data.titles[index], total: data.totals[index],
                x: box.left + chart.getDatasetMeta(0).data[index].x,
                y: box.top + (chart.chartArea.top + chart.chartArea.bottom) / 2,
            };
        }""",
        chart_id,
    )
    page.mouse.move(point["x"], point["y"])
    tooltip = page.locator(f"#{chart_id}-tooltip")
    expect(tooltip).to_be_visible()
    expect(tooltip).to_have_attribute("data-day", point["day"])
    return point


def assert_tooltip(visit: Visit, point: dict, chart_id: str = "trend-chart") -> None:
    tooltip = visit.page.locator(f"#{chart_id}-tooltip").inner_text()
    assert point["title"] in tooltip
    assert re.search(rf"Total\s+{re.escape(point['total'])} credits", tooltip), tooltip
    # The tooltip agrees with the chart's table fallback, row by row.
    row = visit.page.locator(f'tr[data-day="{point["day"]}"] td').last.text_content()
    assert row.strip() == point["total"]


def download_csv(visit: Visit, selector: str) -> Decimal:
    """Click a CSV link; return the total of its Credits column."""
    with visit.page.expect_download() as info:
        visit.page.click(selector)
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    body = Path(download.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    return sum((Decimal(row["Credits"]) for row in rows), Decimal(0))


def test_subscription_admin_reads_the_analytics_in_the_admin(visit):
    alice = visit()
    alice.log_in("alice@acme.example", admin=True)
    alice.page.click('a[href="/admin/credit-usage/"]')
    expect(alice.page.locator("h1")).to_have_text("Credit usage")

    api = alice.api("/api/v1/balance/")
    assert api["subscription"]["name"] == "Acme Corp"
    assert alice.figure("used") == credits(Decimal(api["used"]))
    assert alice.figure("remaining") == credits(Decimal(api["remaining"]))
    assert alice.figure("days-until-reset") == str(api["days_until_reset"])
    csv_total = download_csv(alice, "[data-export=subscription]")
    assert csv_total == Decimal(api["used"])
    # The header's Usage menu opens from the keyboard and offers the same export.
    alice.page.focus("[data-usage-menu] summary")
    alice.page.keyboard.press("Enter")
    expect(alice.page.locator("[data-menu-export=subscription]").first).to_be_visible()
    alice.screenshot("admin-usage-menu")
    assert download_csv(alice, "[data-menu-export=subscription] >> nth=0") == csv_total
    alice.page.click("[data-usage-menu] summary")  # closed again

    ensure_chart(alice)
    # The credits trend is a stacked area chart: one filled line per product.
    shape = alice.page.evaluate(
        """() => {
            const chart = Chart.getChart(document.getElementById("trend-chart"));
            return {
                type: chart.config.type,
                stacked: chart.options.scales.y.stacked,
                fills: chart.data.datasets.map(d => d.fill),
            };
        }"""
    )
    assert shape["type"] == "line" and shape["stacked"] is True
    assert shape["fills"] and shape["fills"][0] == "origin"
    assert set(shape["fills"][1:]) <= {"-1"}
    point = hover_latest_day(alice)
    assert_tooltip(alice, point)
    alice.screenshot("admin-credit-usage")

    # The keyboard reads the chart too: focus it, step back a day.
    tooltip = alice.page.locator("#trend-chart-tooltip")
    alice.page.focus("#trend-chart")
    alice.page.keyboard.press("End")
    last = date.fromisoformat(tooltip.get_attribute("data-day"))
    alice.page.keyboard.press("ArrowLeft")
    if last.day > 1:
        expect(tooltip).to_have_attribute("data-day", str(last - timedelta(days=1)))

    alice.page.click(".presets >> text=Last 7 days")
    expect(alice.page.locator(".presets [aria-current=true]")).to_have_text("Last 7 days")
    labels = alice.page.evaluate(
        "() => Chart.getChart(document.getElementById('day-over-day-chart') || "
        "document.getElementById('trend-chart')).data.labels.length"
    )
    assert 1 <= labels <= 7
    assert alice.figure("used") == credits(Decimal(api["used"]))  # the period's, whatever range

    alice.page.locator("#usage-by-member tbody th a").first.click()
    expect(alice.page.locator("h1")).to_contain_text("Credit usage of")
    alice.screenshot("admin-member-detail")
    assert alice.errors == []


def test_subscription_admin_pages_through_the_member_table(visit, monkeypatch):
    # The demo's Acme Corp has about ten people: four a page makes three pages.
    monkeypatch.setattr(member_table, "MEMBERS_PER_PAGE", 4)
    alice = visit()
    alice.log_in("alice@acme.example", admin=True)
    alice.page.goto(alice.base + "/admin/credit-usage/")
    alice.page.click(".presets >> text=Last 14 days")
    alice.page.click('#usage-by-member thead a[data-sort="member"]')
    expect(alice.page.locator("#usage-by-member th[aria-sort=ascending]")).to_contain_text("Member")
    rows = alice.page.locator("#usage-by-member tbody tr[data-member]")
    first_page = [rows.nth(n).get_attribute("data-member") for n in range(rows.count())]
    assert len(first_page) == 4
    total = alice.figure("members-total")

    pages = alice.page.locator("nav.member-pages")
    expect(pages).to_have_attribute("aria-label", "Pages of the member table")
    expect(pages.locator("[aria-current=page]")).to_have_text("Page 1")
    pages.locator("a[rel=next]").focus()
    alice.page.keyboard.press("Enter")
    expect(alice.page).to_have_url(re.compile(r"[?&]page=2(&|#|$)"))
    for kept in ("period=", "from=", "to=", "sort=member"):
        assert kept in alice.page.url
    expect(pages.locator("[aria-current=page]")).to_have_text("Page 2")
    expect(alice.page.locator(".presets [aria-current=true]")).to_have_text("Last 14 days")
    second_page = [rows.nth(n).get_attribute("data-member") for n in range(rows.count())]
    assert 1 <= len(second_page) <= 4
    assert sorted(first_page + second_page) == first_page + second_page  # by email, no overlap
    assert alice.figure("members-total") == total  # everyone's total, on every page
    expect(alice.page.locator("#members-summary")).to_contain_text("page 2 of")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.page.locator("#members").screenshot(path=SCREENSHOTS / "admin-members-page-2.png")
    alice.screenshot("admin-credit-usage-members-page-2")
    assert alice.errors == []


def test_free_plan_admin_sees_totals_and_which_plan_unlocks_team_views(visit):
    hank = visit()
    hank.log_in("hank@globex.example", admin=True)
    hank.page.goto(hank.base + "/admin/credit-usage/")

    api = hank.api("/api/v1/balance/")
    assert hank.figure("used") == credits(Decimal(api["used"]))
    expect(hank.page.locator("[data-plan-gate]")).to_contain_text(
        "available on the Pro, Premium or Scale plans"
    )
    assert hank.page.locator("#usage-by-member").count() == 0
    hank.screenshot("admin-credit-usage-free-plan")
    assert hank.errors == []


def test_project_manager_sees_everyone_in_their_environment(visit):
    bob = visit()
    bob.log_in("bob@acme.example")
    bob.page.click("nav >> text=Environments")
    expect(bob.page.locator("h1")).to_have_text("Website / Production")

    environment = bob.page.locator("#id_environment").input_value()
    api = bob.api("/api/v1/balance/", environment=environment)
    assert bob.figure("period-credits") == credits(Decimal(api["environment_used"]))
    csv_total = download_csv(bob, "[data-export=environment]")
    assert csv_total == Decimal(api["environment_used"])

    ensure_chart(bob)
    assert_tooltip(bob, hover_latest_day(bob))
    expect(bob.page.locator("#usage-by-member tbody tr").first).to_be_visible()
    bob.screenshot("project-manager-environment")

    bob.page.fill("#id_q", "carol")
    bob.page.click(".filters [type=submit]")
    expect(bob.page.locator("#usage-by-member tbody tr")).to_have_count(1)
    assert bob.errors == []


def test_member_sees_their_own_usage_and_nothing_more(visit):
    carol = visit()
    carol.log_in("carol@acme.example")
    expect(carol.page).to_have_url(re.compile(r"/usage/$"))

    api = carol.api("/api/v1/balance/")
    assert carol.figure("period-credits") == credits(Decimal(api["user"]["used"]))
    # Carol has no limit of her own; her team (Content) has one.
    assert carol.figure("limit-remaining") == credits(Decimal(api["team"]["remaining"]))
    assert download_csv(carol, "[data-export=mine]") == Decimal(api["user"]["used"])

    ensure_chart(carol)
    assert_tooltip(carol, hover_latest_day(carol))
    carol.screenshot("member-my-usage")

    first_day = carol.page.locator("#id_from").get_attribute("min")
    carol.page.fill("#id_from", first_day)
    carol.page.fill("#id_to", first_day)
    carol.page.click(".range-form [type=submit]")
    day = date.fromisoformat(first_day)
    expect(carol.page.locator("#date-range-summary")).to_contain_text(
        re.compile(rf"Showing\s+{day.day} {day:%b %Y}\s+in")
    )
    expect(carol.page.locator("#id_from")).to_have_value(first_day)
    assert carol.page.locator("#trend-chart, .empty-chart").count() == 1

    assert carol.errors == []

    # A member gets no one else's usage: a 403 page, and the admin's login form.
    carol.page.goto(carol.base + "/usage/environments/")
    expect(carol.page.locator("[data-forbidden]")).to_be_visible()
    carol.page.goto(carol.base + "/admin/credit-usage/")
    expect(carol.page).to_have_url(re.compile(r"/admin/login/"))


def test_my_usage_fits_a_phone(visit):
    carol = visit(viewport=PHONE)
    carol.log_in("carol@acme.example")
    ensure_chart(carol)

    assert fits_the_width(carol)
    expect(carol.page.locator("[data-export=mine]")).to_be_visible()
    carol.screenshot("member-my-usage-phone")
    assert carol.errors == []


# --- The Reports page ----------------------------------------------------------------------------


def card_total(visit: Visit, slug: str) -> str:
    return visit.page.locator(f'[data-report="{slug}"] [data-total]').inner_text().strip()


def download_through_dialog(visit: Visit, slug: str, choices: dict) -> tuple[str, bytes]:
    """Open the card's dialog from the keyboard, choose ``choices`` (select id suffix ->
    value), download; return the file's name and bytes."""
    page = visit.page
    page.locator(f'[data-open-dialog="{slug}-download"]').focus()
    page.keyboard.press("Enter")
    dialog = page.locator(f"#{slug}-download")
    expect(dialog).to_be_visible()
    for suffix, value in choices.items():
        page.select_option(f"#{slug}-{suffix}", value)
    with page.expect_download() as info:
        dialog.locator("[data-download]").click()
    expect(dialog).to_be_hidden()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_reports_page_downloads_the_apis_bytes_for_each_role(visit):
    alice = visit()
    alice.log_in("alice@acme.example", admin=True)
    alice.page.locator('#credit-usage-module a[href="/admin/reports/"]').click()
    expect(alice.page.locator("h1")).to_have_text("Reports")
    subscription = alice.page.locator("input[name=subscription]").first.input_value()

    # The sub-accounts' usage adds to the totals, and names the accounts' keys.
    alone = card_total(alice, "usage-by-user")
    alice.page.check("#id_include_sub_accounts")
    alice.page.click(".reports-controls [type=submit]")
    expect(alice.page.locator("#reports-summary")).to_contain_text("and its sub-accounts")
    together = card_total(alice, "usage-by-user")
    api = alice.api(
        "/api/v1/reports/usage-by-user/",
        timeframe="this_month",
        include_sub_accounts="true",
        subscription=subscription,
    )
    assert together == credits(Decimal(api["totals"]["credits_consumed"]))
    assert Decimal(together.replace(",", "")) > Decimal(alone.replace(",", ""))

    # The dialog: Escape closes it; a download is the API's answer to the same parameters.
    alice.page.locator('[data-open-dialog="usage-by-agent-download"]').click()
    alice.page.keyboard.press("Escape")
    expect(alice.page.locator("#usage-by-agent-download")).to_be_hidden()
    name, file = download_through_dialog(
        alice, "usage-by-agent", {"timeframe": "last_30_days", "agent_type": "single_task"}
    )
    answer = alice.page.request.get(
        alice.base + "/api/v1/reports/usage-by-agent/",
        params={
            "timeframe": "last_30_days",
            "agent_type": "single_task",
            "include_sub_accounts": "true",
            "subscription": subscription,
            "format": "csv",
        },
    )
    assert file == answer.body()
    assert re.fullmatch(r"acme-corp_usage-by-agent_\d{4}-\d{2}-\d{2}_\d{4}-\d{2}-\d{2}\.csv", name)
    alice.page.locator('[data-open-dialog="usage-by-member-feature-credit-type-download"]').click()
    alice.screenshot("reports-admin-dialog")
    alice.page.keyboard.press("Escape")
    alice.screenshot("reports-admin")
    assert alice.errors == []

    carol = visit(viewport=PHONE)
    carol.log_in("carol@acme.example")
    carol.page.click("nav >> text=Reports")
    expect(carol.page.locator("h1")).to_have_text("Reports")
    assert fits_the_width(carol)
    assert carol.page.locator('[data-report="usage-by-sub-account"]').count() == 0
    assert carol.page.locator("#id_include_sub_accounts").count() == 0
    shown = carol.page.locator('[data-report="usage-by-user"] tbody td').all_inner_texts()
    assert "carol@acme.example" in shown
    assert not [text for text in shown if "@" in text and text != "carol@acme.example"]
    name, file = download_through_dialog(
        carol, "usage-by-member-feature-credit-type", {"timeframe": "this_month"}
    )
    rows = list(csv.DictReader(io.StringIO(file.decode("utf-8-sig"))))
    assert rows and {row["user_email"] for row in rows} == {"carol@acme.example"}
    own = carol.api("/api/v1/balance/")["user"]["used"]
    assert sum(Decimal(row["credits_consumed"]) for row in rows) == Decimal(own)
    carol.screenshot("reports-member-phone")
    assert carol.errors == []


# --- One look, at a desk and on a phone ---------------------------------------------------------

WIDE = {"width": 1400, "height": 900}
EMAIL_WIDTHS = (600, 390)
ZONE_NAMED = re.compile(r"\d{2}:\d{2} ([A-Z]{2,5}|[+-]\d{2,4})$")
NO_OVERFLOW = "() => document.scrollingElement.scrollWidth <= window.innerWidth"


def fits_the_width(visit: Visit) -> bool:
    """Whether the page does not scroll sideways, measured once its stylesheets have loaded:
    Chromium parses on while a stylesheet loads, so a layout read before then measures the
    unstyled page."""
    visit.page.wait_for_load_state()
    return visit.page.evaluate(NO_OVERFLOW)


def assert_inside_viewport(visit: Visit, selector: str) -> None:
    """Each element of ``selector`` lies within the window's width (no sideways scrolling)."""
    boxes = visit.page.eval_on_selector_all(
        selector,
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [e.textContent.trim(), r.left, r.right]; })",
    )
    assert boxes, selector
    width = visit.page.viewport_size["width"]
    outside = [text for text, left, right in boxes if left < 0 or right > width + 1]
    assert outside == [], f"{selector} outside the {width} px window: {outside[:3]}"


def assert_times_name_their_zone(visit: Visit) -> None:
    """Every time of day on the page (``<time>`` elements) says which zone it is in."""
    times = [t for t in visit.page.locator("time").all_inner_texts() if ":" in t]
    unnamed = [text for text in times if not ZONE_NAMED.search(text.strip())]
    assert unnamed == [], f"times without a zone: {unnamed[:3]}"


@pytest.fixture
def rendered_emails(demo, mailoutbox):
    """The monthly report and a threshold alert as sent, their chart inlined for the browser
    (made before the browser starts: see ``browser``)."""
    import base64

    from django.utils import timezone

    from accounts.models import Subscription, User
    from credits.models import BillingPeriod, ThresholdAlert
    from credits.tasks import send_threshold_alert
    from reports.models import ReportSchedule
    from reports.services import save_schedule, send_test_report

    alice = User.objects.get(email="alice@acme.example")
    acme = Subscription.objects.get(name="Acme Corp")
    schedule = save_schedule(
        schedule=ReportSchedule(
            subscription=acme,
            created_by=alice,
            name="Finance monthly",
            recipients=["finance@acme.example"],
            frequency="monthly",
        ),
        actor=alice,
    )
    send_test_report(schedule=schedule, to="finance@acme.example", now=timezone.now())
    period = BillingPeriod.objects.filter(subscription=acme).order_by("-start").first()
    for threshold in (
        ThresholdAlert.Threshold.ALLOCATION_100,
        ThresholdAlert.Threshold.PERIOD_OPENED,
    ):
        alert, _ = ThresholdAlert.objects.update_or_create(
            subscription=acme, period=period, threshold=threshold, defaults={"notified_at": None}
        )
        send_threshold_alert(alert.pk)
    report, alert_email, reset_email = mailoutbox
    report_html = report.alternatives[0][0]
    for content_id, png in report.inline_images:
        inline = "data:image/png;base64," + base64.b64encode(png).decode()
        report_html = report_html.replace(f"cid:{content_id}", inline)
    return {
        "report": report_html,
        "reset": reset_email.alternatives[0][0],
        "alert": alert_email.alternatives[0][0],  # last: the test reads its link
    }


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_the_admin_and_the_usage_pages_show_their_key_columns_without_sideways_scrolling(
    visit, viewport
):
    alice = visit(viewport=viewport)
    alice.log_in("alice@acme.example", admin=True)
    size = viewport["width"]

    alice.page.goto(alice.base + "/admin/credit-usage/")
    assert fits_the_width(alice)
    assert_times_name_their_zone(alice)
    alice.screenshot(f"look-admin-dashboard-{size}")

    alice.page.goto(alice.base + "/admin/credits/creditevent/")
    assert fits_the_width(alice)
    times = alice.page.locator("#result_list td.field-time, #result_list th.field-time")
    assert all(ZONE_NAMED.search(text.strip()) for text in times.all_inner_texts())
    if viewport is WIDE:
        for column in ("time", "credits_amount", "excess_amount", "status", "model", "agent"):
            assert_inside_viewport(alice, f"#result_list th.column-{column}")
    alice.screenshot(f"look-admin-credit-events-{size}")

    alice.page.goto(alice.base + "/admin/credits/billingperiod/")
    assert fits_the_width(alice)
    used = alice.page.locator("#result_list td.field-credits_used_amount").all_inner_texts()
    assert used and all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{4}", text) for text in used)
    assert alice.errors == []

    carol = visit(viewport=viewport)
    carol.log_in("carol@acme.example")
    assert fits_the_width(carol)
    assert_inside_viewport(carol, "#recent-runs td.run-credits")
    assert_inside_viewport(carol, "#recent-runs td.run-status")
    assert carol.page.locator("#recent-runs time").count()
    assert_times_name_their_zone(carol)
    carol.screenshot(f"look-my-usage-{size}")
    assert carol.errors == []

    bob = visit(viewport=viewport)
    bob.log_in("bob@acme.example")
    bob.page.goto(bob.base + "/usage/environments/")
    assert fits_the_width(bob)
    assert_inside_viewport(bob, "#usage-by-member td.member-credits")
    assert_times_name_their_zone(bob)
    bob.screenshot(f"look-environment-{size}")
    assert bob.errors == []


# Every page a role reaches, by the admin's navigation (the subscription admin) or the site's.
ADMIN_CHANGELISTS = [
    "/admin/accounts/apikey/",
    "/admin/accounts/auditevent/",
    "/admin/accounts/environment/",
    "/admin/accounts/membership/",
    "/admin/accounts/project/",
    "/admin/accounts/subscription/",
    "/admin/accounts/team/",
    "/admin/accounts/user/",
    "/admin/credits/agent/",
    "/admin/credits/billingperiod/",
    "/admin/credits/creditevent/",
    "/admin/credits/creditlimit/",
    "/admin/credits/product/",
    "/admin/reports/delivery/",
    "/admin/reports/reportschedule/",
]
ADMIN_PAGES = [
    "/admin/",
    "/admin/credit-usage/",
    "/admin/reports/",
    "/admin/statements/",
    *ADMIN_CHANGELISTS,
]
ROLE_PAGES = {
    # role: (email, log in through the admin?, pages)
    "subscription-admin": ("alice@acme.example", True, ADMIN_PAGES),
    "project-manager": (
        "bob@acme.example",
        False,
        [
            "/usage/",
            "/usage/environments/",
            "/usage/reports/",
            "/usage/schedules/",
            "/usage/alerts/",
        ],
    ),
    "member": ("carol@acme.example", False, ["/usage/", "/usage/reports/"]),
}
# A zone after a time: an abbreviation or offset ("08:00 CET"), or the zone's name in brackets
# ("08:00 (Europe/Prague)", as a schedule's time reads).
ZONE_AFTER_TIME = r"\d{2}:\d{2} (([A-Z]{2,5}|[+-]\d{2,4})\b|\([A-Za-z_]+(/[A-Za-z_+-]+)+\))"
# A time of day in a table cell or a label, in any of the formats the pages use.
TIME_OF_DAY = re.compile(r"\b\d{1,2}:\d{2}\b|\b[ap]\.m\.")
TIME_CELLS = """re => [...document.querySelectorAll(`main td, main th, main dd, main label,
    #content td, #content th, #content .readonly, #content label, time`)]
    .filter(e => !e.querySelector('td, th, dd, time'))
    .map(e => e.textContent.trim().replace(/\\s+/g, ' '))
    .filter(text => new RegExp(re).test(text))"""


def page_problems(visit: Visit, path: str) -> tuple[list[str], int]:
    """Open ``path``; return what is wrong with its look (an empty list when nothing is) and
    how many times of day it shows."""
    visit.errors.clear()
    response = visit.page.goto(visit.base + path)
    visit.page.wait_for_load_state("networkidle")
    problems = [] if response.ok else [f"{response.status} {path}"]
    if not fits_the_width(visit):
        # Tables may scroll inside their own box; the page itself may not scroll sideways.
        problems.append("the page scrolls sideways")
    times = visit.page.evaluate(TIME_CELLS, TIME_OF_DAY.pattern)
    unzoned = [text for text in times if not re.search(ZONE_AFTER_TIME, text)]
    problems += [f"time without a zone: {text[:80]}" for text in unzoned[:3]]
    problems += visit.errors
    return problems, len(times)


def screenshot_name(role: str, path: str, width: int) -> str:
    slug = path.strip("/").replace("/", "-") or "home"
    return f"look-{role}-{slug}-{width}"


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_every_page_of_every_role_looks_right(visit, viewport):
    """Every page each role can reach, at a desk and on a phone: no sideways scrolling, no
    console error or failed request, every time names its zone; a screenshot of each."""
    width = viewport["width"]
    problems, times = {}, {}
    for role, (email, admin, pages) in ROLE_PAGES.items():
        person = visit(viewport=viewport)
        person.log_in(email, admin=admin)
        if admin:
            links = person.page.eval_on_selector_all(
                "#content-main a, #nav-sidebar a", "els => els.map(e => e.getAttribute('href'))"
            )
            missing = [path for path in ADMIN_CHANGELISTS if path not in links]
            assert missing == [], f"not in the admin's navigation: {missing}"
            # One change form: the subscription's own.
            person.page.goto(person.base + "/admin/accounts/subscription/")
            change = person.page.locator("#result_list tbody th a").first.get_attribute("href")
            pages = [*pages, change]
        for path in pages:
            found, times[path] = page_problems(person, path)
            name = "change-form" if path == pages[-1] and admin else path
            person.screenshot(screenshot_name(role, name, width))
            if found:
                problems[f"{role} {path}"] = found
    assert problems == {}
    # The zone check saw times: the ledger's, the schedules' and the recent runs'.
    for path in ("/admin/credits/creditevent/", "/admin/reports/reportschedule/", "/usage/"):
        assert times[path], f"no time of day on {path}"


@pytest.mark.parametrize("width", EMAIL_WIDTHS)
def test_the_emails_fit_600_and_390_px(rendered_emails, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, html in rendered_emails.items():
        page.set_content(html)
        assert page.evaluate(NO_OVERFLOW), f"the {name} email is wider than {width} px"
        # A member's address stays on one or two lines, never a character at a time.
        for cell in page.locator("td", has_text=re.compile(r"^\S+@\S+$")).all():
            assert cell.bounding_box()["height"] < 50, cell.inner_text()
        page.screenshot(path=SCREENSHOTS / f"look-email-{name}-{width}.png", full_page=True)
    link = page.locator("a", has_text="See the usage")
    assert "/admin/credit-usage/?subscription=" in link.get_attribute("href")
    context.close()


# --- Content-Security-Policy -------------------------------------------------------------------

# Records what the policy blocks (the console says it too); Playwright's init scripts are not
# subject to the page's policy.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", event => {
    window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def open_page(visit: Visit, path: str, ready: str) -> list[str]:
    """Open ``path``, wait for ``ready`` to show, and return what went wrong on the way."""
    visit.errors.clear()
    response = visit.page.goto(visit.base + path)
    assert response.ok, f"{response.status} {path}"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    # As long as the API docs' own tests wait: ReDoc lays out the whole schema before it shows.
    expect(visit.page.locator(ready).first).to_be_visible(timeout=20_000)
    visit.page.wait_for_load_state("networkidle")
    violations = visit.page.evaluate("window.__cspViolations")
    return [*visit.errors, *(f"CSP: {violation}" for violation in violations)]


def test_the_pages_and_the_admin_pass_the_content_security_policy(visit):
    """The usage pages, the admin (its forms, lists and the Chart.js dashboard) and the login
    forms run under the policy with no console error and nothing blocked."""
    anonymous = visit()
    anonymous.context.add_init_script(CSP_WATCH)
    problems = {
        "/login/": open_page(anonymous, "/login/", "form"),
        "/admin/login/": open_page(anonymous, "/admin/login/", "#login-form"),
    }
    alice = visit()
    alice.context.add_init_script(CSP_WATCH)
    alice.log_in("alice@acme.example", admin=True)
    for path, ready in [
        ("/usage/", "main h1"),
        ("/admin/", "#content h1"),
        ("/admin/credit-usage/", "canvas"),
        ("/admin/accounts/apikey/", "#result_list"),
        ("/admin/accounts/apikey/add/", "#apikey_form"),
        ("/admin/reports/reportschedule/add/", "#reportschedule_form"),
        ("/admin/credits/creditevent/", "#result_list"),
    ]:
        problems[path] = open_page(alice, path, ready)

    assert {path: found for path, found in problems.items() if found} == {}
    alice.page.goto(alice.base + "/admin/credit-usage/")
    hover_latest_day(alice)  # Chart.js draws and its tooltip works under the policy
    assert alice.page.evaluate("window.__cspViolations") + alice.errors == []


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_the_api_docs_pass_the_content_security_policy(visit):
    alice = visit()
    alice.context.add_init_script(CSP_WATCH)
    alice.log_in("alice@acme.example", admin=True)
    problems = {
        "swagger": open_page(alice, "/api/schema/swagger/", ".swagger-ui .info"),
        "redoc": open_page(alice, "/api/schema/redoc/", "[role=navigation], .api-content"),
    }
    # ReDoc's bundle always shows its maker's logo from their site; the page's own img-src
    # policy refuses it inside the browser, so that no request leaves for a third-party host.
    problems["redoc"] = [found for found in problems["redoc"] if REDOC_LOGO not in found]

    assert {name: found for name, found in problems.items() if found} == {}


# --- The alert rules and the statements ---------------------------------------------------------

# Form controls without a label (a <label for>, a wrapping label, aria-label or aria-labelledby).
UNLABELLED = """() => [...document.querySelectorAll(
        "input:not([type=hidden]), select, textarea")]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
        && !e.getAttribute("aria-labelledby"))
    .map(e => e.name || e.id || e.outerHTML.slice(0, 60))"""
# Buttons (and links that look like them) with no name a screen reader could say.
NAMELESS = """() => [...document.querySelectorAll(
        "button, [role=button], a.button, input[type=submit]")]
    .filter(e => !(e.innerText || e.value || e.getAttribute("aria-label") || "").trim())
    .map(e => e.outerHTML.slice(0, 80))"""


# aria-describedby and aria-labelledby that name no element of the page.
DANGLING = """() => [...document.querySelectorAll("[aria-describedby], [aria-labelledby]")]
    .flatMap(e => [e.getAttribute("aria-describedby"), e.getAttribute("aria-labelledby")])
    .filter(Boolean).flatMap(ids => ids.split(/\\s+/))
    .filter(id => !document.getElementById(id))"""


def assert_labelled(visit: Visit) -> None:
    """Every form control has a label, every button a name, and what describes or labels an
    element is on the page (a field's help, read out with it)."""
    assert visit.page.evaluate(UNLABELLED) == []
    assert visit.page.evaluate(NAMELESS) == []
    assert visit.page.evaluate(DANGLING) == []


def tab_to(visit: Visit, selector: str, *, presses: int = 60) -> None:
    """Press Tab from the top of the page until ``selector`` has the focus: it is reachable
    from the keyboard, in the page's order."""
    page = visit.page
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    target = page.locator(selector).first
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{selector} is not reached with the Tab key")


def assert_looks_right(visit: Visit) -> None:
    """The page's common checks: no sideways scrolling, zoned times, labels, no errors."""
    assert fits_the_width(visit)
    assert_times_name_their_zone(visit)
    found, _ = page_problems(visit, visit.page.url.removeprefix(visit.base))
    assert found == []
    assert_labelled(visit)


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_a_project_manager_adds_an_alert_sees_it_listed_and_deletes_it(visit, viewport):
    size = viewport["width"]
    bob = visit(viewport=viewport)
    bob.log_in("bob@acme.example")
    bob.page.goto(bob.base + "/usage/environments/")
    tab_to(bob, 'nav a[href="/usage/alerts/"]')
    bob.page.keyboard.press("Enter")
    expect(bob.page.locator("h1")).to_have_text("Alerts")
    expect(bob.page.locator("nav [aria-current=page]")).to_have_text("Alerts")
    # Bob has no alert of his own yet: the empty state says so and offers to add one.
    empty = bob.page.locator("[data-empty]")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No alert yet")
    assert_looks_right(bob)
    bob.screenshot(f"look-alerts-empty-{size}")

    tab_to(bob, "a[href='/usage/alerts/new/']")
    bob.page.keyboard.press("Enter")
    expect(bob.page.locator("h1")).to_have_text("Add an alert")
    assert_looks_right(bob)
    form = bob.page.locator("form.schedule-form")
    # Filled by the labels people read: each control is named by its label.
    form.get_by_label("Name").fill("Production at 80%")
    environment = form.get_by_label("Environment")
    expect(environment.locator("option:checked")).to_have_text("Website / Production")
    thresholds = form.get_by_label("Thresholds (%)")
    expect(thresholds).to_have_accessible_description(re.compile("Percentages of the budget"))
    thresholds.fill("80, 100")
    form.get_by_label("Budget (credits per period)").fill("5000")
    expect(form.get_by_label("Email")).to_have_value("bob@acme.example")  # his own, to start
    form.get_by_label("Email").fill("bob@acme.example\ncarol@acme.example")
    expect(form.get_by_label("Send the alerts")).to_be_checked()
    bob.screenshot(f"look-alert-form-{size}")
    form.get_by_role("button", name="Add the alert").focus()
    bob.page.keyboard.press("Enter")

    expect(bob.page.locator("[data-message]")).to_have_text("Saved “Production at 80%”.")
    expect(bob.page.locator("h1")).to_have_text("Production at 80%")
    expect(bob.page.locator(".page-header .lead")).to_contain_text("Active · Website / Production")
    assert_looks_right(bob)
    bob.screenshot(f"look-alert-saved-{size}")

    bob.page.locator(".breadcrumbs a", has_text="Alerts").click()
    row = bob.page.locator("#alert-rules tbody tr[data-rule]")
    expect(row).to_have_count(1)
    expect(row.locator("th")).to_have_text("Production at 80%")
    for cell in ("environment", "thresholds", "channels", "status"):
        expect(row.locator(f'[data-cell="{cell}"]')).to_be_visible()
    expect(row.locator('[data-cell="environment"]')).to_contain_text("Website / Production")
    expect(row.locator('[data-cell="thresholds"]')).to_contain_text(
        "80%, 100% of 5,000.0000 credits"
    )
    channels = row.locator('[data-cell="channels"]')
    expect(channels).to_contain_text("Email")
    expect(channels).to_contain_text("2 recipients")
    expect(row.locator('[data-cell="status"]')).to_have_text("Active")
    assert bob.page.locator("[data-empty]").count() == 0
    assert_looks_right(bob)
    bob.screenshot(f"look-alerts-{size}")

    # Deleted from the keyboard: the rule's page, Delete, then "Yes, delete it".
    row.locator("th a").focus()
    bob.page.keyboard.press("Enter")
    expect(bob.page.locator("h1")).to_have_text("Production at 80%")
    tab_to(bob, ".page-header a.button:text-is('Delete')")
    bob.page.keyboard.press("Enter")
    expect(bob.page.locator("h1")).to_have_text("Delete “Production at 80%”?")
    assert_looks_right(bob)
    bob.screenshot(f"look-alert-delete-{size}")
    bob.page.get_by_role("button", name="Yes, delete it").focus()
    bob.page.keyboard.press("Enter")
    expect(bob.page.locator("[data-message]")).to_have_text("Deleted “Production at 80%”.")
    expect(bob.page.locator("[data-empty]")).to_be_visible()
    assert bob.errors == []


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_a_subscription_admin_reads_a_closed_months_statement_and_downloads_it(
    visit, viewport, settings
):
    # The demo seeds last month; with no grace window it is closed whatever today's date.
    settings.LATE_EVENT_GRACE_HOURS = 0
    size = viewport["width"]
    alice = visit(viewport=viewport)
    alice.log_in("alice@acme.example", admin=True)
    tab_to(alice, '#content-main a[href="/admin/statements/"]', presses=120)
    alice.page.keyboard.press("Enter")
    expect(alice.page.locator("#content h1")).to_have_text("Statements")
    subscription = alice.page.locator("#id_subscription").input_value()

    months = alice.page.locator("[data-month]")
    expect(months.first).to_be_visible()
    month = months.first.get_attribute("data-month")
    # The latest closed month is shown first, and its link says so.
    expect(months.first).to_have_attribute("aria-current", "page")
    months.first.click()
    api = alice.api(f"/api/v1/statements/{month}/", subscription=subscription)
    assert api["closed"] is True and api["currency"]
    expect(alice.page.locator("#statement-title")).to_contain_text(
        f"{date.fromisoformat(month + '-01'):%B %Y}"
    )

    priced = [line for line in api["lines"] if line["amount"] is not None]
    assert priced, "the demo's month has priced lines"
    table = alice.page.locator("#statement-lines")
    for line in priced:
        row = table.locator("tbody tr", has_text=line["description"]).first
        expect(row).to_be_visible()
        expect(row.locator("td.amount")).to_have_attribute("data-value", line["amount"])
        expect(row.locator("td.amount")).to_have_text(
            format_money(Decimal(line["amount"]), api["currency"])
        )
    total = alice.page.locator('[data-figure="statement-total"]')
    expect(total).to_be_visible()
    expect(total).to_have_attribute("data-value", api["total"])
    expect(total).to_have_text(format_money(Decimal(api["total"]), api["currency"]))
    # The usage lines' prices are in force from and to a moment in the subscription's zone.
    assert table.locator("tbody time").count()
    assert_looks_right(alice)
    alice.screenshot(f"look-admin-statements-{size}")

    download = alice.page.get_by_role("link", name="Download CSV")
    download.focus()
    with alice.page.expect_download() as info:
        alice.page.keyboard.press("Enter")
    assert info.value.suggested_filename.endswith(".csv")
    answer = alice.page.request.get(
        alice.base + f"/api/v1/statements/{month}/",
        params={"subscription": subscription, "format": "csv"},
    )
    assert answer.ok
    assert Path(info.value.path()).read_bytes() == answer.body()
    assert alice.errors == []


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_the_statements_page_says_when_no_month_has_closed_yet(visit, viewport, settings):
    # A grace window longer than the demo's history: no period has closed.
    settings.LATE_EVENT_GRACE_HOURS = 24 * 100
    alice = visit(viewport=viewport)
    alice.log_in("alice@acme.example", admin=True)
    alice.page.goto(alice.base + "/admin/statements/")
    empty = alice.page.locator("[data-empty]")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No period of Acme Corp has closed yet")
    assert alice.page.locator("#statement-lines").count() == 0
    assert_looks_right(alice)
    alice.screenshot(f"look-admin-statements-empty-{viewport['width']}")
    assert alice.errors == []
