"""The pages a project manager has for a kind of thing they own on the environments they
manage (report schedules, alert rules): a list, a form that adds or edits, pause and delete.

One description (``ManagerPages``) gives all of them, so that every kind follows the same rules:
objects are read through the scoping layer, saved and deleted by the kind's service; someone who
manages no environment gets a 403 and an object out of reach is a 404.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from .views import LOGIN_URL, manages_environments

# Rows on a page of a manager's list: a manager of many environments may own many.
PER_PAGE = 25


@dataclass(frozen=True)
class ManagerPages:
    """``model`` and ``only``: the manager's objects shown (those on an environment).
    ``nav``: the top bar's tab and the URL's folder, ``usage/<nav>/``. ``url_name``: the object
    page's, from which ``<url_name>s``, ``-new`` and ``-<action>`` follow. ``object_name``: the
    URL's id (``<object_name>_id``) and the list rows' ``data-`` attribute. ``templates``: the
    prefix of the list (``<prefix>s.html``) and form (``<prefix>_form.html``) pages, which
    extend ``manager_list.html`` and ``manager_form.html``. ``save`` and ``delete``: the
    services, called with the object as ``object_name`` and the person as ``actor``."""

    nav: str
    url_name: str
    object_name: str
    templates: str
    model: type[models.Model]
    only: dict
    form_class: type
    save: Callable[..., models.Model]
    delete: Callable[..., None]
    list_title: str
    delete_consequence: str

    def visible(self, person) -> models.QuerySet:
        return (
            self.model.objects.visible_to(person)
            .filter(**self.only)
            .select_related("subscription", "environment__project")
        )

    def get(self, request, object_id: int) -> models.Model:
        found = self.visible(request.user).filter(pk=object_id).first()
        if found is None:
            raise Http404(f"No such {self.object_name} among yours.")
        return found

    def _context(self, manages_environments=True, **extra) -> dict:
        return {
            "nav": self.nav,
            "manages_environments": manages_environments,
            "url_name": self.url_name,
            "object_name": self.object_name,
            "list_title": self.list_title,
            **extra,
        }

    def _forbidden(self, request):
        context = self._context(manages_environments=False)
        return render(request, f"{self.templates}s.html", context, status=403)

    def _save(self, found, request) -> models.Model:
        return self.save(**{self.object_name: found, "actor": request.user})

    def list_page(self, request):
        if not manages_environments(request.user):
            return self._forbidden(request)
        found = self.visible(request.user).order_by("subscription__name", "name", "pk")
        page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
        context = self._context(
            objects=page,
            page_links=page.paginator.get_elided_page_range(page.number, on_each_side=2),
        )
        return render(request, f"{self.templates}s.html", context)

    def form_page(self, request, object_id: int | None = None):
        """Add (no id) or edit; pausing is unticking "enabled" (or the page's Pause button)."""
        if not manages_environments(request.user):
            return self._forbidden(request)
        found = self.model() if object_id is None else self.get(request, object_id)
        form = self.form_class(request.POST or None, instance=found, manager=request.user)
        if request.method == "POST" and form.is_valid():
            try:
                saved = self._save(form.save(commit=False), request)
            except ValidationError as error:
                form.add_error(None, error)
            else:
                messages.success(request, f"Saved “{saved}”.")
                return redirect(self.url_name, saved.pk)
        context = self._context(form=form, object=found)
        return render(request, f"{self.templates}_form.html", context)

    def pause(self, request, object_id: int):
        """Pause, or resume what is paused."""
        found = self.get(request, object_id)
        found.enabled = not found.enabled
        try:
            self._save(found, request)
        except ValidationError as error:  # say, the environment's people changed: edit it first
            messages.error(request, f"“{found}”: {' '.join(error.messages)}")
        else:
            messages.success(request, f"{'Resumed' if found.enabled else 'Paused'} “{found}”.")
        return redirect(self.url_name, found.pk)

    def delete_page(self, request, object_id: int):
        found = self.get(request, object_id)
        if request.method == "POST":
            self.delete(**{self.object_name: found, "actor": request.user})
            messages.success(request, f"Deleted “{found}”.")
            return redirect(f"{self.url_name}s")
        context = self._context(
            object=found,
            list_url=reverse(f"{self.url_name}s"),
            object_url=reverse(self.url_name, args=[found.pk]),
            consequence=self.delete_consequence,
        )
        return render(request, "reports/confirm_delete.html", context)

    def urls(self, **more_actions) -> list:
        """The pages' URL patterns; ``more_actions`` are further POST views by action name."""
        page = login_required(login_url=LOGIN_URL)
        folder, object_id = f"usage/{self.nav}/", f"<int:{self.object_name}_id>"
        actions = {
            "pause": require_POST(page(self._by_id(self.pause))),
            "delete": page(self._by_id(self.delete_page)),
            **more_actions,
        }
        return [
            path(folder, page(self.list_page), name=f"{self.url_name}s"),
            path(f"{folder}new/", page(self.form_page), name=f"{self.url_name}-new"),
            path(f"{folder}{object_id}/", page(self._by_id(self.form_page)), name=self.url_name),
            *(
                path(f"{folder}{object_id}/{action}/", view, name=f"{self.url_name}-{action}")
                for action, view in actions.items()
            ),
        ]

    def _by_id(self, view):
        """Takes the URL's ``<object_name>_id`` as the view's object id."""
        keyword = f"{self.object_name}_id"

        def with_id(request, **kwargs):
            return view(request, kwargs[keyword])

        return with_id
