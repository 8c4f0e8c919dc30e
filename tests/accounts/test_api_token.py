"""People get a personal API token with their email and password; guessing is throttled."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/api/v1/auth/token/"


@pytest.fixture
def strict_rate(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "3/min"},
        "NUM_PROXIES": 1,  # as behind one load balancer: client addresses come from X-Forwarded-For
    }


def test_it_returns_a_token_that_authenticates(world, api_client):
    response = api_client.post(URL, {"email": world.admin.email, "password": PASSWORD})

    assert response.status_code == 200
    token = response.json()["token"]
    assert token == Token.objects.get(user=world.admin).key
    assert response["Cache-Control"] == "no-store"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/subscription/").json()["name"] == "Acme"


def test_email_is_case_insensitive_and_asking_again_returns_the_same_token(world, api_client):
    first = api_client.post(URL, {"email": "Alice@ACME.example", "password": PASSWORD})
    second = api_client.post(URL, {"email": "alice@acme.example", "password": PASSWORD})

    assert first.status_code == second.status_code == 200
    assert first.json()["token"] == second.json()["token"]


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "alice@acme.example", "password": "wrong"},
        {"email": "nobody@acme.example", "password": PASSWORD},
        {"email": "alice@acme.example", "password": f" {PASSWORD}"},  # passwords are not trimmed
    ],
)
def test_wrong_credentials_are_a_400_that_does_not_say_which_part_was_wrong(
    world, api_client, credentials
):
    response = api_client.post(URL, credentials, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_credentials",
            "message": "Unable to log in with these credentials.",
            "details": {},
        }
    }
    assert not Token.objects.exists()


def test_inactive_users_get_no_token(world, api_client):
    world.member.is_active = False
    world.member.save()

    response = api_client.post(URL, {"email": world.member.email, "password": PASSWORD})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "alice@acme.example"}, {"email": 5, "password": ["x"]}, ["a", "b"], "null"],
)
def test_malformed_requests_are_validation_errors(world, api_client, body):
    response = api_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_the_endpoint_ignores_credentials_it_is_sent(world, api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    response = api_client.post(URL, {"email": world.admin.email, "password": PASSWORD})

    assert response.status_code == 200


def test_guessing_is_throttled_per_client_address(world, api_client, strict_rate):
    for _ in range(3):
        assert (
            api_client.post(URL, {"email": "x@acme.example", "password": "guess"}).status_code
            == 400
        )

    response = api_client.post(URL, {"email": world.admin.email, "password": PASSWORD})

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert 0 < error["details"]["retry_after_seconds"] <= 60


def test_guessing_one_persons_password_from_many_addresses_is_throttled(
    world, api_client, strict_rate
):
    for n in range(3):
        response = api_client.post(
            URL,
            {"email": "ALICE@acme.example", "password": f"guess-{n}"},
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        )
        assert response.status_code == 400

    response = api_client.post(
        URL,
        {"email": "alice@acme.example", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )

    assert response.status_code == 429
    other_person = api_client.post(
        URL,
        {"email": world.member.email, "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.8",
    )
    assert other_person.status_code == 200
