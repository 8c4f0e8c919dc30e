"""Response headers and logs: a Content-Security-Policy on every page, and expected refusals
logged as one line."""

import logging
import re

import pytest

pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (directive.split() for directive in header.split(";") if directive)
    }


@pytest.mark.parametrize(
    "path", ["/login/", "/usage/", "/admin/", "/admin/credit-usage/", "/api/schema/swagger/"]
)
def test_pages_carry_a_content_security_policy_that_runs_only_our_scripts(world, client, path):
    if path != "/login/":
        client.force_login(world.admin)
    response = client.get(path)

    assert response.status_code == 200
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"][0] == "'self'"
    assert all(
        source == "'self'" or source.startswith("'nonce-") for source in directives["script-src"]
    )
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert directives["base-uri"] == ["'self'"]


@pytest.mark.parametrize("path", ["/api/schema/swagger/", "/api/schema/redoc/"])
def test_the_api_docs_inline_script_carries_the_responses_nonce(world, client, path):
    client.force_login(world.admin)
    response = client.get(path)

    page = response.content.decode()
    inline = [
        attributes
        for attributes in re.findall(r"<script([^>]*)>", page)
        if "src=" not in attributes
    ]
    if inline:  # ReDoc without settings and Swagger's split view have none
        (nonce,) = [
            source.removeprefix("'nonce-").removesuffix("'")
            for source in policy(response)["script-src"]
            if source.startswith("'nonce-")
        ]
        assert all(f'nonce="{nonce}"' in attributes for attributes in inline)
    assert "fonts.googleapis.com" not in response.content.decode()


def test_an_expected_refusal_is_one_warning_line_without_a_traceback(world, client, caplog):
    """Every admin 403 (PermissionDenied) used to log its whole traceback."""
    client.force_login(world.admin)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.get("/admin/credits/product/add/").status_code == 403

    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "Forbidden (Permission denied): /admin/credits/product/add/"
    assert record.exc_info is None
    assert "Traceback" not in caplog.text


def test_an_unexpected_error_keeps_its_traceback():
    from config.logging_filters import ExpectedRefusalsWithoutTraceback

    try:
        raise ValueError("a fault")
    except ValueError:
        record = logging.getLogger("django.request").makeRecord(
            "django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), None
        )
        import sys

        record.exc_info = sys.exc_info()
    assert ExpectedRefusalsWithoutTraceback().filter(record)
    assert record.exc_info is not None
