"""Usage by team member: the per-person table of the admin's and the project manager's pages.

Everyone with a role there or usage in the period is listed (searched, filtered, sorted) and
one page of them is rendered, in a fixed number of queries whatever the number of people.
"""

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import Max, Q, QuerySet, Sum

from accounts.models import (
    Environment,
    Membership,
    Role,
    Subscription,
    TeamMembership,
    User,
)
from core.display import format_moment
from credits.models import (
    CreditLimit,
    RollupGrain,
)

from .cycle_usage import percent_of, to_credits
from .timeframes import DateRange
from .usage import UsageQuery

ZERO = Decimal("0.0000")
MEMBERS_PER_PAGE = 50
ROLE_RANK = {Role.SUBSCRIPTION_ADMIN: 0, Role.PROJECT_MANAGER: 1, Role.MEMBER: 2}
ROLE_LABELS = dict(Role.choices)
ROLE_LABEL_RANK = {label: ROLE_RANK[value] for value, label in Role.choices}


# --- People -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFilters:
    q: str = ""
    team: str = ""
    feature: str = ""
    product: str = ""
    sort: str = "-credits"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "MemberFilters":
        sort = query.get("sort", "-credits")
        if sort.lstrip("-") not in SORT_KEYS:
            sort = "-credits"
        return cls(
            q=query.get("q", "").strip()[:100],
            team=query.get("team", "") if query.get("team", "").isdigit() else "",
            feature=query.get("feature", "")[:100],
            product=query.get("product", "") if query.get("product", "").isdigit() else "",
            sort=sort,
        )

    @property
    def filters_usage(self) -> bool:
        return bool(self.feature or self.product)

    @property
    def any(self) -> bool:
        return bool(self.q or self.team or self.feature or self.product)


@dataclass
class MemberRow:
    user_id: int | None
    email: str
    name: str
    roles: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    team_id: int | None = None
    team: str = ""
    credits: Decimal = ZERO
    runs: int = 0
    failed_runs: int = 0
    last_activity: datetime | None = None
    # Written once the row is on the page shown, in the subscription's time zone.
    last_activity_iso: str = ""
    last_activity_label: str = ""
    period_credits: Decimal = ZERO
    limit: Decimal | None = None
    limit_scope: str = ""  # "own" or "team"
    limit_used: Decimal = ZERO
    _rank: int = 3

    @property
    def role(self) -> str:
        return ", ".join(self.roles) or "No longer a member"

    @property
    def limit_percent(self) -> Decimal | None:
        return None if self.limit is None else percent_of(self.limit_used, self.limit)

    @property
    def limit_remaining(self) -> Decimal | None:
        return None if self.limit is None else max(ZERO, self.limit - self.limit_used)


SORT_KEYS = {
    "member": ("Member", lambda row: row.email.lower()),
    "role": ("Role", lambda row: row._rank),
    "team": ("Team", lambda row: row.team.lower() or None),
    "credits": ("Credits", lambda row: row.credits),
    "limit": ("Limit used", lambda row: row.limit_percent),
    "runs": ("Runs", lambda row: row.runs),
    "last_activity": ("Last activity", lambda row: row.last_activity),
}


@dataclass(frozen=True)
class SortHeader:
    key: str
    label: str
    direction: str  # "ascending", "descending" or "" (not sorted by it)
    next_sort: str
    numeric: bool


@dataclass
class MemberTable:
    """Usage by team member: everyone listed (searched, filtered, sorted), one page shown."""

    page: Page  # the rows shown: one page of the people listed
    keys_row: MemberRow | None  # API keys acting without a user
    filters: MemberFilters
    teams: list[tuple[int, str]]
    features: list[str]
    products: list[tuple[int, str]]
    for_admin: bool  # teams and limits are shown to subscription admins only
    member_count: int  # before search and team filters
    total_credits: Decimal  # of everyone listed, on every page, and the API keys
    active_people: int  # listed people with credits or runs in the range

    @property
    def rows(self) -> list[MemberRow]:
        return self.page.object_list

    @property
    def listed_count(self) -> int:
        return self.page.paginator.count

    @property
    def page_links(self) -> list[int | str]:
        """Page numbers to link to, with ``Paginator.ELLIPSIS`` where some are left out."""
        return list(
            self.page.paginator.get_elided_page_range(self.page.number, on_each_side=2, on_ends=1)
        )

    @property
    def headers(self) -> list[SortHeader]:
        current = self.filters.sort.lstrip("-")
        descending = self.filters.sort.startswith("-")
        numeric = {"credits", "limit", "runs", "last_activity"}
        headers = []
        for key, (label, _) in SORT_KEYS.items():
            if key in ("limit", "team") and not self.for_admin:
                continue
            if key == current:
                direction = "descending" if descending else "ascending"
                next_sort = key if descending else f"-{key}"
            else:
                direction = ""
                next_sort = f"-{key}" if key in numeric else key
            headers.append(SortHeader(key, label, direction, next_sort, key in numeric))
        return headers


def _sorted(rows: list[MemberRow], sort: str) -> list[MemberRow]:
    """Sorted by ``sort``, ties and rows without a value (last either way) by email, so
    that every row has one place and one page."""
    key = SORT_KEYS[sort.lstrip("-")][1]
    by_email = sorted(rows, key=lambda row: row.email.lower())
    present = [row for row in by_email if key(row) is not None]
    missing = [row for row in by_email if key(row) is None]
    present.sort(key=key, reverse=sort.startswith("-"))
    return present + missing


def _page(paginator: Paginator, number: str | int | None) -> Page:
    """The page asked for; a number that is none of its pages (not a number, 0, past the
    end) gives the first page, like a visit without one."""
    try:
        return paginator.page(number or 1)
    except InvalidPage:
        return paginator.page(1)


def member_table(
    *,
    viewer: User,
    subscription: Subscription,
    date_range: DateRange,
    filters: MemberFilters,
    products: Mapping[int, str],
    features: list[str],
    environment: Environment | None = None,
    for_admin: bool = False,
    page_number: str | int | None = None,
) -> MemberTable:
    """Usage by team member: everyone with a role there or usage in the cycle, one page of
    them (``MEMBERS_PER_PAGE``) at a time.

    A fixed number of queries whatever the number of people or events: usage per user (one
    pass over the rollup, summed by PostgreSQL), roles, and for a subscription admin
    (``for_admin``) teams and limits too; each returns one small row per person, team or
    limit, and only the page shown is rendered. Teams and limits are the subscription's
    business: a project manager sees neither. A limit applies to the whole period, so "limit
    used" counts the period's credits, unfiltered.
    """
    query = UsageQuery(
        principal=viewer,
        accounts=[subscription],
        timeframe=date_range.timeframe,
        narrowed={} if environment is None else {"environment": environment},
    )
    rows, period, in_range = _member_usage_rows(query, date_range, filters)
    usage = (
        rows.filter(period | in_range)
        .order_by()
        .values_list("user_id", "user__email", "user__display_name")
        .annotate(
            range_credits=Sum("credits", filter=in_range),
            range_runs=Sum("runs", filter=in_range),
            range_failed=Sum("failed_runs", filter=in_range),
            last_event=Max("last_event_at", filter=in_range),
            period_credits_sum=Sum("credits", filter=period),
        )
    )
    people: dict[int, MemberRow] = {}
    keys_row = None
    for user_id, email, name, credits, runs, failed, last_event, period_credits in usage:
        row = MemberRow(
            user_id=user_id,
            email=email or "",
            name=name or "",
            credits=to_credits(credits),
            runs=runs or 0,
            failed_runs=failed or 0,
            last_activity=last_event,
            period_credits=to_credits(period_credits),
        )
        if user_id is None:
            row.email, row.name = "", "API keys acting without a user"
            keys_row = row
        else:
            people[user_id] = row

    memberships = Membership.objects.visible_to(viewer).filter(subscription=subscription)
    if environment is not None:
        # People working there, and the admins' role for those of them who used it.
        memberships = memberships.filter(
            Q(environment=environment) | Q(role=Role.SUBSCRIPTION_ADMIN)
        )
    for (
        user_id,
        email,
        name,
        role,
        environment_id,
        project_name,
        environment_name,
    ) in memberships.order_by("environment__project__name", "environment__name").values_list(
        "user_id",
        "user__email",
        "user__display_name",
        "role",
        "environment_id",
        "environment__project__name",
        "environment__name",
    ):
        row = people.get(user_id)
        if row is None:
            if environment is not None and environment_id != environment.pk:
                continue
            row = people[user_id] = MemberRow(user_id, email, name)
        label = ROLE_LABELS.get(role, role)
        if label not in row.roles:
            row.roles.append(label)
            row.roles.sort(key=lambda text: ROLE_LABEL_RANK.get(text, 3))
        row._rank = min(row._rank, ROLE_RANK.get(role, 3))
        if environment_id:
            row.environments.append(f"{project_name} / {environment_name}")

    teams: dict[int, str] = {}
    if for_admin:
        teams = _apply_teams_and_limits(people, subscription, viewer)

    member_count = len(people)
    listed = list(people.values())
    if not for_admin:
        filters = replace(filters, team="")
    if filters.team:
        listed = [row for row in listed if row.team_id == int(filters.team)]
    if filters.q:
        needle = filters.q.lower()
        listed = [row for row in listed if needle in f"{row.email} {row.name}".lower()]
    if keys_row is not None and (filters.team or filters.q):
        keys_row = None
    total = sum((row.credits for row in listed), keys_row.credits if keys_row else ZERO)
    page = _page(Paginator(_sorted(listed, filters.sort), MEMBERS_PER_PAGE), page_number)
    _write_activity_times([*page.object_list, *([keys_row] if keys_row else [])], subscription)
    return MemberTable(
        page=page,
        keys_row=keys_row,
        filters=filters,
        teams=sorted(teams.items(), key=lambda item: item[1].lower()),
        features=features,
        products=sorted(products.items(), key=lambda item: item[1].lower()),
        for_admin=for_admin,
        member_count=member_count,
        total_credits=to_credits(total),
        active_people=sum(1 for row in listed if row.credits or row.runs),
    )


def _member_usage_rows(
    query: UsageQuery, date_range: DateRange, filters: MemberFilters
) -> tuple[QuerySet, Q, Q]:
    """Where the member table's usage comes from: the rows of the rollup that ``query`` picks
    for people (and the products and features filtered by), those that add up to the whole
    period, and those that add up to the range shown (with the filters).

    ``PersonRollup``: the period is each person's monthly row, a range within it their daily
    rows. Only ``DailyUsage`` knows the products and features a person used, so a table
    filtered by either reads it instead (days x products x features rows per person).
    """
    cycle = date_range.cycle
    first, last = date_range.first_day, date_range.last_day
    filtered = [name for name in ("feature", "product") if getattr(filters, name)]
    rollup = query.rollup("user", *filtered)
    rows = query.visible(rollup)
    if not rollup.monthly:
        in_range = Q(day__range=(first, last))
        if filters.feature:
            in_range &= Q(feature=filters.feature)
        if filters.product:
            in_range &= Q(product_id=int(filters.product))
        return rows, Q(day__range=(cycle.first_day, cycle.last_day)), in_range
    period = Q(grain=RollupGrain.MONTH, day=cycle.first_day)
    if date_range.is_whole_cycle:
        return rows, period, period
    return rows, period, Q(grain=RollupGrain.DAY, day__range=(first, last))


def _write_activity_times(rows: list[MemberRow], subscription: Subscription) -> None:
    """Last activity as the table shows it (an ISO time and "23 Nov 2026, 10:41 CET" in the
    subscription's time zone), for the rows shown only."""
    zone = subscription.zone
    for row in rows:
        if row.last_activity is not None:
            local = row.last_activity.astimezone(zone)
            row.last_activity_iso = local.isoformat()
            row.last_activity_label = format_moment(local, zone)


def _apply_teams_and_limits(people, subscription, viewer) -> dict[int, str]:
    """Each person's team, and their own limit or else their team's; "used" is what counts
    against it. Returns the teams' names. Two queries, one small row per team member and
    per limit."""
    team_memberships = (
        TeamMembership.objects.visible_to(viewer)
        .filter(subscription=subscription)
        .values_list("team_id", "team__name", "user_id")
    )
    teams: dict[int, str] = {}
    members_of_team: dict[int, list[int]] = defaultdict(list)
    for team_id, team_name, user_id in team_memberships:
        teams[team_id] = team_name
        members_of_team[team_id].append(user_id)
        row = people.get(user_id)
        if row is not None:
            row.team_id, row.team = team_id, team_name

    limits = (
        CreditLimit.objects.visible_to(viewer)
        .filter(subscription=subscription)
        .values_list("user_id", "team_id", "credits")
    )
    user_limits, team_limits = {}, {}
    for user_id, team_id, credits in limits:
        if user_id:
            user_limits[user_id] = credits
        else:
            team_limits[team_id] = credits
    team_used = {
        team_id: to_credits(
            sum((people[uid].period_credits for uid in user_ids if uid in people), ZERO)
        )
        for team_id, user_ids in members_of_team.items()
    }
    for row in people.values():
        if row.user_id in user_limits:
            row.limit, row.limit_scope, row.limit_used = (
                user_limits[row.user_id],
                "own",
                row.period_credits,
            )
        elif row.team_id in team_limits:
            row.limit, row.limit_scope, row.limit_used = (
                team_limits[row.team_id],
                "team",
                team_used[row.team_id],
            )
    return teams
