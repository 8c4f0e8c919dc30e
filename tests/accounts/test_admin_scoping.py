"""Every admin shows a subscription admin their own subscription's objects and nothing else.

Each check has its twin: Alice (Acme's admin) sees Acme's object, Charlie (Globex's admin)
does not, through changelists, change/history/delete views, add-form choices, autocomplete,
list filters, search and actions.
"""

import pytest
from django.urls import reverse

from tests import factories
from tests.admin_pages import admin_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(world):
    """One object of each kind in Acme, the subscription Alice administers."""
    team = factories.TeamFactory(subscription=world.subscription, name="Writers")
    factories.team_membership(world.member, team)
    api_key, _ = factories.api_key(world.subscription, name="Acme backend")
    factories.api_key(world.other_subscription, name="Globex backend")
    return {
        "subscription": world.subscription,
        "project": world.environment.project,
        "environment": world.environment,
        "membership": world.member.memberships.get(),
        "team": team,
        "apikey": api_key,
        "user": world.member,
    }


MODELS = ["subscription", "project", "environment", "membership", "team", "apikey", "user"]


def listed(client, model: str, **params) -> list:
    response = client.get(reverse(f"admin:accounts_{model}_changelist"), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.mark.parametrize("model", MODELS)
def test_changelist_lists_only_the_users_own_subscription(client, world, acme, model):
    client.force_login(world.admin)
    assert acme[model] in listed(client, model)

    client.force_login(world.outsider)
    assert acme[model] not in listed(client, model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("view", ["change", "history"])
def test_own_objects_open(client, world, acme, model, view):
    client.force_login(world.admin)

    assert client.get(admin_url(acme[model], view)).status_code == 200


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("view", ["change", "history", "delete"])
def test_another_subscriptions_objects_do_not_open(client, world, acme, model, view):
    client.force_login(world.outsider)

    response = client.get(admin_url(acme[model], view))

    assert response.status_code in (302, 403)
    if response.status_code == 302:
        assert response.url == reverse("admin:index")


def test_another_subscriptions_object_cannot_be_changed_by_post(client, world, acme):
    project = acme["project"]
    client.force_login(world.outsider)

    response = client.post(admin_url(project, "change"), {"name": "Taken over"})

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "Website"


def add_form_choices(client, model: str, field: str) -> set:
    response = client.get(reverse(f"admin:accounts_{model}_add"))
    assert response.status_code == 200
    return set(response.context["adminform"].form.fields[field].queryset)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("project", "subscription"),
        ("environment", "project"),
        ("membership", "subscription"),
        ("membership", "environment"),
        ("membership", "user"),
        ("team", "subscription"),
        ("apikey", "subscription"),
        ("apikey", "environment"),
        ("user", "subscription"),
        ("user", "environment"),
    ],
)
def test_add_form_choices_are_the_users_own(client, world, model, field):
    client.force_login(world.admin)
    own = add_form_choices(client, model, field)
    client.force_login(world.outsider)
    theirs = add_form_choices(client, model, field)

    assert own
    assert theirs
    assert not own & theirs


def test_environment_choices_in_detail(client, world):
    client.force_login(world.admin)
    assert add_form_choices(client, "membership", "environment") == {
        world.environment,
        world.other_environment,
    }
    assert add_form_choices(client, "membership", "user") == {
        world.admin,
        world.manager,
        world.member,
    }

    client.force_login(world.outsider)
    assert add_form_choices(client, "membership", "environment") == {world.foreign_environment}


def test_team_member_choices_are_the_users_own(client, world, acme):
    client.force_login(world.outsider)

    response = client.get(
        admin_url(factories.TeamFactory(subscription=world.other_subscription), "change")
    )

    inline = response.context["inline_admin_formsets"][0].formset
    assert set(inline.empty_form.fields["user"].queryset) == {world.outsider}


def autocomplete(client, app_label: str, model_name: str, field_name: str, term="") -> set:
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term},
    )
    assert response.status_code == 200
    return {result["text"] for result in response.json()["results"]}


@pytest.mark.parametrize(
    ("model_name", "field_name"),
    [
        ("membership", "user"),
        ("membership", "environment"),
        ("membership", "subscription"),
        ("teammembership", "user"),
        ("teammembership", "team"),
        ("apikey", "environment"),
        ("environment", "project"),
    ],
)
def test_autocomplete_offers_only_the_users_own_objects(
    client, world, acme, model_name, field_name
):
    factories.TeamFactory(subscription=world.other_subscription, name="Globex team")
    client.force_login(world.admin)
    own = autocomplete(client, "accounts", model_name, field_name)
    client.force_login(world.outsider)
    theirs = autocomplete(client, "accounts", model_name, field_name)

    assert own
    assert theirs
    assert not own & theirs


def test_autocomplete_searches_within_the_users_own_people(client, world):
    client.force_login(world.admin)
    assert autocomplete(client, "accounts", "membership", "user", term="acme") == {
        "alice@acme.example",
        "bob@acme.example",
        "carol@acme.example",
    }

    client.force_login(world.outsider)
    assert autocomplete(client, "accounts", "membership", "user", term="acme") == set()


def filter_choices(client, model: str) -> set:
    response = client.get(reverse(f"admin:accounts_{model}_changelist"))
    changelist = response.context["cl"]
    return {
        str(choice["display"])
        for spec in changelist.filter_specs
        for choice in spec.choices(changelist)
    }


@pytest.mark.parametrize("model", ["membership", "apikey"])
def test_list_filters_offer_only_the_users_own_environments(client, world, acme, model):
    client.force_login(world.admin)
    own = filter_choices(client, model)
    client.force_login(world.outsider)
    theirs = filter_choices(client, model)

    assert {"Website / Production", "Website / Staging"} <= own
    assert "Intranet / Production" not in own
    assert "Intranet / Production" in theirs
    assert not {"Website / Production", "Website / Staging"} & theirs


def test_subscription_filter_lists_sub_accounts_but_no_other_tenant(client, world):
    factories.SubscriptionFactory(name="Acme Labs", parent=world.subscription)
    client.force_login(world.admin)

    choices = filter_choices(client, "project")

    assert {"Acme", "Acme Labs"} <= choices
    assert "Globex" not in choices


@pytest.mark.parametrize(("model", "term"), [("user", "acme.example"), ("membership", "carol")])
def test_search_finds_only_the_users_own_objects(client, world, model, term):
    client.force_login(world.admin)
    assert listed(client, model, q=term)

    client.force_login(world.outsider)
    assert listed(client, model, q=term) == []


def test_actions_ignore_another_subscriptions_objects(client, world, acme):
    api_key = acme["apikey"]
    client.force_login(world.outsider)

    client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [api_key.pk]},
    )

    api_key.refresh_from_db()
    assert not api_key.revoked
