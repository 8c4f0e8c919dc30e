"""The usage pages outside the admin: every member's own usage, a project manager's
environments and the Reports page. Thin: parse the query (``reports.timeframes.date_range_from``),
call one selector in ``reports.dashboard`` or ``reports.reports_page``, render."""

import copy

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import FileResponse, Http404, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from accounts.models import Environment, User
from credits.models import DailyUsage

from . import api, dashboard, large_exports, reports_page
from .catalogue import BY_SLUG
from .member_table import MemberFilters
from .timeframes import DATE_RANGE_PARAMETERS, DateRange, date_range_from

# Members are not staff, so the admin's login form (settings.LOGIN_URL) would refuse them.
LOGIN_URL = "usage-login"


class UsageLoginView(LoginView):
    template_name = "reports/login.html"
    redirect_authenticated_user = True


def manages_environments(user) -> bool:
    return Environment.objects.managed_by(user).exists()


@login_required(login_url=LOGIN_URL)
def my_usage(request):
    """/usage/: the signed-in person's usage in one environment or all of theirs."""
    scopes = dashboard.personal_scopes(request.user)
    manages = manages_environments(request.user)
    if not scopes:
        return render(
            request,
            "reports/my_usage.html",
            {"nav": "mine", "manages_environments": manages, "page": None},
        )
    choice = _chosen_scope(scopes, request.GET)
    date_range, problems = date_range_from(
        subscription=choice.subscription, query=request.GET, now=timezone.now()
    )
    page = dashboard.personal_dashboard(
        viewer=request.user,
        person=request.user,
        subscription=choice.subscription,
        environment=choice.environment,
        date_range=date_range,
        page_number=request.GET.get("page"),
    )
    return render(
        request,
        "reports/my_usage.html",
        {
            "nav": "mine",
            "manages_environments": manages,
            "page": page,
            "scopes": scopes,
            "scope": choice,
            "problems": problems,
            "keep_for_range": kept_parameters(request.GET, ("scope", "environment")),
        },
    )


def chosen(options, wanted: str | None, *, key, missing: str):
    """The option whose ``key`` is ``wanted``, the first when none is asked for; anything not
    among ``options`` is a 404, as for any object the person may not see."""
    if not wanted:
        return options[0]
    found = next((option for option in options if key(option) == wanted), None)
    if found is None:
        raise Http404(missing)
    return found


def _chosen_scope(scopes, query) -> dashboard.ScopeChoice:
    """``?scope=environment:<EnvironmentId>`` or ``subscription:<id>`` (or ``?environment=``)."""
    wanted = query.get("scope")
    if query.get("environment"):
        wanted = f"environment:{query['environment']}"
    return chosen(
        scopes,
        wanted,
        key=lambda choice: choice.value,
        missing="No such environment or subscription.",
    )


def _managed_environment(request, environments) -> Environment:
    return chosen(
        environments,
        request.GET.get("environment"),
        key=lambda environment: str(environment.public_id),
        missing="No such environment among those you manage.",
    )


def _not_a_manager(request):
    return render(
        request,
        "reports/environment_usage.html",
        {"nav": "environments", "page": None},
        status=403,
    )


@login_required(login_url=LOGIN_URL)
def environment_usage(request):
    """/usage/environments/: everyone's usage in an environment the person manages."""
    environments = dashboard.managed_environments(request.user)
    if not environments:
        return _not_a_manager(request)
    environment = _managed_environment(request, environments)
    date_range, problems = date_range_from(
        subscription=environment.project.subscription, query=request.GET, now=timezone.now()
    )
    page = dashboard.environment_dashboard(
        viewer=request.user,
        environment=environment,
        environments=environments,
        date_range=date_range,
        filters=MemberFilters.from_query(request.GET),
        member_page=request.GET.get("page"),
    )
    return render(
        request,
        "reports/environment_usage.html",
        {
            "nav": "environments",
            "manages_environments": True,
            "page": page,
            "problems": problems,
            **members_table_context(
                request.GET, date_range, parameter="environment", value=environment.public_id
            ),
        },
    )


@login_required(login_url=LOGIN_URL)
def environment_member_usage(request, user_id: int):
    """One person's usage in an environment the viewer manages (no limits: those are the
    subscription admin's)."""
    environments = dashboard.managed_environments(request.user)
    if not environments:
        return _not_a_manager(request)
    environment = _managed_environment(request, environments)
    subscription = environment.project.subscription
    worked_there = Q(memberships__environment=environment) | Q(
        pk__in=DailyUsage.objects.visible_to(request.user)
        .filter(environment=environment)
        .values("user_id")
    )
    person = User.objects.visible_to(request.user).filter(worked_there, pk=user_id).first()
    if person is None:
        raise Http404("No such person in this environment.")
    context, status = member_detail(request, person, subscription, environment=environment)
    context.update(nav="environments", manages_environments=True, environment=environment)
    return render(request, "reports/environment_member.html", context, status=status)


def member_detail(
    request, person: User, subscription, *, environment: Environment | None
) -> tuple[dict, int]:
    """What a member's detail page shows to an admin or a project manager, and its status:
    the person's usage in the range asked for, or none (403) on a plan without team views.
    An admin (no ``environment``) sees the person's limits too, which are the subscription
    admin's; choosing a range carries along the subscription or environment looked at."""
    context = {
        "person": person,
        "page": None,
        "plans_with_team_views": dashboard.PLANS_WITH_TEAM_VIEWS,
    }
    if not subscription.has_team_views:
        return context, 403
    date_range, problems = date_range_from(
        subscription=subscription, query=request.GET, now=timezone.now()
    )
    context["page"] = dashboard.personal_dashboard(
        viewer=request.user,
        person=person,
        subscription=subscription,
        environment=environment,
        date_range=date_range,
        page_number=request.GET.get("page"),
        with_limits=environment is None,
    )
    context["problems"] = problems
    keep = ("subscription",) if environment is None else ("environment",)
    context["keep_for_range"] = kept_parameters(request.GET, keep)
    return context, 200


MEMBER_FILTERS = ("q", "team", "feature", "product", "sort")


def kept_parameters(query, names) -> list[tuple[str, str]]:
    """Query parameters a form carries along as hidden fields."""
    return [(name, query[name]) for name in names if query.get(name)]


def member_link_query(selector: dict, date_range: DateRange) -> str:
    """Member detail links keep what is being looked at: the scope, period and range."""
    return urlencode(
        {
            **selector,
            "period": date_range.cycle.month,
            "from": date_range.first_day.isoformat(),
            "to": date_range.last_day.isoformat(),
        }
    )


def members_table_context(query, date_range: DateRange, *, parameter: str, value) -> dict:
    """What a page with the members table (``reports/partials/members_table.html``) and a
    range form carries along: the subscription or environment looked at (``parameter``) with
    the member filters when the range changes, with the range when the filters change, and
    with both in the links to a member's detail."""
    return {
        "keep_for_range": kept_parameters(query, (parameter, *MEMBER_FILTERS)),
        "keep_for_filters": kept_parameters(query, (parameter, *DATE_RANGE_PARAMETERS)),
        "member_link_query": member_link_query({parameter: value}, date_range),
    }


def large_export_download(request, token: str):
    """A large export's file, for whoever holds its signed, unexpired link (sent by email)."""
    path = large_exports.path_from_token(token)
    if path is None or not default_storage.exists(path):
        raise Http404("This download link is invalid or has expired.")
    return FileResponse(
        default_storage.open(path, "rb"), as_attachment=True, filename=path.rsplit("/", 1)[-1]
    )


# --- The Reports page ---------------------------------------------------------------------------


def reports_page_context(request, subscriptions) -> dict:
    """The Reports page of the subscription asked for among ``subscriptions`` (else the
    first), previewed over the chosen named timeframe."""
    subscription = chosen(
        subscriptions,
        request.GET.get("subscription"),
        key=lambda subscription: str(subscription.pk),
        missing="No such subscription among yours.",
    )
    page = reports_page.reports_page(
        user=request.user,
        subscription=subscription,
        timeframe=reports_page.chosen_timeframe(subscription, request.GET.get("timeframe")),
        include_sub_accounts=request.GET.get("include_sub_accounts") == "true",
    )
    return {"page": page, "subscriptions": subscriptions}


@login_required(login_url=LOGIN_URL)
def reports(request):
    """/usage/reports/: a card per report the person may read, each with its download."""
    subscriptions = reports_page.readable_subscriptions(request.user)
    context = {"nav": "reports", "manages_environments": manages_environments(request.user)}
    if subscriptions:
        context.update(reports_page_context(request, subscriptions))
    return render(request, "reports/reports.html", context)


DOWNLOAD_FORMATS = ("csv", "json")


def download_parameters(report, query) -> dict:
    """The report API's query parameters for what the download dialog sent: the timeframe it
    chose (``timeframe`` names one, or is ``period`` or ``custom``), the filters given, the
    subscription, sub-accounts and the format. The API validates them as ever."""
    kind = query.get("timeframe", "")
    if kind == "period":
        params = {"period": query.get("period", "")}
    elif kind == "custom":
        params = {"start": query.get("start", ""), "end": query.get("end", "")}
    else:
        params = {"timeframe": kind}
    for name in ("subscription", *(spec.name for spec in report.filters)):
        params[name] = query.get(name, "")
    if report.sub_account_toggle and query.get("include_sub_accounts"):
        params["include_sub_accounts"] = "true"
    params["format"] = query.get("format") if query.get("format") in DOWNLOAD_FORMATS else "csv"
    if params["format"] == "json":  # one file: the largest page the API gives
        params["page_size"] = str(api.ReportPagination.max_page_size)
    return {name: value for name, value in params.items() if value}


@login_required(login_url=LOGIN_URL)
def report_download(request, slug: str):
    """The download dialog's file: the report API's own answer to the same parameters (its
    view, path and session), saved as an attachment named after the report, the
    subscription and the range."""
    report = BY_SLUG.get(slug)
    if report is None:
        raise Http404("No such report.")
    query = QueryDict(mutable=True)
    query.update(download_parameters(report, request.GET))
    api_request = copy.copy(request)
    api_request.GET = query
    api_request.path = api_request.path_info = reverse(f"report-{slug}")
    api_request.META = {**request.META, "QUERY_STRING": query.urlencode()}
    response = api.REPORT_VIEWS[slug].as_view()(api_request)
    disposition = response.get("Content-Disposition", "")
    if disposition.startswith("inline;"):
        response["Content-Disposition"] = "attachment;" + disposition.removeprefix("inline;")
    return response
