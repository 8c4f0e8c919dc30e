"""The Usage menu in the header: the exports each person's roles allow (source 000), on the
usage pages and in the admin, each link a working export of what that role may read."""

import re
from html import unescape

import pytest

from accounts.models import Role
from reports.usage_menu import usage_menu
from tests import factories

pytestmark = pytest.mark.django_db


def menu(client, url: str) -> list[tuple[str, str, str]]:
    """The menu's entries on the page at ``url``: (scope, label, link)."""
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    return [
        (scope, unescape(label), unescape(href))
        for href, scope, label in re.findall(
            r'<a href="([^"]+)" data-menu-export="(\w+)" download>([^<]+)</a>', html
        )
    ]


def labels(entries) -> list[str]:
    return [label for _, label, _ in entries]


def test_a_member_is_offered_their_own_usage_only(client, world):
    client.force_login(world.member)

    entries = menu(client, "/usage/")

    assert labels(entries) == ["My usage"]
    response = client.get(entries[0][2])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")


def test_a_project_manager_is_offered_the_environments_they_manage(client, world):
    client.force_login(world.manager)

    entries = menu(client, "/usage/environments/")

    # bob manages Production; in Staging he is a member, so it is not his to export.
    assert labels(entries) == ["My usage", "All users in Website / Production"]
    assert [client.get(link).status_code for _, _, link in entries] == [200, 200]


def test_an_admin_is_offered_their_subscriptions_and_sub_accounts_in_the_admin_header(
    client, world
):
    labs = factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    client.force_login(world.admin)

    entries = menu(client, "/admin/")

    assert labels(entries) == [
        "My usage",
        "All users across Acme",
        "All users across Acme Labs",
    ]
    assert f"subscription={labs.pk}" in entries[2][2]
    assert [client.get(link).status_code for _, _, link in entries] == [200, 200, 200]
    assert "Globex" not in " ".join(labels(entries))


def test_someone_in_two_subscriptions_is_told_which_is_which(client, world):
    factories.membership(world.member, Role.MEMBER, environment=world.foreign_environment)
    client.force_login(world.member)

    assert labels(menu(client, "/usage/")) == ["My usage in Acme", "My usage in Globex"]


def test_the_menu_reads_the_roles_in_one_query(world, django_assert_num_queries):
    factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    factories.membership(world.admin, Role.PROJECT_MANAGER, environment=world.foreign_environment)

    with django_assert_num_queries(1):
        entries = usage_menu(world.admin)

    assert [entry.label for entry in entries] == [
        "My usage in Acme",
        "My usage in Globex",
        "All users in Intranet / Production",
        "All users across Acme",
        "All users across Acme Labs",
    ]


def test_platform_staff_without_a_role_get_no_menu(client, world):
    client.force_login(factories.UserFactory(is_staff=True, is_superuser=True))

    assert menu(client, "/admin/") == []
