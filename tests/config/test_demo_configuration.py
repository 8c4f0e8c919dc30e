"""The demo as ``bin/demo`` runs it keeps every promise production keeps.

No ``DATABASE_URL``: the embedded PostgreSQL cluster in a fresh ``var`` directory, held by
``python -m config.embedded_db`` as ``bin/demo`` holds it, the demo's settings (``DEBUG``, the
file broker and file emails) and the demo's data from ``seed_demo``. ``demo_limits.py`` drives
its hard, soft, user and team limits; this test judges what it found.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("demo_limits.py")
ROOT = DRIVER.parents[2]
SERVICE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL", "SECRET_KEY")


@pytest.fixture(scope="module")
def findings() -> dict:
    # Not under pytest's tmp_path: as root the server runs as another user, and every pytest
    # session resets pytest's own temporary root to owner-only.
    var = Path(tempfile.mkdtemp(prefix="creditdesk-demo-"))
    for folder in ("broker", "broker-processed", "sent-emails"):  # as bin/demo makes them
        (var / folder).mkdir()
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env.update(DEBUG="true", CREDITDESK_VAR_DIR=str(var), LOG_LEVEL="WARNING")
    holding_the_cluster = [sys.executable, "-m", "config.embedded_db", str(var / "postgres")]
    result = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [*holding_the_cluster, "--", sys.executable, str(DRIVER)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield {**json.loads(result.stdout.strip().splitlines()[-1]), "var": var}
    shutil.rmtree(var)


def test_the_demo_runs_on_the_embedded_postgresql(findings):
    assert findings["engine"] == "postgresql"
    assert (findings["var"] / "postgres" / "PG_VERSION").exists()
    assert findings["database_host"] == str(findings["var"] / "postgres")
    assert not (findings["var"] / "postgres" / "postmaster.pid").exists()  # stopped after


def test_the_demo_has_every_kind_of_limit(findings):
    assert findings["limit_kinds"] == ["hard", "soft", "team", "user"]


def test_every_event_over_a_cap_is_refused_with_402_and_stores_nothing(findings):
    expected = {"user": "user_limit_exceeded", "team": "team_limit_exceeded"}
    assert len(findings["checks"]) >= 8
    for check in findings["checks"]:
        code = expected.get(check["name"].split()[0], "credit_limit_exceeded")
        assert (check["status"], check["code"], check["stored"]) == (402, code, 0), check


def test_no_balance_passes_its_cap(findings):
    full = [check for check in findings["checks"] if check["name"].endswith("when full")]
    assert len(full) == 3
    for check in full:
        assert check["filled"] == 201, check
        assert check["used"] == check["cap"]
        assert check["excess_used"] == check["excess_allowance"]


def test_counters_equal_the_ledger_and_nothing_failed(findings):
    assert findings["mismatches"] == []
    assert all(status < 500 for status in findings["statuses"])
