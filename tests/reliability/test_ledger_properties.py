"""No credit is lost or counted twice, whatever happens in whatever order.

A Hypothesis state machine drives the recording service (``record_usage``,
``record_adjustment``) and the services that change limits (user and team limits, hard/soft
mode and excess allowance) through random sequences: new events, replays of earlier ones,
reused keys with another payload, late events (inside and beyond the grace window), the clock
moving across DST changes and month ends, and adjustments up and down. A small model of the
rules predicts each outcome; after every step the database must agree with it:

* each period's ``credits_used`` and ``excess_used`` equal the sum of its ledger rows;
* the daily rollups equal the ledger (recomputed from it by ``credits.rollups``), and so do the
  per-user and per-team period counters;
* hard limits are never exceeded: every accepted event fits the subscription's cap, its user's
  and its team's limit at the moment it was charged;
* every accepted event is stored once (one ledger row, one idempotency record), a replay
  returns it unchanged, and a refused event stores nothing at all (no row, no counter, no
  rollup, no idempotency record, no agent, no alert).
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError
from django.db.models import Sum
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    consumes,
    invariant,
    rule,
)

from accounts.models import Role, Subscription, TeamMembership
from core.errors import DomainError
from credits.limits import remove_limit, set_team_limit, set_user_limit
from credits.models import (
    Agent,
    BillingPeriod,
    CreditEvent,
    CreditLimit,
    DailyUsage,
    IdempotencyRecord,
    TeamPeriodUsage,
    ThresholdAlert,
    UserPeriodUsage,
)
from credits.periods import local_date, period_bounds
from credits.recording import Usage, record_adjustment, record_usage
from credits.rollups import DIMENSIONS
from tests import factories
from tests.factories import utc
from tests.histories import HistoryMachine, limit_mode_rule, run_histories

pytestmark = pytest.mark.django_db

ZERO = Decimal(0)
START = utc(2026, 10, 24, 12)  # the day before Prague leaves summer time, a week before November
PEOPLE = ("ana", "ben", "cy", None)  # ana and ben share a team; cy has none; None: the key alone
AGENTS = ("bot-a", "bot-b", None)

credits_strategy = st.decimals(min_value=0, max_value=60, places=4, allow_nan=False)


def ledger_sums(subscription) -> tuple[dict, dict]:
    """From the ledger rows: (credits, excess, runs, failed runs) per local day and
    dimensions, and each person's credits per period."""
    days, users = defaultdict(lambda: [ZERO, ZERO, 0, 0]), defaultdict(Decimal)
    for event in CreditEvent.objects.filter(subscription=subscription):
        day = local_date(event.timestamp, subscription.zone)
        sums = days[(day, *(getattr(event, name) for name in DIMENSIONS))]
        sums[0] += event.credits
        sums[1] += event.excess_credits
        if event.kind == CreditEvent.Kind.USAGE:
            sums[2] += 1
            sums[3] += event.status == CreditEvent.Status.FAILED
        if event.user_id is not None:
            users[event.period_id, event.user_id] += event.credits
    return {key: tuple(sums) for key, sums in days.items()}, dict(users)


@dataclass(frozen=True)
class Sent:
    """A usage event as sent, with what it should have done."""

    usage: Usage
    event_id: int | None  # the ledger row it created (None: refused)


class LedgerMachine(HistoryMachine):
    sent = Bundle("sent")

    def __init__(self):
        super().__init__()
        self.now = START
        self.subscription = factories.SubscriptionFactory(
            name="Prop", timezone="Europe/Prague", base_allocation=Decimal("100")
        )
        environment = factories.EnvironmentFactory(
            project=factories.ProjectFactory(subscription=self.subscription)
        )
        self.environment = environment
        product = factories.ProductFactory(slug="ai-agent")
        product.enabled_for.add(self.subscription)
        self.users = {}
        for name in PEOPLE[:-1]:
            user = factories.UserFactory(email=f"{name}@prop.example", password="")
            factories.membership(user, Role.MEMBER, environment=environment)
            self.users[name] = user
        self.team = factories.TeamFactory(subscription=self.subscription, name="Pair")
        for name in ("ana", "ben"):
            factories.team_membership(self.users[name], self.team)
        self.api_key, _ = factories.api_key(self.subscription)
        self.admin = factories.UserFactory(email="admin@prop.example", password="")
        factories.membership(self.admin, Role.SUBSCRIPTION_ADMIN, subscription=self.subscription)
        # The model: what the counters must hold, and what has been accepted.
        self.used = defaultdict(Decimal)  # period start -> credits_used
        self.user_used = defaultdict(Decimal)  # (period start, user) -> credits
        self.team_used = defaultdict(Decimal)  # period start -> the team's credits
        self.user_limits: dict[str, Decimal] = {}
        self.team_limit: Decimal | None = None
        self.accepted: dict[str, Sent] = {}  # idempotency key -> first accepted event
        self.ledger_rows = 0

    # --- The rules ----------------------------------------------------------------------------

    @rule(
        target=sent,
        person=st.sampled_from(PEOPLE),
        credits=credits_strategy,
        hours_late=st.one_of(st.just(0), st.integers(min_value=0, max_value=72)),
        agent=st.sampled_from(AGENTS),
        failed=st.booleans(),
    )
    def record_new_event(self, person, credits, hours_late, agent, failed):
        usage = Usage(
            idempotency_key=f"op-{next(self.keys)}",
            environment=self.environment.public_id,
            product="ai-agent",
            credits=credits,
            timestamp=self.now - timedelta(hours=hours_late, minutes=1),
            user=self.users[person].email if person else None,
            agent=agent,
            model="gpt-5-mini",
            feature="chat" if person else "",
            status="failed" if failed else "succeeded",
            latency_ms=100 if agent else None,
        )
        return self._send(usage, replaying=None)

    @rule(earlier=sent)
    def replay_the_same_event(self, earlier):
        first = self.accepted.get(earlier.usage.idempotency_key)
        self._send(earlier.usage, replaying=first)

    @rule(earlier=consumes(sent), credits=credits_strategy)
    def reuse_a_key_with_another_payload(self, earlier, credits):
        if credits == earlier.usage.credits:
            credits += Decimal("0.0001")
        usage = replace(earlier.usage, credits=credits)
        if earlier.usage.idempotency_key in self.accepted:
            self._expect_refusal(lambda: self._record(usage), "idempotency_conflict")
        else:  # the key was never stored: it is as good as new
            self._send(usage, replaying=None)

    @rule(person=st.sampled_from(PEOPLE[:-1]), credits=st.none() | credits_strategy)
    def change_a_user_limit(self, person, credits):
        user = self.users[person]
        with self._clock():
            if credits is None:
                limit = CreditLimit.objects.filter(user=user).first()
                if limit:
                    remove_limit(limit=limit, actor=self.admin)
                self.user_limits.pop(person, None)
            else:
                set_user_limit(
                    subscription=self.subscription, user=user, credits=credits, actor=self.admin
                )
                self.user_limits[person] = credits

    @rule(credits=st.none() | credits_strategy.map(lambda c: c * 2))
    def change_the_team_limit(self, credits):
        with self._clock():
            if credits is None:
                limit = CreditLimit.objects.filter(team=self.team).first()
                if limit:
                    remove_limit(limit=limit, actor=self.admin)
            else:
                set_team_limit(
                    subscription=self.subscription,
                    team=self.team,
                    credits=credits,
                    actor=self.admin,
                )
        self.team_limit = credits

    change_the_limit_mode = limit_mode_rule(max_allowance=80)

    @rule(hours=st.integers(min_value=1, max_value=240))
    def let_time_pass(self, hours):
        self.now += timedelta(hours=hours)

    @rule(
        credits=st.decimals(min_value=-40, max_value=40, places=4, allow_nan=False),
        person=st.sampled_from(PEOPLE),
    )
    def adjust(self, credits, person):
        if credits == 0:
            return
        user = self.users[person] if person else None
        start = self._period_start(self.now)
        fits = self.used[start] + credits >= 0 and (
            user is None
            or (
                self.user_used[start, person] + credits >= 0
                and (person not in ("ana", "ben") or self.team_used[start] + credits >= 0)
            )
        )
        before = self._snapshot()
        try:
            with self._clock():
                record_adjustment(
                    subscription=self.subscription,
                    credits=credits,
                    reason="property test",
                    created_by=self.admin,
                    timestamp=self.now,
                    environment=self.environment,
                    user=user,
                )
        except IntegrityError:  # a counter's CHECK constraint: usage cannot go below zero
            assert not fits, f"an adjustment of {credits} that fits was refused"
            assert self._snapshot() == before, "a refused adjustment left something behind"
            return
        assert fits, f"an adjustment of {credits} took a counter below zero"
        self.ledger_rows += 1
        self.used[start] += credits
        if person:
            self.user_used[start, person] += credits
            if person in ("ana", "ben"):
                self.team_used[start] += credits

    # --- Sending and predicting ---------------------------------------------------------------

    def _record(self, usage: Usage):
        with self._clock():
            return record_usage(api_key=self.api_key, usage=usage, now=self.now)

    def _period_start(self, instant: datetime) -> datetime:
        return period_bounds(instant, self.subscription.zone).start

    def _send(self, usage: Usage, *, replaying: Sent | None) -> Sent:
        if replaying is not None:
            before = self._snapshot()
            recorded = self._record(usage)
            assert not recorded.created
            assert recorded.event.pk == replaying.event_id
            assert self._snapshot() == before, "a replay changed something"
            return replaying
        refusal = self._predicted_refusal(usage)
        if refusal:
            self._expect_refusal(
                lambda: self._record(usage), refusal, start=self._period_start(usage.timestamp)
            )
            return Sent(usage=usage, event_id=None)
        allocation = self.subscription.base_allocation
        start = self._period_start(usage.timestamp)
        used_before = self.used[start]
        recorded = self._record(usage)
        assert recorded.created
        event = recorded.event
        self.ledger_rows += 1
        self.used[start] += usage.credits
        person = usage.user.split("@")[0] if usage.user else None
        if person:
            self.user_used[start, person] += usage.credits
            if person in ("ana", "ben"):
                self.team_used[start] += usage.credits
        expected_excess = max(ZERO, self.used[start] - allocation) - max(
            ZERO, used_before - allocation
        )
        assert event.credits == usage.credits
        assert event.excess_credits == expected_excess
        self._assert_within_limits(start, person)
        sent = Sent(usage=usage, event_id=event.pk)
        self.accepted[usage.idempotency_key] = sent
        return sent

    def _predicted_refusal(self, usage: Usage) -> str | None:
        """The error the rules call for, in the order the service checks them."""
        start = self._period_start(usage.timestamp)
        end = period_bounds(usage.timestamp, self.subscription.zone).end
        grace = timedelta(hours=django_settings.LATE_EVENT_GRACE_HOURS)
        if self.now > end + grace:
            return "period_closed"
        if self.used[start] + usage.credits > self._cap():
            return "credit_limit_exceeded"
        person = usage.user.split("@")[0] if usage.user else None
        in_team = person in ("ana", "ben") and self.team_limit is not None
        if in_team and self.team_used[start] + usage.credits > self.team_limit:
            return "team_limit_exceeded"
        limit = self.user_limits.get(person)
        if limit is not None and self.user_used[start, person] + usage.credits > limit:
            return "user_limit_exceeded"
        return None

    def _cap(self) -> Decimal:
        subscription = self.subscription
        if subscription.limit_mode == Subscription.LimitMode.SOFT:
            return subscription.base_allocation + subscription.excess_allowance
        return subscription.base_allocation

    def _expect_refusal(self, send, code: str, *, start: datetime | None = None) -> None:
        """Nothing changes, except that a refusal by the subscription's cap once its period has
        used 80% of it records the cap's alert (once per period)."""
        before = self._snapshot()
        with pytest.raises(DomainError) as refused:
            send()
        assert refused.value.code == code
        after = self._snapshot()
        assert after[:-1] == before[:-1], f"a refused event ({code}) left something behind"
        expected = set(before[-1])
        if code == "credit_limit_exceeded":
            period = BillingPeriod.objects.filter(subscription=self.subscription, start=start)
            near = period.filter(credits_used__gte=self._cap() * Decimal("0.8")).first()
            if near is not None and self._cap() > 0:
                expected.add((near.pk, self._cap_threshold()))
        assert set(after[-1]) == expected, f"a refused event ({code}) alerted wrongly"

    def _cap_threshold(self) -> str:
        subscription = self.subscription
        soft = subscription.limit_mode == Subscription.LimitMode.SOFT
        if soft and subscription.excess_allowance > 0:
            return ThresholdAlert.Threshold.EXCESS_100
        return ThresholdAlert.Threshold.ALLOCATION_100

    def _alerts(self) -> list[tuple[int, str]]:
        return list(
            ThresholdAlert.objects.filter(subscription=self.subscription).values_list(
                "period_id", "threshold"
            )
        )

    def _assert_within_limits(self, start, person) -> None:
        """An accepted event fits every cap in force when it was charged (a limit lowered
        later, or a staff adjustment, may leave a counter above a cap: no event is then
        accepted until the period resets)."""
        period = BillingPeriod.objects.get(subscription=self.subscription, start=start)
        assert period.credits_used <= self._cap(), "the subscription's cap was exceeded"
        if person in self.user_limits:
            used = UserPeriodUsage.objects.get(period=period, user=self.users[person])
            assert used.credits_used <= self.user_limits[person], "a user limit was exceeded"
        if person in ("ana", "ben") and self.team_limit is not None:
            used = TeamPeriodUsage.objects.get(period=period, team=self.team)
            assert used.credits_used <= self.team_limit, "the team limit was exceeded"

    def _snapshot(self) -> tuple:
        events = CreditEvent.objects.filter(subscription=self.subscription)
        return (
            events.count(),
            events.aggregate(total=Sum("credits"))["total"],
            tuple(
                BillingPeriod.objects.filter(subscription=self.subscription)
                .order_by("start")
                .values_list("start", "credits_used", "excess_used")
            ),
            tuple(UserPeriodUsage.objects.order_by("pk").values_list("pk", "credits_used")),
            tuple(TeamPeriodUsage.objects.order_by("pk").values_list("pk", "credits_used")),
            tuple(DailyUsage.objects.order_by("pk").values_list("pk", "credits", "runs")),
            IdempotencyRecord.objects.count(),
            Agent.objects.count(),
            tuple(sorted(self._alerts())),  # last: see _expect_refusal
        )

    # --- Invariants, after every step ---------------------------------------------------------

    @invariant()
    def periods_equal_their_ledger(self):
        sums = {
            row["period"]: (row["credits"], row["excess"])
            for row in CreditEvent.objects.filter(subscription=self.subscription)
            .values("period")
            .annotate(credits=Sum("credits"), excess=Sum("excess_credits"))
        }
        for period in BillingPeriod.objects.filter(subscription=self.subscription):
            credits, excess = sums.get(period.pk, (ZERO, ZERO))
            assert period.credits_used == credits, f"{period}: counter != ledger"
            assert period.excess_used == excess, f"{period}: excess counter != ledger"
            assert period.credits_used == self.used[period.start], f"{period}: != the model"

    @invariant()
    def rollups_and_person_counters_equal_the_ledger(self):
        expected, user_credits = ledger_sums(self.subscription)
        actual = {
            (row.day, *(getattr(row, name) for name in DIMENSIONS)): (
                row.credits,
                row.excess_credits,
                row.runs,
                row.failed_runs,
            )
            for row in DailyUsage.objects.filter(subscription=self.subscription)
        }
        assert actual == expected, "the daily rollups differ from the ledger"
        users = {
            (row.period_id, row.user_id): row.credits_used
            for row in UserPeriodUsage.objects.filter(period__subscription=self.subscription)
        }
        assert users == user_credits, "user counters differ from the ledger"
        team_members = set(
            TeamMembership.objects.filter(team=self.team).values_list("user_id", flat=True)
        )
        teams = Counter()
        for (period_id, user_id), credits in user_credits.items():
            if user_id in team_members:
                teams[period_id] += credits
        for row in TeamPeriodUsage.objects.filter(team=self.team):
            assert row.credits_used == teams[row.period_id], "team counter != ledger"

    @invariant()
    def every_accepted_event_is_stored_once(self):
        events = CreditEvent.objects.filter(subscription=self.subscription)
        assert events.count() == self.ledger_rows
        usage_keys = list(
            events.filter(kind=CreditEvent.Kind.USAGE).values_list("idempotency_key", flat=True)
        )
        assert sorted(usage_keys) == sorted(self.accepted)
        records = dict(
            IdempotencyRecord.objects.filter(subscription=self.subscription).values_list(
                "key", "event_id"
            )
        )
        assert records == {key: sent.event_id for key, sent in self.accepted.items()}


def test_ledger_invariants_hold_for_random_histories(db):
    run_histories(LedgerMachine, examples=20, steps=25)
