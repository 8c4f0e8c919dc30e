"""A separate process for test_faults' cross-process concurrency test.

``python -m tests.reliability.charging_process charge '<json>'`` posts usage events to
``/api/v1/events/`` (in-process WSGI, a connection of its own) and prints each idempotency
key's status; ``... open-periods '{}'`` runs the month-start task once and
``... dispatch-reports '{}'`` the scheduled reports' dispatch. Each process prints
``ready`` once Django is set up and waits for the go file, so that all of them start at once.
"""

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path


def wait_for_go(go_file: str) -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.01)


def charge(job: dict) -> dict:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {job['secret']}")
    wait_for_go(job["go_file"])
    statuses = {}
    for key in job["keys"]:
        payload = {
            "idempotency_key": key,
            "environment": job["environment"],
            "product": "ai-agent",
            "credits": job["credits"],
        }
        statuses[key] = client.post("/api/v1/events/", payload, format="json").status_code
    return statuses


def open_periods(job: dict) -> dict:
    from credits.tasks import open_billing_periods

    wait_for_go(job["go_file"])
    return open_billing_periods()


def dispatch_reports(job: dict) -> int:
    from reports.tasks import dispatch_due_reports

    wait_for_go(job["go_file"])
    return dispatch_due_reports()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if moment := os.environ.get("CREDITDESK_PIN_CLOCK"):
        # The test's clock is pinned (tests/conftest.py): start where it is now, ticking on.
        import time_machine

        time_machine.travel(datetime.fromisoformat(moment), tick=True).start()
    import django

    django.setup()
    role, job = sys.argv[1], json.loads(sys.argv[2])
    roles = {"charge": charge, "open-periods": open_periods, "dispatch-reports": dispatch_reports}
    result = roles[role](job)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
