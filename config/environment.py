"""Strict environment parsing: a bad value stops start-up with a message that names it.

django-environ reads every variable (and ``<NAME>_FILE`` for secrets mounted as files, via
``FileAwareEnv``), but it reads any unknown word as ``False`` and lets ``int()`` fail with a
bare ``ValueError``. These overrides refuse both clearly.
"""

import ipaddress

import environ
from django.core.exceptions import ImproperlyConfigured
from environ.fileaware_mapping import FileAwareMapping

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class SecretFiles(FileAwareMapping):
    """``<NAME>_FILE`` support, without the trailing newline that secret files usually end with."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        return value.rstrip("\r\n") if self.env.get(f"{key}_FILE") else value


class StrictEnv(environ.FileAwareEnv):
    ENVIRON = SecretFiles()

    def bool(self, var, default=environ.Env.NOTSET):
        raw = self.str(var, default=None)
        if raw is None:
            if default is environ.Env.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable.")
            return default
        value = raw.strip().lower()
        if value not in TRUE | FALSE:
            raise ImproperlyConfigured(
                f"{var} must be true or false (or 1/0, yes/no, on/off), not {raw!r}."
            )
        return value in TRUE

    def int(self, var, default=environ.Env.NOTSET):
        raw = self.str(var, default=None)
        if raw is None:
            if default is environ.Env.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable.")
            return default
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be a whole number, not {raw!r}.") from None

    def networks(self, var, default=environ.Env.NOTSET) -> list[str]:
        """Comma-separated CIDRs (``127.0.0.0/8,10.0.0.0/8``), each checked now."""
        values = self.list(var, default=default)
        for value in values:
            try:
                ipaddress.ip_network(value.strip())
            except ValueError:
                raise ImproperlyConfigured(
                    f"{var} must list networks such as 127.0.0.0/8, not {value!r}."
                ) from None
        return [value.strip() for value in values]
