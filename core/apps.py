from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares and no app owns; it imports none of them."""

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (register the metrics settings' system checks)
