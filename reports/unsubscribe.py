"""One-click unsubscribe from a scheduled report, without logging in.

Each email carries a link of its own: ``/reports/unsubscribe/<token>/``, where the token is the
schedule's id and the recipient's address signed with ``SECRET_KEY`` (``django.core.signing``,
a salt of its own). It does not expire: a link in an old email must keep working. A token that
was altered fails its signature (400); one whose schedule was deleted is a 404.

GET shows a confirmation page (mail scanners follow links, so a GET never changes anything);
its button POSTs. Mail clients that implement RFC 8058 POST ``List-Unsubscribe=One-Click`` to
the same URL straight from their own "Unsubscribe" button, without a page or a cookie, which is
why the view is exempt from CSRF: the signed token is the whole authorisation, and all it can do
is stop (or restart) one report to one address. The page also offers to undo.
"""

import logging

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .models import ReportSchedule, Unsubscribe

logger = logging.getLogger(__name__)

SALT = "reports.unsubscribe"


def unsubscribe_token(*, schedule_id: int, email: str) -> str:
    return signing.dumps({"schedule": schedule_id, "email": email.lower()}, salt=SALT)


def read_unsubscribe_token(token: str) -> tuple[int, str]:
    """The schedule id and address of a token; ``signing.BadSignature`` if it was altered."""
    data = signing.loads(token, salt=SALT)
    if not isinstance(data, dict) or not isinstance(data.get("schedule"), int):
        raise signing.BadSignature("Not an unsubscribe token.")
    return data["schedule"], str(data.get("email", ""))


def unsubscribe_url(*, schedule_id: int, email: str) -> str:
    token = unsubscribe_token(schedule_id=schedule_id, email=email)
    path = reverse("report-unsubscribe", args=[token])
    return f"{settings.SITE_URL.rstrip('/')}{path}"


@transaction.atomic
def unsubscribe(*, schedule: ReportSchedule, email: str) -> bool:
    """Stop the schedule's reports to ``email``; False if it was already unsubscribed."""
    _, created = Unsubscribe.objects.get_or_create(schedule=schedule, email=email.lower())
    if created:
        logger.info("event=report_unsubscribed schedule_id=%s", schedule.pk)
    return created


def resubscribe(*, schedule: ReportSchedule, email: str) -> None:
    deleted, _ = Unsubscribe.objects.filter(schedule=schedule, email=email.lower()).delete()
    if deleted:
        logger.info("event=report_resubscribed schedule_id=%s", schedule.pk)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request, token: str):
    try:
        schedule_id, email = read_unsubscribe_token(token)
    except signing.BadSignature:
        return render(request, "reports/unsubscribe_invalid.html", status=400)
    schedule = ReportSchedule.objects.select_related("subscription").filter(pk=schedule_id).first()
    if schedule is None:
        raise Http404("This report no longer exists.")
    if request.method == "POST":
        if request.POST.get("action") == "resubscribe":
            resubscribe(schedule=schedule, email=email)
        else:  # the page's button, or a mail client's one-click POST
            unsubscribe(schedule=schedule, email=email)
    unsubscribed = Unsubscribe.objects.filter(schedule=schedule, email=email).exists()
    return render(
        request,
        "reports/unsubscribe.html",
        {
            "schedule": schedule,
            "email": email,
            "unsubscribed": unsubscribed,
            "changed": request.method == "POST",
        },
    )
