from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"

    def ready(self):
        from credits.signals import demo_seeded

        from . import tasks  # noqa: F401  (registered in every process: queued by name)
        from .demo import seed_report_schedules

        demo_seeded.connect(seed_report_schedules, dispatch_uid="reports.demo")
