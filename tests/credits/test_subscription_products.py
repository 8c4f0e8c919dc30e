"""A subscription admin switches AI products on and off for their subscription (Global AI
settings); platform staff keep the catalogue, and events of a product that is off are refused."""

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from accounts.audit import AuditEvent
from credits.models import CreditEvent, DailyUsage, Product
from tests import factories

pytestmark = pytest.mark.django_db

EVENTS_URL = "/api/v1/events/"


def change_url(subscription) -> str:
    return reverse("admin:accounts_subscription_change", args=[quote(subscription.pk)])


def settings_form(subscription, *products) -> dict:
    """What the change form posts: the admin's own fields and the products ticked."""
    return {
        "limit_mode": subscription.limit_mode,
        "excess_allowance": str(subscription.excess_allowance),
        "enabled_products": [product.pk for product in products],
    }


@pytest.fixture
def writing(world):
    return factories.ProductFactory(slug="writing", name="Writing assistant")


def test_the_admin_enables_and_disables_products_of_their_subscription(
    client, world, product, writing
):
    client.force_login(world.admin)

    form = client.get(change_url(world.subscription)).context["adminform"].form
    assert list(form.fields["enabled_products"].queryset) == [product, writing]
    response = client.post(
        change_url(world.subscription), settings_form(world.subscription, writing)
    )

    assert response.status_code == 302
    assert list(world.subscription.enabled_products.all()) == [writing]
    assert list(world.other_subscription.enabled_products.all()) == [product]
    audit = AuditEvent.objects.get(subscription=world.subscription, action="admin.changed")
    assert audit.actor == world.admin
    assert audit.changes["enabled_products"] == ["AI agent", "Writing assistant"]


def test_the_admin_cannot_touch_another_subscriptions_products(client, world, product):
    client.force_login(world.admin)

    response = client.post(change_url(world.other_subscription), settings_form(world.subscription))

    assert response.status_code == 302
    assert response.url == reverse("admin:index")  # as if it did not exist
    assert list(world.other_subscription.enabled_products.all()) == [product]
    assert not AuditEvent.objects.filter(subscription=world.other_subscription).exists()


def test_only_platform_staff_create_products(client, world):
    client.force_login(world.admin)

    assert client.get(reverse("admin:credits_product_add")).status_code == 403
    response = client.post(reverse("admin:credits_product_add"), {"name": "X", "slug": "x"})

    assert response.status_code == 403
    assert not Product.objects.exists()


def test_with_no_product_enabled_every_event_is_refused_and_nothing_is_stored(
    client, world, key_client, event_payload, product
):
    client.force_login(world.admin)
    client.post(change_url(world.subscription), settings_form(world.subscription))

    response = key_client.post(EVENTS_URL, event_payload(), format="json")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "product_not_enabled"
    assert not CreditEvent.objects.exists()
    assert not DailyUsage.objects.exists()
    assert key_client.get("/api/v1/balance/").json()["used"] == "0.0000"
