"""The admin pages as the tests drive them: an object's URL, an add form posted by a
subscription's admin, and the check that other subscriptions and lower roles get nothing."""

from django.contrib.admin.utils import quote
from django.urls import reverse


def admin_url(obj, view: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[quote(obj.pk)])


def post_add_form(client, world, admin_name: str, /, *, follow: bool = False, **fields):
    """The admin of ``world.subscription`` posts the add form of ``admin_name`` ("app_model")
    with ``fields`` for that subscription."""
    client.force_login(world.admin)
    data = {"subscription": world.subscription.pk, **fields}
    return client.post(reverse(f"admin:{admin_name}_add"), data, follow=follow)


def post_enabled_alert_rule(client, world, **fields):
    """``post_add_form`` of an alert rule that is enabled and emails the admins."""
    fields = {"email_admins": "on", "enabled": "on", **fields}
    return post_add_form(client, world, "credits_alertrule", **fields)


def assert_hidden_from_others(client, world, objects, text: str) -> None:
    """Another subscription's admin is sent back to the admin index and does not see ``text``
    in the lists; a member of the subscription is sent to the login."""
    client.force_login(world.outsider)
    for obj in objects:
        assert client.get(admin_url(obj, "change")).status_code == 302  # to the admin index
        opts = obj._meta
        listing = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert text not in listing.content.decode()
    client.force_login(world.member)
    for obj in objects:
        assert client.get(admin_url(obj, "change")).status_code == 302  # to the login
