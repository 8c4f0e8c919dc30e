"""API keys are verified once per process, and every change to a key takes effect at once.

Authentication keeps a verified key by its secret and, on each request, reads only the
versions of the key's rows: revoking, expiring, deleting or editing the key (or its
subscription or environment) makes the very next request in the same process see it.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey
from tests import factories

pytestmark = pytest.mark.django_db

BALANCE = "/api/v1/balance/"


@pytest.fixture
def acme_key(world):
    return factories.api_key(world.subscription, name="Backend")


@pytest.fixture
def hashes(monkeypatch):
    """How many times a presented secret was hashed and compared with a stored key."""
    calls = []
    is_valid = ApiKey.is_valid

    def counting(self, key):
        calls.append(self.prefix)
        return is_valid(self, key)

    monkeypatch.setattr(ApiKey, "is_valid", counting)
    return calls


def test_a_key_is_verified_once_then_only_its_version_is_read(acme_key, hashes):
    machine = factories.api_key_client(acme_key[1])
    assert machine.get(BALANCE).status_code == 200  # verifies the key and notes its last use

    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert machine.get(BALANCE).status_code == 200

    assert hashes == [acme_key[0].prefix]
    key_reads = [query["sql"] for query in queries if '"accounts_apikey"' in query["sql"]]
    assert len(key_reads) == 3
    assert all(sql.startswith("SELECT ARRAY[") for sql in key_reads)  # the versions alone


def test_noting_the_last_use_keeps_the_key_verified(acme_key, hashes):
    machine = factories.api_key_client(acme_key[1])
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert machine.get(BALANCE).status_code == 200
    with time_machine.travel(start + timedelta(minutes=5), tick=False):
        assert machine.get(BALANCE).status_code == 200  # notes the use: the key's row changes
        assert machine.get(BALANCE).status_code == 200

    assert hashes == [acme_key[0].prefix]
    acme_key[0].refresh_from_db()
    assert acme_key[0].last_used_at == start + timedelta(minutes=5)


def test_a_key_revoked_in_the_admin_is_refused_by_the_next_request(client, world, acme_key):
    api_key, secret = acme_key
    machine = factories.api_key_client(secret)
    assert machine.get(BALANCE).status_code == 200
    client.force_login(world.admin)

    client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [api_key.pk]},
    )

    refused = machine.get(BALANCE)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_failed"


def test_a_key_revoked_by_any_writer_is_refused_by_the_next_request(acme_key):
    api_key, secret = acme_key
    machine = factories.api_key_client(secret)
    assert machine.get(BALANCE).status_code == 200

    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True, revoked_at=timezone.now())

    assert machine.get(BALANCE).status_code == 401


def test_an_expired_or_deleted_key_is_refused_by_the_next_request(acme_key):
    api_key, secret = acme_key
    machine = factories.api_key_client(secret)
    assert machine.get(BALANCE).status_code == 200

    ApiKey.objects.filter(pk=api_key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    expired = machine.get(BALANCE)
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "This API key has expired."

    ApiKey.objects.filter(pk=api_key.pk).delete()
    assert machine.get(BALANCE).status_code == 401


def test_an_edited_key_is_verified_again(acme_key, hashes):
    api_key, secret = acme_key
    machine = factories.api_key_client(secret)
    assert machine.get(BALANCE).json()["api_key"] is None

    ApiKey.objects.filter(pk=api_key.pk).update(credit_budget=Decimal("40"))

    assert machine.get(BALANCE).json()["api_key"]["limit"] == "40.0000"
    assert hashes == [api_key.prefix, api_key.prefix]


def test_an_edit_of_the_keys_subscription_is_seen_by_the_next_request(world, acme_key):
    machine = factories.api_key_client(acme_key[1])
    assert machine.get(BALANCE).json()["base_allocation"] == "1000.0000"

    world.subscription.base_allocation = Decimal("250")
    world.subscription.save()

    assert machine.get(BALANCE).json()["base_allocation"] == "250.0000"


def test_another_secret_with_a_kept_keys_prefix_is_refused(acme_key):
    api_key, secret = acme_key
    assert factories.api_key_client(secret).get(BALANCE).status_code == 200

    forged = f"{api_key.prefix}.{'x' * 32}"

    assert factories.api_key_client(forged).get(BALANCE).status_code == 401
    assert factories.api_key_client(secret).get(BALANCE).status_code == 200
