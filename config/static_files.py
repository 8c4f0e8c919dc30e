"""Refuse to serve pages whose static files were never collected."""

from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.exceptions import ImproperlyConfigured


def require_collected_static_files() -> None:
    """With hashed static files (``DEBUG=false``) every page links its CSS and scripts through
    the manifest that ``collectstatic`` writes; without it each page is a 500 ("Missing
    staticfiles manifest entry"). The web server's start-up says so once instead, naming the
    step that was missed.

    A start-up check rather than a system check: ``manage.py check --deploy`` is meant to pass
    on a build machine before anything was collected.
    """
    if not isinstance(staticfiles_storage, ManifestFilesMixin):
        return
    if staticfiles_storage.exists(staticfiles_storage.manifest_name):
        return
    raise ImproperlyConfigured(
        f"The static files have not been collected ({staticfiles_storage.manifest_name} is "
        f"missing from {staticfiles_storage.location}), so every page would fail. Run "
        "`python manage.py collectstatic --noinput` (the Procfile's release step does) before "
        "starting the web server."
    )
