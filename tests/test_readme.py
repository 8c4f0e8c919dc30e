"""The README is executable: every shell example of its API sections runs as written against
the live test server on the demo data, and its links lead somewhere.

The examples run top to bottom in one shell, as a reader following the README would run them.
The only changes are the ones the README asks the reader to make: the lines ``NAME=...`` are
given a value (an API key, an EnvironmentId, a token, an id), and the demo's address
``http://127.0.0.1:8000`` becomes the test server's. ``curl`` is wrapped so that every call is
logged and an HTTP error fails it (``--fail-with-body``); each call must answer 2xx with a
body, every JSON list (``results``) must have rows, and every CSV more than its header.
"""

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import Environment, Team, User
from credits.management.demo_world import DEMO_KEY_NAME, demo_key_secret

README = Path(settings.BASE_DIR) / "README.md"
DEMO_ADDRESS = "http://127.0.0.1:8000"
API_SECTIONS = (
    "Recording usage (the metering API)",
    "Managing keys and limits over the API",
    "Exports and usage reports",
    "Scheduled email reports",
)
CURL_WRAPPER = """#!/bin/bash
# Every call: HTTP errors fail it, and its status, arguments and body are logged.
call="$README_LOG/$(date +%s%N)"
printf '%s\\n' "$@" > "$call.args"
set -o pipefail
"$REAL_CURL" --fail-with-body --write-out "%{stderr}%{http_code} %{filename_effective}\\n" \\
  "$@" 2> "$call.stderr" | tee "$call.body"
status=$?
tail -n 1 "$call.stderr" > "$call.status"
exit $status
"""
PLACEHOLDER = re.compile(r"^(?P<name>[A-Z_]+)=\.\.\.(?P<comment>\s.*)?$", re.MULTILINE)


def sections() -> dict[str, str]:
    """The README's ``## `` sections by title, each with its ``###`` subsections."""
    parts = re.split(r"^## (.+)$", README.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def api_examples() -> list[str]:
    readme = sections()
    blocks = [block for title in API_SECTIONS for block in shell_blocks(readme[title])]
    # Blocks that call no API (management commands, say) have tests of their own.
    examples = [block for block in blocks if "curl" in block]
    assert len(examples) >= 9
    return examples


@pytest.fixture
def demo(transactional_db, settings):
    """The demo data (a shorter, sparser history than ``bin/demo``'s: the same people, keys,
    agents and limits, and usage in every period the examples name), and the demo's settings
    where an example depends on them (webhooks may go to the loopback)."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    call_command("seed_demo", months=3, scale=Decimal("0.1"), verbosity=0)


def values(live_server) -> dict[str, str]:
    """What a reader of the demo would fill in, each as the README says where to find it."""
    alice = User.objects.get(email="alice@acme.example")
    token = APIClient().post(
        "/api/v1/auth/token/",
        {"email": alice.email, "password": "demo-password"},
        format="json",
    )
    assert token.status_code == 200, token.content
    api = f"{live_server.url}/api/v1"

    # Read off the answer of the command above it, as the reader would.
    def created_key(name: str) -> str:
        return (
            f'$(curl -s {api}/api-keys/ -H "Authorization: Token $TOKEN" | python3 -c '
            '\'import json, sys; print(next(key["id"] for key in json.load(sys.stdin)["results"]'
            f' if key["name"] == "{name}" and not key["revoked"]))\')'
        )

    created_schedule = (
        f'$(curl -s -H "$AUTH" {api}/report-schedules/ | python3 -c '
        '\'import json, sys; print(next(schedule["id"] for schedule in '
        'json.load(sys.stdin)["results"] if schedule["name"] == "Finance monthly"))\')'
    )
    created_webhook = (
        f'$(curl -s {api}/webhooks/ -H "Authorization: Token $TOKEN" | python3 -c '
        '\'import json, sys; print(next(endpoint["id"] for endpoint in '
        'json.load(sys.stdin)["results"] if endpoint["name"] == "Local receiver"))\')'
    )
    created_rule = (
        f'$(curl -s {api}/alert-rules/ -H "Authorization: Token $TOKEN" | python3 -c '
        '\'import json, sys; print(next(rule["id"] for rule in '
        'json.load(sys.stdin)["results"] if rule["name"] == "Content at half"))\')'
    )
    its_delivery = (
        f'$(curl -s {api}/webhooks/$WEBHOOK_ID/deliveries/ -H "Authorization: Token $TOKEN" | '
        'python3 -c \'import json, sys; print(json.load(sys.stdin)["results"][0]["id"])\')'
    )
    acme = Environment.objects.get(
        project__subscription__name="Acme Corp", project__name="Website", name="Production"
    )
    return {
        "KEY": demo_key_secret("Acme Corp", DEMO_KEY_NAME),
        "ENV": str(acme.public_id),
        "TOKEN": token.json()["token"],
        "KEY_ID": created_key("Billing worker"),
        "BUDGET_KEY_ID": created_key("Nightly jobs"),
        "USER_ID": str(User.objects.get(email="grace@acme.example").pk),
        "TEAM_ID": str(Team.objects.get(subscription__name="Acme Corp", name="Content").pk),
        "SCHEDULE_ID": created_schedule,
        "WEBHOOK_ID": created_webhook,
        "DELIVERY_ID": its_delivery,
        "RULE_ID": created_rule,
    }


def as_run(script: str, values: dict[str, str], live_server) -> str:
    def fill(match) -> str:
        name = match["name"]
        assert name in values, f"The README asks the reader to set {name}: give it a value here."
        return f"{name}={values[name]}"

    return PLACEHOLDER.sub(fill, script).replace(DEMO_ADDRESS, live_server.url)


def curl_calls(script: str) -> int:
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    return len(re.findall(r"(?:^|[\s($])curl\s", code))


def logged_calls(log: Path, workdir: Path) -> list[dict]:
    calls = []
    for args in sorted(log.glob("*.args")):
        stem = args.with_suffix("")
        status, _, filename = stem.with_suffix(".status").read_text().strip().partition(" ")
        body_file = workdir / filename if filename else stem.with_suffix(".body")
        calls.append(
            {
                "command": "curl " + " ".join(args.read_text().splitlines()),
                "status": int(status),
                "body": body_file.read_text(),
            }
        )
    return calls


def problems_with(call: dict) -> list[str]:
    status, body = call["status"], call["body"]
    if not 200 <= status < 300:
        return [f"answered {status}: {body[:300]}"]
    if status == 204:
        return []
    if not body.strip():
        return ["answered an empty body"]
    try:
        document = json.loads(body)
    except ValueError:
        rows = list(csv.reader(io.StringIO(body)))
        return [] if len(rows) > 1 else [f"answered a CSV without rows: {body[:300]}"]
    if isinstance(document, dict) and document.get("results") == []:
        return [f"answered no results: {body[:300]}"]
    return []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_every_api_example_in_the_readme_runs_as_written(demo, live_server, tmp_path):
    script = "\n".join(api_examples())
    workdir, log, bin_dir = tmp_path / "work", tmp_path / "log", tmp_path / "bin"
    for folder in (workdir, log, bin_dir):
        folder.mkdir()
    wrapper = bin_dir / "curl"
    wrapper.write_text(CURL_WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REAL_CURL": shutil.which("curl"),
        "README_LOG": str(log),
    }

    runnable = as_run(script, values(live_server), live_server)
    result = subprocess.run(  # noqa: S603 - bash running the README's own examples
        ["/bin/bash", "-c", runnable],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    calls = logged_calls(log, workdir)
    assert result.stderr == "", result.stderr
    assert len(calls) == curl_calls(runnable), [call["command"] for call in calls]
    failures = [
        f"{call['command']}\n    {problem}" for call in calls for problem in problems_with(call)
    ]
    assert not failures, "\n".join(failures)
    downloads = sorted(path.name for path in workdir.iterdir())
    assert any(name.startswith("acme-corp_usage-by-agent_") for name in downloads), downloads


# --- What the README documents ------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_the_readmes_relative_links_and_anchors_lead_somewhere():
    text = README.read_text()
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)
    anchors = {github_anchor(heading) for heading in re.findall(r"^#+ (.+)$", prose, re.M)}
    targets = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert targets, "no links found"
    dead = []
    for target in targets:
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        if not (README.parent / path).exists() if path else anchor not in anchors:
            dead.append(target)
    # Files named in code spans (`docs.md`, `tests/x.py::test_y`) exist too.
    for name in re.findall(r"`([\w./-]+\.(?:md|py))(?:::[\w:]+)?`", prose):
        if ("/" in name or name.endswith(".md")) and not (README.parent / name).exists():
            dead.append(name)
    assert not dead, f"dead links in the README: {dead}"


def schema_values(node, components, seen=()) -> set[str]:
    if isinstance(node, list):
        return set().union(*(schema_values(item, components, seen) for item in node))
    if not isinstance(node, dict):
        return set()
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return set() if name in seen else schema_values(components[name], components, (*seen, name))
    found = {str(value) for value in node.get("enum", ()) if value is not None}
    return found.union(*(schema_values(value, components, seen) for value in node.values()))


@pytest.mark.django_db
def test_every_parameter_and_every_value_of_the_api_is_in_the_readme():
    """Every query parameter of the API and every value an enumerated parameter or field takes
    (timeframes, scopes, formats, frequencies, weekdays, ...) is named in the README."""
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    text = README.read_text()
    missing = set()
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "query" and not re.search(
                    rf"[`?&]{re.escape(parameter['name'])}[=`]", text
                ):
                    missing.add(f"{path} ?{parameter['name']}")
                for value in schema_values(parameter["schema"], components):
                    if not re.search(rf"[`=\"]{re.escape(value)}[`&\"]", text):
                        missing.add(f"{path} ?{parameter['name']}={value}")
            for value in schema_values(operation.get("requestBody", {}), components):
                if not re.search(rf"[`\"]{re.escape(value)}[`\"]", text):
                    missing.add(f"{path} body: {value}")
    assert not missing, "\n".join(sorted(missing))
