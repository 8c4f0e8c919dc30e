"""The Usage menu: the CSV exports a person's roles allow, in the header of every usage page
and of the admin (source 000, "Who can export what").

* their own usage, in each subscription they hold a role in (anyone);
* everyone's usage in each environment they manage as its project manager;
* everyone's usage across each subscription they administer, sub-accounts included.

Each entry is a link to the export API (``dashboard.export_url``), which checks the role again.
"""

from dataclasses import dataclass

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef
from django.db.models.functions import JSONObject

from accounts.models import Membership, Role, Subscription

from .dashboard import export_url


@dataclass(frozen=True)
class MenuExport:
    scope: str  # "mine", "environment" or "subscription", as the export API names it
    label: str
    url: str


def usage_menu(viewer) -> list[MenuExport]:
    """One query: the viewer's roles, read through the scoping layer, each admin role with the
    sub-accounts of its subscription."""
    if not viewer.is_authenticated:
        return []
    sub_accounts = (
        Subscription.objects.administered_by(viewer)
        .filter(parent_id=OuterRef("subscription_id"))
        .order_by("name", "pk")
        .values(json=JSONObject(pk="pk", name="name"))
    )
    roles = list(
        Membership.objects.visible_to(viewer)
        .filter(user=viewer)
        .select_related("subscription", "environment__project")
        .annotate(sub_accounts=ArraySubquery(sub_accounts))
        .order_by("subscription__name", "subscription_id", "environment__project__name")
    )
    subscriptions = list({role.subscription_id: role.subscription for role in roles}.values())
    several = len(subscriptions) > 1
    mine = [
        MenuExport(
            "mine",
            f"My usage in {subscription.name}" if several else "My usage",
            export_url("mine", subscription=subscription),
        )
        for subscription in subscriptions
    ]
    environments = [
        MenuExport(
            "environment",
            f"All users in {role.environment}",
            export_url("environment", subscription=role.subscription, environment=role.environment),
        )
        for role in roles
        if role.role == Role.PROJECT_MANAGER
    ]
    administered = []
    for role in roles:
        if role.role == Role.SUBSCRIPTION_ADMIN:
            administered.append(role.subscription)
            administered.extend(Subscription(**sub_account) for sub_account in role.sub_accounts)
    across = [
        MenuExport(
            "subscription",
            f"All users across {subscription.name}",
            export_url("subscription", subscription=subscription),
        )
        for subscription in administered
    ]
    return [*mine, *environments, *across]
