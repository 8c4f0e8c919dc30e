"""``{% usage_menu %}``: the Usage menu (``reports.usage_menu``) in a page's header."""

from django import template

from ..usage_menu import usage_menu as menu_entries

register = template.Library()


@register.inclusion_tag("reports/partials/usage_menu.html", takes_context=True)
def usage_menu(context, menu_class: str = "usage-menu"):
    user = context.get("user")
    entries = menu_entries(user) if user is not None else []
    return {"entries": entries, "menu_class": menu_class}
