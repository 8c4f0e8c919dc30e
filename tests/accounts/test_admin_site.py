"""Who gets the admin at all, what it looks like, and where the credit usage dashboard plugs in."""

import pytest
from django.contrib import admin
from django.http import HttpResponse
from django.urls import path, reverse

from accounts.models import User
from tests import factories

pytestmark = pytest.mark.django_db


# The admin with a stand-in for the credit usage dashboard (reports builds the real one).
urlpatterns = [
    path("admin/credit-usage/", lambda request: HttpResponse(), name="admin-credit-usage"),
    path("admin/reports/", lambda request: HttpResponse(), name="admin-reports"),
    path("admin/statements/", lambda request: HttpResponse(), name="admin-statements"),
    path("admin/", admin.site.urls),
]


@pytest.mark.parametrize("persona", ["member", "manager"])
@pytest.mark.parametrize(
    "url", ["/admin/", "/admin/accounts/apikey/", "/admin/credits/creditevent/"]
)
def test_members_and_project_managers_get_no_admin(client, world, persona, url):
    client.force_login(getattr(world, persona))

    response = client.get(url)

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_subscription_admin_signs_in_with_their_password(client, world):
    response = client.post(
        reverse("admin:login"),
        {"username": "alice@acme.example", "password": factories.PASSWORD, "next": "/admin/"},
    )

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_index_shows_the_subscription_admins_models_and_nothing_of_the_platform(client, world):
    client.force_login(world.admin)

    response = client.get("/admin/")

    content = response.content.decode()
    assert "Creditdesk administration" in content
    assert "<title>Your subscriptions, people and credits | Creditdesk admin</title>" in content
    for model in ["API keys", "Memberships", "Credit events", "Billing periods", "Users"]:
        assert model in content
    for platform_model in ["Groups", "Periodic tasks", "Tokens"]:
        assert platform_model not in content


def test_index_links_to_the_dashboard_the_reports_and_the_statements(client, world, settings):
    settings.ROOT_URLCONF = __name__
    client.force_login(world.admin)

    response = client.get("/admin/")

    assert '<a href="/admin/credit-usage/">Dashboard</a>' in response.content.decode()
    assert '<a href="/admin/reports/">Reports</a>' in response.content.decode()
    assert '<a href="/admin/statements/">Statements</a>' in response.content.decode()


def test_platform_superusers_see_every_subscription(client, world):
    client.force_login(User.objects.create_superuser("root@creditdesk.example", "x"))

    response = client.get(reverse("admin:accounts_subscription_changelist"))

    assert set(response.context["cl"].result_list) == {
        world.subscription,
        world.other_subscription,
    }
