"""A project manager's report schedules on their own pages (``/usage/schedules/``): create,
edit, pause, delete and "Send a test now", for the environments they manage.

The same rules as the API and the admin: schedules are read through the scoping layer
(``ReportSchedule.objects.visible_to``: a manager sees the ones they own on environments they
still manage), validated by the model and saved by ``services.save_schedule``. Someone who
manages no environment gets a 403; a schedule out of reach is a 404.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import services
from .models import ReportSchedule
from .schedule_forms import EnvironmentScheduleForm, send_test_now
from .views import LOGIN_URL, manages_environments


def _forbidden(request):
    return render(request, "reports/schedules.html", {"nav": "schedules"}, status=403)


def _schedules(request):
    return (
        ReportSchedule.objects.visible_to(request.user)
        .filter(scope=ReportSchedule.Scope.ENVIRONMENT)
        .select_related("subscription", "environment__project")
    )


def _schedule(request, schedule_id: int) -> ReportSchedule:
    schedule = _schedules(request).filter(pk=schedule_id).first()
    if schedule is None:
        raise Http404("No such report schedule among yours.")
    return schedule


def _context(**extra) -> dict:
    return {"nav": "schedules", "manages_environments": True, **extra}


@login_required(login_url=LOGIN_URL)
def schedule_list(request):
    if not manages_environments(request.user):
        return _forbidden(request)
    schedules = _schedules(request).order_by("subscription__name", "name", "pk")
    return render(request, "reports/schedules.html", _context(schedules=schedules))


@login_required(login_url=LOGIN_URL)
def schedule_form(request, schedule_id: int | None = None):
    """Create (no id) or edit a schedule; pausing is unticking "enabled" (or the page's
    Pause button)."""
    if not manages_environments(request.user):
        return _forbidden(request)
    schedule = ReportSchedule() if schedule_id is None else _schedule(request, schedule_id)
    if schedule.pk is None:
        schedule.created_by = request.user
    form = EnvironmentScheduleForm(request.POST or None, instance=schedule, manager=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_schedule(schedule=form.save(commit=False), actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Saved “{saved}”.")
            return redirect("usage-schedule", schedule_id=saved.pk)
    return render(request, "reports/schedule_form.html", _context(form=form, schedule=schedule))


@require_POST
@login_required(login_url=LOGIN_URL)
def schedule_pause(request, schedule_id: int):
    """Pause a schedule, or resume a paused one."""
    schedule = _schedule(request, schedule_id)
    schedule.enabled = not schedule.enabled
    services.save_schedule(schedule=schedule, actor=request.user)
    messages.success(request, f"{'Resumed' if schedule.enabled else 'Paused'} “{schedule}”.")
    return redirect("usage-schedule", schedule_id=schedule.pk)


@login_required(login_url=LOGIN_URL)
def schedule_delete(request, schedule_id: int):
    schedule = _schedule(request, schedule_id)
    if request.method == "POST":
        services.delete_schedule(schedule=schedule, actor=request.user)
        messages.success(request, f"Deleted “{schedule}”.")
        return redirect("usage-schedules")
    return render(request, "reports/schedule_delete.html", _context(schedule=schedule))


@require_POST
@login_required(login_url=LOGIN_URL)
def schedule_send_test(request, schedule_id: int):
    level, message = send_test_now(_schedule(request, schedule_id), request.user)
    messages.add_message(request, level, message)
    return redirect("usage-schedule", schedule_id=schedule_id)
