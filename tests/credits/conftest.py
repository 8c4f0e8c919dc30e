from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from tests import factories
from tests.credits.receivers import Receiver


@pytest.fixture
def key_client(world, product):
    """An API client authenticated with an API key of ``world.subscription``."""
    _, secret = factories.api_key(world.subscription)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


@pytest.fixture
def event_payload(world):
    counter = iter(range(1, 1_000_000))

    def make(**overrides):
        payload = {
            "idempotency_key": f"op-{next(counter)}",
            "environment": str(world.environment.public_id),
            "user": world.member.email,
            "product": "ai-agent",
            "feature": "chat",
            "agent": "Support bot",
            "agent_type": "single_task",
            "model": "gpt-5-mini",
            "credits": "1.5000",
            "input_tokens": 1200,
            "output_tokens": 300,
            "latency_ms": 850,
            "status": "succeeded",
            "session_id": "s-1",
        }
        payload.update(overrides)
        return payload

    return make


def set_allocation(subscription, allocation, *, mode="hard", allowance="0"):
    subscription.base_allocation = Decimal(allocation)
    subscription.limit_mode = mode
    subscription.excess_allowance = Decimal(allowance)
    subscription.save()


@pytest.fixture
def loopback_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def receivers(loopback_allowed):
    """Webhook receivers on 127.0.0.1, as many as a test makes; closed after it."""
    made = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def receiver(receivers):
    return receivers()


@pytest.fixture
def run_after_commit(django_capture_on_commit_callbacks):
    """What commits queues runs, as a worker would run it (tasks are eager)."""

    def run(action, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return action(*args, **kwargs)

    return run
