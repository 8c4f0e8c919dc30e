from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and access"

    def ready(self) -> None:
        from . import checks, schema  # noqa: F401  (register the system check, OpenAPI extension)
