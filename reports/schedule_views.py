"""A project manager's report schedules on their own pages (``/usage/schedules/``): create,
edit, pause, delete and "Send a test now", for the environments they manage.

The same rules as the API and the admin: schedules are read through the scoping layer
(``ReportSchedule.objects.visible_to``: a manager sees the ones they own on environments they
still manage), validated by the model and saved by ``services.save_schedule``.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from . import services
from .manager_pages import ManagerPages
from .models import ReportSchedule
from .schedule_forms import EnvironmentScheduleForm, send_test_now
from .views import LOGIN_URL

PAGES = ManagerPages(
    nav="schedules",
    url_name="usage-schedule",
    object_name="schedule",
    templates="reports/schedule",
    model=ReportSchedule,
    only={"scope": ReportSchedule.Scope.ENVIRONMENT},
    form_class=EnvironmentScheduleForm,
    save=services.save_schedule,
    delete=services.delete_schedule,
    list_title="Report schedules",
    delete_consequence="Its recipients get no more reports, and its delivery log goes with it.",
)


@require_POST
@login_required(login_url=LOGIN_URL)
def schedule_send_test(request, schedule_id: int):
    level, message = send_test_now(PAGES.get(request, schedule_id), request.user)
    messages.add_message(request, level, message)
    return redirect("usage-schedule", schedule_id=schedule_id)
