"""A project manager's alert rules on their own pages (``/usage/alerts/``): create, edit,
pause and delete rules on the environments they manage, which email people of the environment
when its credits this period cross a threshold.

The same rules as the API and the admin: rules are read through the scoping layer
(``AlertRule.objects.visible_to``: a manager sees the rules they own on environments they
still manage), validated by the model and saved by ``credits.alert_rules.save_rule``. Someone
who manages no environment gets a 403; a rule out of reach is a 404.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from credits import alert_rules
from credits.models import AlertRule

from .alert_rule_forms import EnvironmentAlertRuleForm
from .views import LOGIN_URL, manages_environments


def _forbidden(request):
    return render(request, "reports/alert_rules.html", {"nav": "alerts"}, status=403)


def _rules(request):
    return (
        AlertRule.objects.visible_to(request.user)
        .filter(target=AlertRule.Target.ENVIRONMENT)
        .select_related("subscription", "environment__project")
    )


def _rule(request, rule_id: int) -> AlertRule:
    rule = _rules(request).filter(pk=rule_id).first()
    if rule is None:
        raise Http404("No such alert rule among yours.")
    return rule


def _context(**extra) -> dict:
    return {"nav": "alerts", "manages_environments": True, **extra}


@login_required(login_url=LOGIN_URL)
def rule_list(request):
    if not manages_environments(request.user):
        return _forbidden(request)
    rules = _rules(request).order_by("subscription__name", "name", "pk")
    return render(request, "reports/alert_rules.html", _context(rules=rules))


@login_required(login_url=LOGIN_URL)
def rule_form(request, rule_id: int | None = None):
    """Create (no id) or edit a rule; pausing is unticking "enabled" (or the Pause button)."""
    if not manages_environments(request.user):
        return _forbidden(request)
    rule = AlertRule() if rule_id is None else _rule(request, rule_id)
    form = EnvironmentAlertRuleForm(request.POST or None, instance=rule, manager=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            saved = alert_rules.save_rule(rule=form.save(commit=False), actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Saved “{saved}”.")
            return redirect("usage-alert", rule_id=saved.pk)
    return render(request, "reports/alert_rule_form.html", _context(form=form, rule=rule))


@require_POST
@login_required(login_url=LOGIN_URL)
def rule_pause(request, rule_id: int):
    """Pause a rule, or resume a paused one."""
    rule = _rule(request, rule_id)
    rule.enabled = not rule.enabled
    try:
        alert_rules.save_rule(rule=rule, actor=request.user)
    except ValidationError as error:  # say, the environment's people changed: edit it first
        messages.error(request, f"“{rule}”: {' '.join(error.messages)}")
    else:
        messages.success(request, f"{'Resumed' if rule.enabled else 'Paused'} “{rule}”.")
    return redirect("usage-alert", rule_id=rule.pk)


@login_required(login_url=LOGIN_URL)
def rule_delete(request, rule_id: int):
    rule = _rule(request, rule_id)
    if request.method == "POST":
        alert_rules.delete_rule(rule=rule, actor=request.user)
        messages.success(request, f"Deleted “{rule}”.")
        return redirect("usage-alerts")
    return render(request, "reports/alert_rule_delete.html", _context(rule=rule))
