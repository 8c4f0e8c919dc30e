"""The subscription admin's "Credit usage" analytics and Reports page, inside the Django admin.

Routed from ``config/urls.py`` ahead of ``admin.site.urls`` (``include("reports.admin_views")``
at ``admin/credit-usage/``); every view is wrapped in ``admin.site.admin_view``, so only staff
reach it, and reads only what ``Subscription.objects.administered_by`` allows. The admin index
links here through the URL name ``admin-credit-usage`` (see ``templates/admin/index.html``).
"""

from django.contrib import admin
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from accounts.models import User
from core.api_errors import STATUS_BY_CODE
from core.errors import DomainError

from . import dashboard, reports_page, statements
from .member_table import MemberFilters
from .timeframes import date_range_from
from .views import (
    chosen,
    member_detail,
    members_table_context,
    reports_page_context,
)


def _subscription(subscriptions, query):
    """The subscription (or sub-account) asked for: one the viewer administers, else 404."""
    return chosen(
        subscriptions,
        query.get("subscription"),
        key=lambda subscription: str(subscription.pk),
        missing="No such subscription among those you administer.",
    )


def credit_usage(request):
    subscriptions = dashboard.administered_subscriptions(request.user)
    context = {**admin.site.each_context(request), "title": "Credit usage", "page": None}
    if not subscriptions:
        return TemplateResponse(request, "admin/credit_usage.html", context)
    subscription = _subscription(subscriptions, request.GET)
    date_range, problems = date_range_from(
        subscription=subscription, query=request.GET, now=timezone.now()
    )
    page = dashboard.subscription_dashboard(
        viewer=request.user,
        subscription=subscription,
        subscriptions=subscriptions,
        date_range=date_range,
        filters=MemberFilters.from_query(request.GET),
        member_page=request.GET.get("page"),
    )
    context.update(
        page=page,
        problems=problems,
        subtitle=subscription.name,
        **members_table_context(
            request.GET, date_range, parameter="subscription", value=subscription.pk
        ),
    )
    return TemplateResponse(request, "admin/credit_usage.html", context)


def member_usage(request, user_id: int):
    """One member's usage in a subscription the viewer administers (a paid-plan team view)."""
    subscriptions = dashboard.administered_subscriptions(request.user)
    if not subscriptions:
        raise Http404("You administer no subscription.")
    subscription = _subscription(subscriptions, request.GET)
    person = (
        User.objects.visible_to(request.user)
        .filter(pk=user_id, memberships__subscription=subscription)
        .first()
    )
    if person is None:
        raise Http404("No such member in this subscription.")
    context, status = member_detail(request, person, subscription, environment=None)
    context.update(
        admin.site.each_context(request),
        title=f"Credit usage of {person.get_full_name()}",
        subtitle=subscription.name,
        subscription=subscription,
    )
    return TemplateResponse(request, "admin/credit_usage_member.html", context, status=status)


def reports(request):
    """The Reports page of the subscriptions the viewer administers, in the admin's look. It
    sits at the reports app's index, so it lists that app's models too (the schedules)."""
    subscriptions = reports_page.readable_subscriptions(request.user, administered_only=True)
    context = {
        **admin.site.each_context(request),
        "title": "Reports",
        "page": None,
        "app_models": admin.site.get_app_list(request, "reports"),
    }
    if subscriptions:
        context.update(reports_page_context(request, subscriptions))
        context["subtitle"] = context["page"].subscription.name
    return TemplateResponse(request, "admin/reports.html", context)


def statement_page(request):
    """A subscription's monthly statements in the admin's look: its closed months, and the
    statement of the one chosen (``?month=YYYY-MM``, the latest by default)."""
    subscriptions = dashboard.administered_subscriptions(request.user)
    context = {**admin.site.each_context(request), "title": "Statements", "page": None}
    if not subscriptions:
        return TemplateResponse(request, "admin/statements.html", context)
    subscription = _subscription(subscriptions, request.GET)
    now = timezone.now()
    months = [
        statements.local_month(period)
        for period in statements.closed_periods(
            principal=request.user, subscription=subscription, now=now
        )[: statements.MONTHS_LISTED]
    ]
    wanted, statement, problem, status = request.GET.get("month"), None, None, 200
    try:
        month = statements.parse_month(wanted) if wanted else (months[0] if months else None)
        if month is not None:
            statement = statements.statement_for(
                principal=request.user, subscription=subscription, month=month, now=now
            )
    except DomainError as error:
        problem, status = error.message, STATUS_BY_CODE.get(error.code, 400)
    context.update(
        page={"subscriptions": subscriptions},
        subscription=subscription,
        subtitle=subscription.name,
        months=months,
        statement=statement,
        problem=problem,
    )
    return TemplateResponse(request, "admin/statements.html", context, status=status)


# At ``admin/statements/`` (``config/urls.py``), ahead of the admin's own URLs.
statements_urlpatterns = [path("", admin.site.admin_view(statement_page), name="admin-statements")]

# At ``admin/reports/`` (``config/urls.py``), ahead of the admin's own index of the app.
reports_urlpatterns = [path("", admin.site.admin_view(reports), name="admin-reports")]

urlpatterns = [
    path("", admin.site.admin_view(credit_usage), name="admin-credit-usage"),
    path(
        "members/<int:user_id>/",
        admin.site.admin_view(member_usage),
        name="admin-credit-usage-member",
    ),
]
