"""Usage for the report tests, recorded as products record it: ``POST /api/v1/events/`` with an
API key, at the moment the event happens (time frozen there), so that ledger, rollups and
period counters are exactly what production would hold."""

import itertools
from datetime import datetime

import time_machine
from rest_framework.test import APIClient

from tests import factories
from tests.factories import utc

EVENTS_URL = "/api/v1/events/"
BATCH_URL = "/api/v1/events/batch/"
SUB_ACCOUNT_RUN = utc(2026, 11, 18, 15)  # when Acme Labs records its credits by default


class EventRecorder:
    def __init__(self, world, *, key_name: str = "Backend"):
        self.world = world
        product = factories.ProductFactory(slug="ai-agent", name="AI agent")
        product.enabled_for.add(world.subscription, world.other_subscription)
        self.client = self.key_client(world.subscription, name=key_name)
        self._keys = itertools.count(1)

    @staticmethod
    def key_client(subscription, *, name: str = "Backend", environment=None) -> APIClient:
        _, secret = factories.api_key(subscription, name=name, environment=environment)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
        return client

    def record(self, *, at: datetime, client: APIClient | None = None, **fields) -> dict:
        """Record one event happening at ``at``; ``fields`` override a typical agent run."""
        with time_machine.travel(at, tick=False):
            response = (client or self.client).post(
                EVENTS_URL, self.payload(timestamp=at.isoformat(), **fields), format="json"
            )
        assert response.status_code == 201, response.json()
        return response.json()["event"]

    def record_batch(self, *, at: datetime, events: list[dict]) -> None:
        """Record many events at once (``POST /api/v1/events/batch/``) at ``at``; each event
        gives its own ``timestamp``."""
        with time_machine.travel(at, tick=False):
            response = self.client.post(
                BATCH_URL, {"events": [self.payload(**event) for event in events]}, format="json"
            )
        assert response.json()["refused"] == 0, response.json()

    def record_sub_account(
        self, *, at: datetime = SUB_ACCOUNT_RUN, credits: str = "2.5", **subscription_fields
    ):
        """Acme Labs, a sub-account of Acme with Acme's products, where its own key "Labs key"
        records ``credits`` at ``at``; returns it and its environment."""
        labs = factories.SubscriptionFactory(
            name="Acme Labs", parent=self.world.subscription, **subscription_fields
        )
        environment = factories.EnvironmentFactory(
            project=factories.ProjectFactory(subscription=labs, name="Lab"), name="Production"
        )
        labs.enabled_products.add(*self.world.subscription.enabled_products.all())
        self.record(
            at=at,
            client=self.key_client(labs, name="Labs key"),
            environment=str(environment.public_id),
            user=None,
            credits=credits,
        )
        return labs, environment

    def payload(self, **fields) -> dict:
        payload = {
            "idempotency_key": f"op-{next(self._keys)}",
            "environment": str(self.world.environment.public_id),
            "user": self.world.member.email,
            "product": "ai-agent",
            "feature": "chat",
            "agent": "Support bot",
            "agent_type": "single_task",
            "model": "gpt-5-mini",
            "credits": "1.5",
            "input_tokens": 1000,
            "output_tokens": 200,
            "latency_ms": 800,
            "status": "succeeded",
            "session_id": "s-1",
        }
        payload.update(fields)
        return {name: value for name, value in payload.items() if value is not None}


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def record_november(world) -> EventRecorder:
    """Acme's usage in October and November 2026 (Acme is in Europe/Prague).

    ============  =========  ===========  ===========  ==========  =========  =======  =======
    when (UTC)    who        environment  agent        model       feature    credits  latency
    ============  =========  ===========  ===========  ==========  =========  =======  =======
    15 Oct 09:00  carol      Production   Support bot  gpt-5-mini  chat       7        800
    10 Nov 09:00  carol      Production   Support bot  gpt-5-mini  chat       1.5      800
    12 Nov 09:00  carol      Production   Support bot  gpt-5-mini  chat       2.25     1200 (failed)
    20 Nov 09:00  bob        Production   Translator   gpt-5       translate  4        2000
    21 Nov 09:00  key alone  Staging      -            -           -          0.25     -
    22 Nov 09:00  alice      Staging      Support bot  gpt-5-mini  chat       10       800
    ============  =========  ===========  ===========  ==========  =========  =======  =======

    Sessions: carol's runs are s-1, bob's s-2, alice's s-3. alice is the admin, bob the project
    manager of Production, carol a member of Production; the key is called "Backend".
    """
    recorder = EventRecorder(world)
    staging = str(world.other_environment.public_id)
    recorder.record(at=utc(2026, 10, 15, 9), credits="7")
    recorder.record(at=utc(2026, 11, 10, 9))
    recorder.record(at=utc(2026, 11, 12, 9), credits="2.25", latency_ms=1200, status="failed")
    recorder.record(
        at=utc(2026, 11, 20, 9),
        user=world.manager.email,
        agent="Translator",
        agent_type="multi_step",
        model="gpt-5",
        feature="translate",
        credits="4",
        latency_ms=2000,
        session_id="s-2",
    )
    recorder.record(
        at=utc(2026, 11, 21, 9),
        user=None,
        agent=None,
        model="",
        feature="",
        credits="0.25",
        latency_ms=None,
        session_id="",
        environment=staging,
    )
    recorder.record(
        at=utc(2026, 11, 22, 9),
        user=world.admin.email,
        credits="10",
        session_id="s-3",
        environment=staging,
    )
    return recorder
