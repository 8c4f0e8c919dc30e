from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits"

    def ready(self):
        from accounts.signals import api_key_revoked

        from . import webhooks

        api_key_revoked.connect(webhooks.publish_api_key_revoked, dispatch_uid="credits.webhooks")
