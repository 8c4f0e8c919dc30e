"""Alert rules: a subscription admin's thresholds (any percentages) of the allocation, the
excess allowance, a team's limit, a user's limit or an API key's budget, each crossing told once
per period by email, webhook and Slack.

Project managers have rules too, on the environments they manage: notification only, by
email to people of the environment (``AlertRule.owner``). An environment's thresholds are
percentages of the rule's budget (credits per period), or of the subscription's base
allocation without one; its usage is read from the rollups (``selectors.environments_used``,
one query for every watched environment). A manager's rule fires while its owner still
manages the environment.

Rules are evaluated by a task every minute (``credits.tasks.evaluate_alert_rules``), not by
recording: an event's transaction stays as short as it was, whatever the number of rules,
and a crossing is told within about a minute. The evaluation reads the period counters
recording keeps (a few statements for all rules) and claims each crossing as a row unique per
(rule, period, threshold), as the built-in 80%/100% alerts are claimed; the message is sent
after the claim commits, by a sender that locks the row, sends, and marks it ``notified_at``
in one transaction (``notifications.send_alert``'s way), so a crossing found twice, or a task
run twice, tells it once.
"""

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.audit import delete_audited, save_audited
from accounts.models import Membership, Role

from . import webhooks
from .models import (
    AlertFiring,
    AlertRule,
    ApiKeyPeriodUsage,
    BillingPeriod,
    CreditLimit,
    TeamPeriodUsage,
    UserPeriodUsage,
)
from .periods import local_date
from .recipients import admin_emails
from .selectors import environments_used

logger = logging.getLogger(__name__)

# As for the built-in alerts: crossings whose message was not sent are sent again by the
# evaluation after ten minutes, for three days.
RESEND_AFTER = timedelta(minutes=10)
RESEND_UNTIL = timedelta(days=3)

Target = AlertRule.Target


# --- Keeping rules ------------------------------------------------------------------------


@transaction.atomic
def save_rule(*, rule: AlertRule, actor) -> AlertRule:
    """Validate (``AlertRule.clean``: a target of the rule's subscription, its channels, a
    manager's rule notification only) and save, in the audit trail with what changed. The
    admin saves its rules itself and audits them the same way."""
    return save_audited(rule, actor=actor, noun="alert_rule")


@transaction.atomic
def delete_rule(*, rule: AlertRule, actor) -> None:
    """The rule and its crossings."""
    delete_audited(rule, actor=actor, noun="alert_rule")


# --- Evaluating ---------------------------------------------------------------------------


def evaluate_rules(*, now: datetime) -> list[int]:
    """Claim every crossing of every enabled rule in its subscription's current period; return
    the claimed firings' ids, and those whose message is overdue, for the caller to queue
    after commit."""
    rules = list(
        AlertRule.objects.filter(_owner_still_manages(), enabled=True).select_related(
            "subscription", "api_key"
        )
    )
    periods = {
        period.subscription_id: period
        for period in BillingPeriod.objects.select_related("subscription").filter(
            subscription_id__in={rule.subscription_id for rule in rules},
            start__lte=now,
            end__gt=now,
        )
    }
    usage = _owner_usage(list(periods.values()), targets={rule.target for rule in rules})
    usage |= _environment_usage(rules, list(periods.values()))
    limits = _limits({rule.subscription_id for rule in rules})
    fired = set(
        AlertFiring.objects.filter(period__in=list(periods.values())).values_list(
            "rule_id", "period_id", "threshold"
        )
    )
    crossings = []
    for rule in rules:
        period = periods.get(rule.subscription_id)
        if period is None:
            continue
        used, limit = _used_and_limit(rule, period, usage, limits)
        if not limit:
            continue
        for threshold in sorted(set(rule.thresholds)):
            key = (rule.pk, period.pk, threshold.quantize(Decimal("0.01")))
            if used * 100 >= limit * threshold and key not in fired:
                crossings.append((rule.subscription_id, *key, used, limit))
    claimed = _claim(crossings, now)
    overdue = AlertFiring.objects.filter(
        notified_at__isnull=True,
        crossed_at__lt=now - RESEND_AFTER,
        crossed_at__gte=now - RESEND_UNTIL,
    ).values_list("pk", flat=True)
    return sorted({*claimed, *overdue})


def _owner_usage(periods: list[BillingPeriod], *, targets: set[str]) -> dict[tuple, Decimal]:
    """Each team's, user's and API key's credits used in these periods, by (kind, period id,
    owner id); only the kinds some rule targets are read."""
    usage = {}
    for model, kind in (
        (TeamPeriodUsage, Target.TEAM),
        (UserPeriodUsage, Target.USER),
        (ApiKeyPeriodUsage, Target.API_KEY),
    ):
        if kind not in targets:
            continue
        owner = f"{kind}_id"
        for period_id, owner_id, used in model.objects.filter(period__in=periods).values_list(
            "period_id", owner, "credits_used"
        ):
            usage[kind, period_id, owner_id] = used
    return usage


def _owner_still_manages() -> Q:
    """A manager's rule counts while its owner is active and manages its environment (or
    administers its subscription); the admins' rules have no owner."""
    roles = Membership.objects.filter(user_id=OuterRef("owner_id"))
    manages = roles.filter(environment_id=OuterRef("environment_id"), role=Role.PROJECT_MANAGER)
    administers = roles.filter(
        subscription_id=OuterRef("subscription_id"), role=Role.SUBSCRIPTION_ADMIN
    )
    return Q(owner__isnull=True) | Q(Exists(manages) | Exists(administers), owner__is_active=True)


def _environment_usage(rules, periods: list[BillingPeriod]) -> dict[tuple, Decimal]:
    """The watched environments' credits in these periods, keyed like ``_owner_usage``'s."""
    watched = {rule.environment_id for rule in rules if rule.target == Target.ENVIRONMENT}
    used = environments_used(periods=periods, environment_ids=watched)
    return {
        (Target.ENVIRONMENT, period_id, environment_id): credits
        for (period_id, environment_id), credits in used.items()
    }


def _limits(subscription_ids: set[int]) -> dict[tuple, Decimal]:
    limits = {}
    for subscription_id, team_id, user_id, credits in CreditLimit.objects.filter(
        subscription_id__in=subscription_ids
    ).values_list("subscription_id", "team_id", "user_id", "credits"):
        if team_id:
            limits[subscription_id, Target.TEAM, team_id] = credits
        else:
            limits[subscription_id, Target.USER, user_id] = credits
    return limits


def _used_and_limit(rule, period, usage, limits) -> tuple[Decimal, Decimal | None]:
    if rule.target == Target.ALLOCATION:
        return period.credits_used, rule.subscription.base_allocation
    if rule.target == Target.EXCESS:  # no allowance (hard mode): no percentage to cross
        return period.excess_used, rule.subscription.excess_allowance
    if rule.target == Target.API_KEY:  # a key without a budget has nothing to cross
        used = usage.get((Target.API_KEY, period.pk, rule.api_key_id), Decimal(0))
        return used, rule.api_key.credit_budget
    if rule.target == Target.ENVIRONMENT:
        used = usage.get((Target.ENVIRONMENT, period.pk, rule.environment_id), Decimal(0))
        return used, rule.budget or rule.subscription.base_allocation
    owner_id = rule.team_id if rule.target == Target.TEAM else rule.user_id
    used = usage.get((rule.target, period.pk, owner_id), Decimal(0))
    return used, limits.get((rule.subscription_id, rule.target, owner_id))


def _claim(crossings: list[tuple], now: datetime) -> list[int]:
    """One row per crossing; a crossing another evaluation claimed first is left out."""
    if not crossings:
        return []
    table = AlertFiring._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (subscription_id, rule_id, period_id, threshold, "  # noqa: S608
            "credits_used, credits_limit, crossed_at) "
            f"VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s)'] * len(crossings))} "
            "ON CONFLICT (subscription_id, rule_id, period_id, threshold) DO NOTHING RETURNING id",
            [value for crossing in crossings for value in (*crossing, now)],
        )
        return [firing_id for (firing_id,) in cursor.fetchall()]


# --- Telling ------------------------------------------------------------------------------


def send_firing(*, firing_id: int) -> bool:
    """Email and publish one crossing; False if it was already sent, is being sent, or does
    not exist. An SMTP error rolls back (the webhook deliveries too) for the task to retry."""
    with transaction.atomic():
        firing = (
            AlertFiring.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related(
                "rule__subscription",
                "rule__team",
                "rule__user",
                "rule__api_key",
                "rule__environment__project",
                "rule__webhook",
                "rule__slack",
                "period",
            )
            .filter(pk=firing_id, notified_at__isnull=True)
            .first()
        )
        if firing is None:
            return False
        rule, now = firing.rule, timezone.now()
        summary = headline(firing)
        webhooks.publish(
            subscription=rule.subscription,
            event_type="limit.reached" if firing.threshold >= 100 else "threshold.crossed",
            cause=f"alert_firing:{firing.pk}",
            summary=summary,
            data=event_data(firing),
            now=now,
            endpoints=[endpoint for endpoint in (rule.webhook, rule.slack) if endpoint],
        )
        recipients = sorted(
            {*(admin_emails(rule.subscription) if rule.email_admins else []), *rule.email_addresses}
        )
        if recipients:
            send_mail(
                subject=f"{rule.subscription.name}: {rule.name}",
                message=f"{summary}\n\nAlert rule: {rule.name}\n",
                from_email=settings.DEFAULT_FROM_EMAIL,
                recipient_list=recipients,
            )
        AlertFiring.objects.filter(pk=firing.pk).update(notified_at=now)
    logger.info(
        "event=alert_rule_fired firing_id=%s rule_id=%s threshold=%s recipients=%s",
        firing.pk,
        rule.pk,
        firing.threshold,
        len(recipients),
    )
    return True


def headline(firing: AlertFiring) -> str:
    """``Acme: team Writers used 50% of its limit for December 2026 (260 of 500 credits).``"""
    rule = firing.rule
    name = rule.subscription.name
    if rule.target == Target.TEAM:
        who = f"{name}: team {rule.team.name} used {{}}% of its limit"
    elif rule.target == Target.USER:
        who = f"{name}: {rule.user.email} used {{}}% of their limit"
    elif rule.target == Target.API_KEY:
        who = f"{name}: API key {rule.api_key.name} used {{}}% of its budget"
    elif rule.target == Target.EXCESS:
        who = f"{name} used {{}}% of its excess allowance"
    elif rule.target == Target.ENVIRONMENT:
        of = "its budget" if rule.budget else "the base allocation"
        who = f"{name}: environment {rule.environment} used {{}}% of {of}"
    else:
        who = f"{name} used {{}}% of its base allocation"
    month = local_date(firing.period.start, rule.subscription.zone)
    return (
        f"{who.format(_number(firing.threshold))} for {month:%B %Y} "
        f"({_number(firing.credits_used)} of {_number(firing.credits_limit)} credits)."
    )


def _number(value: Decimal) -> str:
    """``50``, ``25.5``: no trailing zeros (``normalize`` alone would say ``5E+1``)."""
    return f"{value.normalize():f}"


def event_data(firing: AlertFiring) -> dict:
    rule = firing.rule
    target = {"type": rule.target}
    if rule.target == Target.TEAM:
        target |= {"id": rule.team_id, "name": rule.team.name}
    elif rule.target == Target.USER:
        target |= {"id": rule.user_id, "email": rule.user.email}
    elif rule.target == Target.API_KEY:
        target |= {"prefix": rule.api_key.prefix, "name": rule.api_key.name}
    elif rule.target == Target.ENVIRONMENT:
        target |= {"environment_id": str(rule.environment.public_id), "name": str(rule.environment)}
    return {
        "rule": {"id": rule.pk, "name": rule.name},
        "target": target,
        "threshold_percent": _number(firing.threshold),
        "credits_used": f"{firing.credits_used:f}",
        "credits_limit": f"{firing.credits_limit:f}",
        "period": {"start": firing.period.start.isoformat(), "end": firing.period.end.isoformat()},
    }
