"""A project manager's alert rules on their own pages (``/usage/alerts/``): create, edit,
pause and delete rules on the environments they manage, which email people of the environment
when its credits this period cross a threshold.

The same rules as the API and the admin: rules are read through the scoping layer
(``AlertRule.objects.visible_to``: a manager sees the rules they own on environments they
still manage), validated by the model and saved by ``credits.alert_rules.save_rule``.
"""

from credits import alert_rules
from credits.models import AlertRule

from .alert_rule_forms import EnvironmentAlertRuleForm
from .manager_pages import ManagerPages

PAGES = ManagerPages(
    nav="alerts",
    url_name="usage-alert",
    object_name="rule",
    templates="reports/alert_rule",
    model=AlertRule,
    only={"target": AlertRule.Target.ENVIRONMENT},
    form_class=EnvironmentAlertRuleForm,
    save=alert_rules.save_rule,
    delete=alert_rules.delete_rule,
    list_title="Alerts",
    delete_consequence="Its recipients get no more alerts from it.",
)
