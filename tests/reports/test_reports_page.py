"""The Reports page: the admin's (``/admin/reports/``) and everyone else's
(``/usage/reports/``), their cards and previews, the download dialog's choices, and the
download, which is the report API's answer byte for byte."""

import re

import pytest
import time_machine
from django.test import Client

from accounts.models import Subscription
from tests import factories
from tests.factories import utc
from tests.reports.recorder import logged_in, record_november
from tests.reports.slugs import PER_MEMBER, REPORT_SLUGS

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 25, 12)
PAGE, ADMIN_PAGE = "/usage/reports/", "/admin/reports/"


def download_url(slug: str) -> str:
    return f"/usage/reports/{slug}/download/"


@pytest.fixture
def november(world):
    return record_november(world)


def page(user, path=PAGE, **query):
    with time_machine.travel(NOW, tick=False):
        return logged_in(user).get(path, query)


def cards(html: str) -> list[str]:
    return re.findall(r'data-report="([a-z-]+)"', html)


def body(response) -> bytes:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content)
    return response.content


def test_the_admin_sees_a_card_per_report_with_the_top_rows_in_the_admins_look(world, november):
    response = page(world.admin, ADMIN_PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert cards(html) == REPORT_SLUGS
    assert '<div class="breadcrumbs"><a href="/admin/">Home</a> &rsaquo; Reports' in html
    # This month's usage (18 credits), everyone's, most first.
    assert html.count("<strong data-total>18.0000</strong>") == len(REPORT_SLUGS)
    user_card = html.split('data-report="usage-by-user"')[1].split("</section>")[0]
    emails = re.findall(r"<td>([a-z]+@acme\.example)</td>", user_card)
    assert emails == ["alice@acme.example", "bob@acme.example", "carol@acme.example"]
    assert 'data-open-dialog="usage-by-user-download"' in html
    # It stands at the reports app's index: the schedules are still a click away.
    assert 'href="/admin/reports/reportschedule/"' in html


def test_a_project_manager_and_a_member_see_what_their_role_reads(world, november, teams):
    manager = page(world.manager).content.decode()
    member = page(world.member).content.decode()

    # No sub-account report below the admins; the rest as the API gives them to each.
    assert cards(manager) == cards(member) == REPORT_SLUGS[:-1]
    assert "alice@acme.example</td>" not in manager  # her usage is in Staging
    assert "<strong data-total>7.7500</strong>" in manager  # Production's, and bob's own
    assert "<strong data-total>3.7500</strong>" in member  # carol's own
    for someone_else in ("alice@acme.example</td>", "bob@acme.example</td>", "Backend"):
        assert someone_else not in member
    # The dialog offers only what the filters would accept from them.
    manager_teams = re.findall(r'id="usage-by-agent-team".*?</select>', manager, re.S)[0]
    assert "Platform" in manager_teams
    assert "Support" not in manager_teams  # carol's team: not the manager's to see
    assert "Globex" not in manager + member
    assert 'href="/usage/reports/" aria-current="page"' in member


def test_a_free_plan_shows_per_member_reports_locked_with_the_plans_that_have_them(world, november):
    Subscription.objects.filter(pk=world.subscription.pk).update(plan=Subscription.Plan.FREE)

    response = page(world.admin, ADMIN_PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    for slug in PER_MEMBER:
        card = html.split(f'data-report="{slug}"')[1].split("</section>")[0]
        assert "data-locked" in card
        assert "available on the Pro, Premium or Scale plans" in card
        assert "carol@acme.example" not in card
        assert "data-open-dialog" not in card
    product = html.split('data-report="usage-by-product"')[1].split("</section>")[0]
    assert "data-locked" not in product


@pytest.mark.parametrize(
    ("slug", "dialog", "api"),
    [
        (
            "usage-by-agent",
            {"timeframe": "custom", "start": "2026-10-01", "end": "2026-11-25", "period": "2026-10",
             "agent_type": "single_task", "model": "", "format": "csv"},
            {"start": "2026-10-01", "end": "2026-11-25", "agent_type": "single_task",
             "format": "csv"},
        ),
        (
            "usage-by-member-feature-credit-type",
            {"timeframe": "period", "period": "2026-10", "start": "2026-11-01", "format": "json"},
            {"period": "2026-10", "format": "json", "page_size": "1000"},
        ),
        (
            "usage-by-user",
            {"timeframe": "last_30_days", "feature": "chat", "format": "json"},
            {"timeframe": "last_30_days", "feature": "chat", "format": "json",
             "page_size": "1000"},
        ),
    ],
)  # fmt: skip
def test_the_download_is_the_report_apis_answer_byte_for_byte(world, november, slug, dialog, api):
    client = logged_in(world.admin)
    subscription = {"subscription": world.subscription.pk}

    with time_machine.travel(NOW, tick=False):
        download = client.get(download_url(slug), {**dialog, **subscription})
        answer = client.get(f"/api/v1/reports/{slug}/", {**api, **subscription})

    assert download.status_code == answer.status_code == 200
    assert body(download) == body(answer)
    assert download["Content-Type"] == answer["Content-Type"]
    extension = dialog["format"]
    label = {"usage-by-agent": "2026-10-01_2026-11-25", "usage-by-user": "2026-10-27_2026-11-25"}
    name = f"acme_{slug}_{label.get(slug, '2026-10')}.{extension}"
    assert download["Content-Disposition"] == f'attachment; filename="{name}"'
    assert answer["Content-Disposition"].endswith(f'; filename="{name}"')


def test_including_sub_accounts_adds_their_usage_and_names_their_keys(world, november):
    labs, _ = november.record_sub_account(credits="2.5")
    factories.membership(world.admin, "subscription_admin", subscription=labs)

    alone = page(world.admin, ADMIN_PAGE).content.decode()
    together = page(world.admin, ADMIN_PAGE, include_sub_accounts="true").content.decode()

    assert 'name="include_sub_accounts"' in alone
    assert "<strong data-total>18.0000</strong>" in alone
    user_card = together.split('data-report="usage-by-user"')[1].split("</section>")[0]
    assert "<strong data-total>20.5000</strong>" in user_card
    assert "Labs key (Acme Labs)" in user_card
    with time_machine.travel(NOW, tick=False):
        client = logged_in(world.admin)
        query = {"timeframe": "this_month", "format": "csv", "subscription": world.subscription.pk}
        download = client.get(
            download_url("usage-by-user"), {**query, "include_sub_accounts": "true"}
        )
        answer = client.get(
            "/api/v1/reports/usage-by-user/", {**query, "include_sub_accounts": "true"}
        )
    file = body(download)
    assert file == body(answer)
    assert b"Labs key (Acme Labs)" in file


def test_no_toggle_without_sub_accounts_or_below_the_admins(world, november):
    november.record_sub_account()

    assert 'name="include_sub_accounts"' not in page(world.manager).content.decode()
    # A member asking for sub-accounts gets their own usage, as the API would give it.
    html = page(world.member, include_sub_accounts="true").content.decode()
    assert "<strong data-total>3.7500</strong>" in html


def test_another_subscriptions_people_a_lower_role_and_strangers_get_nothing(world, november):
    acme = {"subscription": world.subscription.pk}
    outsider = logged_in(world.outsider)
    with time_machine.travel(NOW, tick=False):
        assert outsider.get(PAGE, acme).status_code == 404
        assert outsider.get(ADMIN_PAGE, acme).status_code == 404
        refused = outsider.get(
            download_url("usage-by-product"), {**acme, "timeframe": "this_month"}
        )
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        own = outsider.get(PAGE).content.decode()
        assert "Acme" not in own and "carol@acme.example" not in own

        # A member gets no sub-account report, from the page or the download.
        member = logged_in(world.member)
        lower = member.get(download_url("usage-by-sub-account"), {"timeframe": "this_month"})
        assert lower.status_code == 403
        assert member.get(ADMIN_PAGE).status_code == 302  # not staff: the admin's login

        anonymous = Client()
        assert anonymous.get(PAGE)["Location"].startswith("/login/")
        assert anonymous.get(ADMIN_PAGE)["Location"].startswith("/admin/login/")
        assert anonymous.get(download_url("usage-by-product"))["Location"].startswith("/login/")
        assert anonymous.get(download_url("usage-by-nothing")).status_code == 302
        assert member.get(download_url("usage-by-nothing")).status_code == 404


def test_the_usage_pages_and_the_admin_link_to_the_reports_page(world, november):
    assert 'href="/usage/reports/"' in page(world.member, "/usage/").content.decode()
    assert 'href="/admin/reports/"' in page(world.admin, "/admin/").content.decode()
    dashboard = page(world.admin, "/admin/credit-usage/").content.decode()
    assert f'href="/admin/reports/?subscription={world.subscription.pk}"' in dashboard


def test_the_page_reads_a_bounded_number_of_queries(world, november, django_assert_max_num_queries):
    with django_assert_max_num_queries(60):
        assert page(world.admin, ADMIN_PAGE).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"subscription": "abc", "timeframe": "this_month"},
        {"timeframe": "custom", "start": "2026-01-01", "end": "2027-06-01"},
        {"timeframe": "custom", "start": "yesterday"},
        {"timeframe": "period", "period": "2027-01"},
        {"timeframe": "this_month", "team": "999999"},
        {"timeframe": "next_year", "format": "xml"},
    ],
)
def test_a_bad_download_is_the_apis_json_refusal(world, query):
    with time_machine.travel(NOW, tick=False):
        response = logged_in(world.admin).get(download_url("usage-by-model"), query)

    assert response.status_code == 400
    refusals = ("invalid_timeframe", "invalid_filter", "validation_error")
    assert response.json()["error"]["code"] in refusals
