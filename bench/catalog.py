"""Who the load is for: the busiest subscriptions of the data set, with API keys and payloads.

Each ``Event`` carries both the JSON the API receives and the ids the raw-SQL baseline uses,
so that both sides record the same events (the baseline skips the lookups the product makes
to resolve names into ids: that is part of what the ratio measures).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from .generate import MODELS, zipf_cumulative, zipf_pick


@dataclass
class Actor:
    user_id: int
    email: str
    environment_id: int
    environment_public_id: str
    team_id: int | None


@dataclass
class Target:
    subscription_id: int
    timezone: str
    allocation: Decimal
    cap: Decimal
    period_id: int
    period_start: datetime
    product_id: int
    product_slug: str
    secret: str = ""
    api_key_id: str = ""
    actors: list[Actor] = field(default_factory=list)
    actor_weights: list[float] = field(default_factory=list)
    agents: list[tuple[int, str]] = field(default_factory=list)
    agent_weights: list[float] = field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass
class Event:
    target: Target
    body: dict
    actor: Actor
    agent_id: int
    credits: Decimal

    def json(self) -> bytes:
        return json.dumps(self.body).encode()

    def fingerprint(self) -> str:
        return hashlib.sha256(self.json()).hexdigest()


def load_targets(connection, subscription_ids: list[int], *, now: datetime) -> list[Target]:
    """Everything the load needs about these subscriptions, read once."""
    targets = []
    for subscription_id in subscription_ids:
        row = connection.execute(
            """
            SELECT s.timezone, s.base_allocation,
                   s.base_allocation + CASE WHEN s.limit_mode = 'soft'
                       THEN s.excess_allowance ELSE 0 END,
                   p.id, p.start
            FROM accounts_subscription s
            JOIN credits_billingperiod p ON p.subscription_id = s.id
                AND p.start <= %(now)s AND p."end" > %(now)s
            WHERE s.id = %(id)s
            """,
            {"id": subscription_id, "now": now},
        ).fetchone()
        product = connection.execute(
            "SELECT p.id, p.slug FROM credits_product p JOIN credits_product_enabled_for e "
            "ON e.product_id = p.id WHERE e.subscription_id = %s ORDER BY p.id LIMIT 1",
            [subscription_id],
        ).fetchone()
        target = Target(subscription_id, row[0], row[1], row[2], row[3], row[4], *product)
        members = connection.execute(
            """
            SELECT u.id, u.email, e.id, e.public_id::text, t.team_id
            FROM accounts_membership m
            JOIN accounts_user u ON u.id = m.user_id
            JOIN accounts_environment e ON e.id = m.environment_id
            LEFT JOIN accounts_teammembership t ON t.user_id = u.id
                AND t.subscription_id = m.subscription_id
            WHERE m.subscription_id = %s AND m.role = 'member'
            ORDER BY u.id
            """,
            [subscription_id],
        ).fetchall()
        target.actors = [Actor(*member) for member in members]
        target.actor_weights = zipf_cumulative(len(target.actors), 1.0)
        target.agents = connection.execute(
            "SELECT id, name FROM credits_agent WHERE subscription_id = %s ORDER BY id",
            [subscription_id],
        ).fetchall()
        target.agent_weights = zipf_cumulative(len(target.agents), 1.1)
        targets.append(target)
    return targets


# Credits each throughput target has left before a load starts. Runs reuse the data set, and
# the busiest subscriptions would otherwise reach their hard limit after a few runs, so that
# the load measured refusals; the limit check still runs on every event (figure 3 measures
# refusals, on subscriptions of its own).
HEADROOM = Decimal(1_000_000)


def give_headroom(connection, subscription_ids: list[int], *, now: datetime) -> None:
    connection.execute(
        """
        UPDATE accounts_subscription s SET base_allocation = p.credits_used + %(headroom)s
        FROM credits_billingperiod p
        WHERE p.subscription_id = s.id AND p.start <= %(now)s AND p."end" > %(now)s
          AND s.id = ANY(%(ids)s) AND s.base_allocation < p.credits_used + %(headroom)s
        """,
        {"headroom": HEADROOM, "now": now, "ids": subscription_ids},
    )


def give_keys(targets: list[Target]) -> None:
    """A fresh API key per target, made by the product's own service."""
    from accounts.models import Subscription
    from accounts.services import create_api_key

    for target in targets:
        subscription = Subscription.objects.get(pk=target.subscription_id)
        api_key, secret = create_api_key(subscription=subscription, name="bench load")
        target.secret, target.api_key_id = secret, api_key.pk


class EventMaker:
    """Events spread over the targets with the data set's skew; keys unique per run."""

    def __init__(self, targets: list[Target], *, run: str, seed: int, credits: str | None = None):
        self.targets = targets
        self.cumulative = zipf_cumulative(len(targets), 1.1)
        self.rng = random.Random(seed)
        self.run = run
        self.counter = 0
        self.credits = credits

    def next(self, target: Target | None = None) -> Event:
        rng = self.rng
        target = target or self.targets[zipf_pick(self.cumulative, rng)]
        actor = target.actors[zipf_pick(target.actor_weights, rng)]
        agent_id, agent_name = target.agents[zipf_pick(target.agent_weights, rng)]
        self.counter += 1
        credits = Decimal(self.credits or f"{rng.lognormvariate(0.2, 1.0):.4f}")
        body = {
            "idempotency_key": f"{self.run}-{self.counter}",
            "environment": actor.environment_public_id,
            "user": actor.email,
            "product": target.product_slug,
            "feature": "chat",
            "agent": agent_name,
            "model": MODELS[rng.randrange(3)],
            "credits": str(credits),
            "input_tokens": int(credits * 800),
            "output_tokens": int(credits * 200),
            "latency_ms": int(rng.lognormvariate(6.7, 0.6)),
            "status": "succeeded",
        }
        return Event(target, body, actor, agent_id, credits)
