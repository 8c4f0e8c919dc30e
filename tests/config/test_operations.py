"""Operations: the health endpoint, strict settings, and the read-replica router."""

import os
import subprocess
import sys

import pytest
from django.test import Client

from config.celery import app
from config.db_routers import REPLICA, ReportsReplicaRouter
from core.replica import reading_for_reports
from credits.models import CreditEvent, DailyUsage


@pytest.mark.django_db
def test_health_checks_the_database_and_the_broker():
    response = Client().get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_health_reports_an_unreachable_broker(monkeypatch):
    connect = app.connection_for_write
    monkeypatch.setattr(app, "connection_for_write", lambda: connect(url="redis://127.0.0.1:1/0"))

    response = Client().get("/health/")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "unavailable"}


def run_check(**env) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY"))
    }
    environment["METRICS_TOKEN"] = "m" * 40  # production sets one (core.W001 says so otherwise)
    environment.update(env)
    return subprocess.run(  # noqa: S603 - our own manage.py with our own interpreter
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_settings_pass_check_deploy():
    result = run_check(
        DEBUG="false",
        SECRET_KEY="k" * 20 + "production-secret-with-enough-variety-1234567890",
        ALLOWED_HOSTS="creditdesk.example.com",
    )

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be true or false"),
        ("EMAIL_TIMEOUT", "ten", "EMAIL_TIMEOUT must be a whole number"),
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,intranet", "must list networks such as"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(variable, value, message):
    result = run_check(SECRET_KEY="x" * 60, **{variable: value})

    assert result.returncode != 0
    assert message in result.stderr


def test_production_needs_a_secret_key():
    result = run_check(DEBUG="false")

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_secrets_can_come_from_files(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("s" * 30 + "file-secret-with-enough-variety-0987654321\n")

    result = run_check(
        DEBUG="false", SECRET_KEY_FILE=str(secret_file), ALLOWED_HOSTS="creditdesk.example.com"
    )

    assert result.returncode == 0, result.stderr


def test_report_reads_go_to_the_replica_and_writes_never_do(monkeypatch):
    monkeypatch.setattr("config.db_routers.replica_configured", lambda: True)
    router = ReportsReplicaRouter()

    assert router.db_for_read(DailyUsage) == "default"
    with reading_for_reports():
        assert router.db_for_read(DailyUsage) == REPLICA
        assert router.db_for_read(CreditEvent) == REPLICA
        assert router.db_for_write(CreditEvent) == "default"
        assert router.db_for_write(DailyUsage) == "default"
    assert router.db_for_read(DailyUsage) == "default"
    assert not router.allow_migrate(REPLICA, "credits")
    assert router.allow_migrate("default", "credits")


def test_without_a_replica_report_reads_stay_on_default():
    with reading_for_reports():
        assert ReportsReplicaRouter().db_for_read(DailyUsage) == "default"
