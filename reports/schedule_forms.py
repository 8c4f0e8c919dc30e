"""The report schedule's HTML forms, in the admin and on the project manager's pages, and the
"Send a test now" both offer. Validation is the model's (``ReportSchedule.clean``, run again by
``services.save_schedule``), as for the API: these forms only shape the fields."""

import re

from django import forms
from django.contrib import messages
from django.utils import timezone

from accounts.models import Environment

from . import services
from .catalogue import ATTACHMENTS, CREDIT_USAGE_EXPORT
from .models import MAX_RECIPIENTS, ReportSchedule


class ReportScheduleForm(forms.ModelForm):
    """Recipients as a text box, reports as check boxes; everything else is validated by the
    model (``ReportSchedule.clean``), whose errors show next to their fields."""

    recipients = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=f"Email addresses, one per line or separated by commas; members or not "
        f"(at most {MAX_RECIPIENTS}). Case does not matter; duplicates are removed.",
    )
    attached_reports = forms.MultipleChoiceField(
        label="CSV reports to attach",
        choices=ATTACHMENTS,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Each exactly as its export endpoint returns it for the same period and scope.",
    )
    owner = None  # the person adding the schedule (the admin gives forms no request)

    class Meta:
        model = ReportSchedule
        fields = (
            "subscription",
            "name",
            "enabled",
            "frequency",
            "weekday",
            "send_time",
            "scope",
            "environment",
            "attached_reports",
            "recipients",
        )

    @classmethod
    def for_owner(cls, owner):
        return type(cls.__name__, (cls,), {"owner": owner})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["recipients"] = "\n".join(self.instance.recipients)

    def clean_recipients(self) -> list[str]:
        return [part for part in re.split(r"[\s,;]+", self.cleaned_data["recipients"]) if part]

    def clean(self):
        if not self.instance.created_by_id and self.owner is not None:
            self.instance.created_by = self.owner  # validation checks what the owner may see
        return super().clean()


class InManagedEnvironment:
    """A project manager's form (schedules, alert rules): ``environment`` offers the
    environments they manage; a new object belongs to the chosen environment's subscription,
    and an existing one never moves to another."""

    def offer_managed_environments(self, manager) -> None:
        environment = self.fields["environment"]
        environment.required = True
        environment.empty_label = None
        environment.queryset = (
            Environment.objects.managed_by(manager)
            .select_related("project__subscription")
            .order_by("project__subscription__name", "project__name", "name")
        )
        environment.help_text = "One of the environments you manage."

    def clean(self):
        environment = self.cleaned_data.get("environment")
        if environment is not None and not self.instance.pk:
            self.instance.subscription = environment.project.subscription
        elif environment is not None and (
            environment.project.subscription_id != self.instance.subscription_id
        ):
            self.add_error("environment", "It cannot move to another subscription.")
        return super().clean()


class EnvironmentScheduleForm(InManagedEnvironment, ReportScheduleForm):
    """A project manager's schedule: one of the environments they manage, whose subscription
    it reports in; only the credit usage export can be attached (``ReportSchedule.clean``)."""

    attached_reports = forms.MultipleChoiceField(
        label="Attach the credit usage CSV",
        choices=[choice for choice in ATTACHMENTS if choice[0] == CREDIT_USAGE_EXPORT],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Monthly reports only: everyone's usage in the environment that period.",
    )

    class Meta(ReportScheduleForm.Meta):
        fields = (
            "name",
            "enabled",
            "frequency",
            "weekday",
            "send_time",
            "environment",
            "attached_reports",
            "recipients",
        )
        widgets = {"send_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M")}

    def __init__(self, *args, manager, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = manager
        self.instance.scope = ReportSchedule.Scope.ENVIRONMENT
        self.offer_managed_environments(manager)


def send_test_now(schedule: ReportSchedule, person) -> tuple[int, str]:
    """Email ``person`` the report ``schedule`` would send now, marked as a test; the message
    level and text to show them. The admin's action and button and the manager's page say the
    same."""
    try:
        period = services.send_test_report(schedule=schedule, to=person.email, now=timezone.now())
    except services.OwnerCannotSee as error:
        return messages.ERROR, f"“{schedule}”: {error.message}"
    except OSError as error:
        return messages.ERROR, f"“{schedule}”: the test could not be sent ({error})."
    return messages.SUCCESS, f"Sent a test of “{schedule}” ({period.label}) to {person.email}."
