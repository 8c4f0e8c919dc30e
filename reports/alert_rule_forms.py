"""A project manager's alert rule as an HTML form (``/usage/alerts/``): an environment they
manage, thresholds, an optional budget, and addresses among the environment's people.
Validation is the model's (``AlertRule.clean``, notification only), as for the API."""

import re

from django import forms

from credits.models import AlertRule

from .schedule_forms import InManagedEnvironment


class EnvironmentAlertRuleForm(InManagedEnvironment, forms.ModelForm):
    """The rule belongs to whoever makes it here (``owner``): it emails, and nothing else."""

    email_addresses = forms.CharField(
        label="Email",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="People of the environment (its project managers and members, and the "
        "subscription's admins), one per line or separated by commas.",
    )

    class Meta:
        model = AlertRule
        fields = ("name", "environment", "thresholds", "budget", "email_addresses", "enabled")
        labels = {"thresholds": "Thresholds (%)", "budget": "Budget (credits per period)"}
        help_texts = {
            "thresholds": "Percentages of the budget, comma-separated, e.g. 50, 90, 100.",
            "budget": "Leave empty to use the subscription's base allocation.",
        }

    def __init__(self, *args, manager, **kwargs):
        super().__init__(*args, **kwargs)
        rule = self.instance
        if rule.pk is None:
            rule.owner = manager
            rule.target = AlertRule.Target.ENVIRONMENT
            rule.email_admins = False
        # As people type them: one address a line (a new rule's: the manager's own), and
        # "80, 100" rather than the stored "80.00,100.00".
        self.initial["email_addresses"] = "\n".join(rule.email_addresses or [manager.email])
        if rule.thresholds:
            self.initial["thresholds"] = ", ".join(
                f"{threshold.normalize():f}" for threshold in rule.thresholds
            )
        self.offer_managed_environments(manager)

    def clean_email_addresses(self) -> list[str]:
        return [part for part in re.split(r"[\s,;]+", self.cleaned_data["email_addresses"]) if part]
