"""Deploys collect the static files: the Procfile's release step runs ``collectstatic``, and a
web server started without them refuses to start, naming the step (rather than answering 500
on every page with "Missing staticfiles manifest entry")."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from django.conf import settings

PROCFILE = Path(settings.BASE_DIR) / "Procfile"

# Imports the WSGI module as gunicorn does, then asks it for the admin's login page.
SERVE_LOGIN_PAGE = """
import io, sys
from config.wsgi import application
environ = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/admin/login/", "QUERY_STRING": "",
    "SERVER_NAME": "creditdesk.example.com", "SERVER_PORT": "443",
    "HTTP_HOST": "creditdesk.example.com",
    "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
}
statuses = []
body = b"".join(application(environ, lambda status, headers: statuses.append(status)))
print(statuses[0])
print(body.decode())
"""


def production(var_dir: Path) -> dict:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"))
    }
    environment.update(
        DEBUG="false",
        SECRET_KEY="k" * 20 + "production-secret-with-enough-variety-1234567890",
        ALLOWED_HOSTS="creditdesk.example.com",
        CREDITDESK_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return environment


def run(command: list[str], var_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        command,
        env=production(var_dir),
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )


def release_commands() -> list[list[str]]:
    processes = dict(line.split(": ", 1) for line in PROCFILE.read_text().splitlines() if line)
    return [shlex.split(command) for command in processes["release"].split(" && ")]


def test_the_web_server_refuses_to_start_without_collected_static_files(tmp_path):
    result = run([sys.executable, "-c", SERVE_LOGIN_PAGE], tmp_path)

    assert result.returncode != 0
    assert "The static files have not been collected" in result.stderr
    assert "python manage.py collectstatic --noinput" in result.stderr


def test_the_procfile_release_step_collects_the_static_files_the_pages_need(tmp_path):
    collect = release_commands()[0]
    assert collect == ["python", "manage.py", "collectstatic", "--noinput"]

    collected = run([sys.executable, *collect[1:]], tmp_path)
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()

    served = run([sys.executable, "-c", SERVE_LOGIN_PAGE], tmp_path)
    assert served.returncode == 0, served.stderr
    status, page = served.stdout.split("\n", 1)
    assert status == "200 OK"
    assert "/static/admin/css/base." in page  # the hashed name, from the manifest
