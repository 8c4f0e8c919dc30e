"""Report schedules in the Django admin, with their delivery log, unsubscribes and the actions
"send a test now" and "resend failed". Scoped like every admin (``ScopedAdminMixin``); sending
goes through ``reports.services``."""

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import ngettext

from accounts.admin_scoping import ScopedAdminMixin, ScopedModelAdmin, ScopedRelatedFilter
from core.admin import ReadOnlyAdminMixin
from core.display import format_moment

from . import services, tasks
from .models import Delivery, ReportSchedule, Unsubscribe
from .schedule_forms import ReportScheduleForm, send_test_now
from .schedules import next_due

RECENT_DELIVERIES = 10


class UnsubscribeInline(ScopedAdminMixin, ReadOnlyAdminMixin, admin.TabularInline):
    model = Unsubscribe
    fields = ("email", "created_at")
    readonly_fields = fields
    extra = 0
    verbose_name = "unsubscribed recipient"
    verbose_name_plural = "unsubscribed recipients (their reports are no longer sent)"


@admin.register(ReportSchedule)
class ReportScheduleAdmin(ScopedModelAdmin):
    form = ReportScheduleForm
    list_display = (
        "name",
        "subscription",
        "timing",
        "scope_description",
        "recipient_count",
        "enabled",
        "failed_deliveries",
    )
    list_filter = ("enabled", "frequency", ("subscription", ScopedRelatedFilter))
    list_select_related = ("subscription", "environment__project")
    search_fields = ("name", "subscription__name")
    ordering = ("subscription__name", "name")
    fixed_after_creation = ("subscription",)
    readonly_fields = ("created_by", "next_report", "delivery_log", "created_at")
    inlines = (UnsubscribeInline,)
    actions = ("send_test_now", "resend_failed", "take_ownership")
    fieldsets = (
        (None, {"fields": ("subscription", "name", "enabled")}),
        (
            "When",
            {
                "fields": ("frequency", "weekday", "send_time"),
                "description": "In the subscription's time zone. Weekly reports cover the "
                "previous Monday to Sunday; monthly reports the billing period that just ended.",
            },
        ),
        ("What", {"fields": ("scope", "environment", "attached_reports")}),
        ("Who", {"fields": ("recipients",)}),
    )
    record_fieldset = (
        "Deliveries",
        {"fields": ("created_by", "next_report", "delivery_log", "created_at")},
    )

    def get_fieldsets(self, request, obj=None):
        return (*self.fieldsets, self.record_fieldset) if obj else self.fieldsets

    def get_urls(self):
        send_test = path(
            "<path:object_id>/send-test/",
            self.admin_site.admin_view(self.send_test_view),
            name="reports_reportschedule_send_test",
        )
        return [send_test, *super().get_urls()]

    def send_test_view(self, request, object_id):
        """The change page's "Send a test now" button (a POST): the action, for one schedule."""
        schedule = self.get_object(request, unquote(object_id))
        if schedule is None or not self.has_change_permission(request, schedule):
            raise Http404("No such report schedule among yours.")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        level, message = send_test_now(schedule, request.user)
        self.message_user(request, message, level)
        return redirect("admin:reports_reportschedule_change", quote(schedule.pk))

    def get_form(self, request, obj=None, **kwargs):
        return super().get_form(request, obj, **kwargs).for_owner(request.user)

    def get_queryset(self, request):
        failed = Count("deliveries", filter=Q(deliveries__status=Delivery.Status.FAILED))
        return super().get_queryset(request).annotate(failed_count=failed)

    def get_deleted_objects(self, objs, request):
        """A schedule's delivery log goes with it, although nobody deletes log rows by hand."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(Delivery._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def save_model(self, request, obj, form, change):
        if not change and not obj.created_by_id:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # --- Columns and read-only fields -------------------------------------------------------

    @admin.display(description="when")
    def timing(self, obj) -> str:
        """The local send time, its zone named: ``Mondays at 08:00 (Europe/Prague)``."""
        at = f"{obj.send_time:%H:%M} ({obj.subscription.timezone})"
        if obj.frequency == ReportSchedule.Frequency.MONTHLY:
            return f"Monthly, the 1st at {at}"
        return f"{obj.get_weekday_display()}s at {at}"

    @admin.display(description="scope")
    def scope_description(self, obj) -> str:
        return obj.scope_label

    @admin.display(description="recipients")
    def recipient_count(self, obj) -> int:
        return len(obj.recipients)

    @admin.display(description="failed", ordering="failed_count")
    def failed_deliveries(self, obj):
        if not obj.failed_count:
            return 0
        return format_html('<a href="{}">{}</a>', _log_url(obj, status="failed"), obj.failed_count)

    @admin.display(description="next report")
    def next_report(self, obj) -> str:
        if not obj.enabled:
            return "Paused"
        zone = obj.subscription.zone
        when = next_due(
            frequency=obj.frequency,
            weekday=obj.weekday,
            send_time=obj.send_time,
            zone=zone,
            now=timezone.now(),
        ).astimezone(zone)
        return f"{when:%A} {when.day} {when:%B %Y, %H:%M} ({zone.key})"

    @admin.display(description="delivery log")
    def delivery_log(self, obj):
        recent = obj.deliveries.order_by("-period_start", "recipient")[:RECENT_DELIVERIES]
        rows = format_html_join(
            "",
            "<tr><td>{} to {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    d.period_start,
                    d.period_end,
                    d.recipient,
                    d.get_status_display(),
                    d.attempts,
                    d.last_error or "",
                )
                for d in recent
            ),
        )
        if not rows:
            return "Nothing sent yet."
        return format_html(
            "<table><thead><tr><th>Period</th><th>Recipient</th><th>Status</th><th>Attempts</th>"
            "<th>Last error</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">The whole delivery log of this schedule</a></p>',
            rows,
            _log_url(obj),
        )

    # --- Actions ------------------------------------------------------------------------------

    @admin.action(description="Send a test now (to my own address)", permissions=["change"])
    def send_test_now(self, request, queryset):
        for schedule in queryset.select_related("subscription", "environment__project"):
            level, message = send_test_now(schedule, request.user)
            self.message_user(request, message, level)

    @admin.action(description="Resend failed deliveries", permissions=["change"])
    def resend_failed(self, request, queryset):
        count = tasks.resend_failed(
            deliveries=Delivery.objects.administered_by(request.user).filter(schedule__in=queryset),
            now=timezone.now(),
        )
        self.message_user(
            request,
            ngettext("Queued %d delivery again.", "Queued %d deliveries again.", count) % count,
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.action(description="Make me the owner of the selected schedules", permissions=["change"])
    def take_ownership(self, request, queryset):
        """For a schedule whose owner left or lost access: reports are generated with the
        owner's visibility, so they then show what the new owner may see."""
        for schedule in queryset.select_related("subscription", "environment__project"):
            schedule.created_by = request.user
            try:
                services.save_schedule(schedule=schedule, actor=request.user)
            except ValidationError as error:
                problem = " ".join(error.messages)
                self.message_user(request, f"“{schedule}”: {problem}", messages.ERROR)
            else:
                self.message_user(request, f"You own “{schedule}” now.", messages.SUCCESS)


def _log_url(schedule, **filters) -> str:
    query = {"schedule__id__exact": schedule.pk}
    if "status" in filters:
        query["status__exact"] = filters["status"]
    return f"{reverse('admin:reports_delivery_changelist')}?{urlencode(query)}"


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, ScopedModelAdmin):
    """The delivery log: every report owed to every recipient, and what became of it."""

    wide_changelist = True
    list_display = (
        "schedule",
        "period",
        "recipient",
        "status",
        "attempts",
        "sent",
        "error",
    )
    list_filter = ("status", ("schedule", ScopedRelatedFilter))
    list_select_related = ("schedule__subscription",)
    search_fields = ("recipient", "schedule__name")
    ordering = ("-period_start", "schedule__name", "recipient")
    date_hierarchy = "period_start"
    actions = ("resend",)

    @admin.display(description="period", ordering="period_start")
    def period(self, delivery):
        first, last = delivery.period_start, delivery.period_end
        return f"{first:%-d %b %Y}" if first == last else f"{first:%-d %b} to {last:%-d %b %Y}"

    @admin.display(description="sent", ordering="sent_at")
    def sent(self, delivery):
        """In the schedule's subscription's time zone, named."""
        if delivery.sent_at is None:
            return "—"
        return format_moment(delivery.sent_at, delivery.schedule.subscription.zone)

    @admin.display(description="last error")
    def error(self, delivery):
        """The first line, shortened: the whole error is on the detail page."""
        first_line = delivery.last_error.strip().splitlines()[0] if delivery.last_error else ""
        return first_line if len(first_line) <= 80 else first_line[:79] + "…"

    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm("reports.change_reportschedule")

    @admin.action(description="Resend the selected failed deliveries", permissions=["resend"])
    def resend(self, request, queryset):
        count = tasks.resend_failed(deliveries=queryset, now=timezone.now())
        self.message_user(
            request,
            ngettext("Queued %d delivery again.", "Queued %d deliveries again.", count) % count,
            messages.SUCCESS if count else messages.WARNING,
        )
