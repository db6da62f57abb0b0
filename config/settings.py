"""FaceClean settings, all from environment variables.

Embedded default (nothing set): SQLite under var/ and Celery over kombu's filesystem
transport, so one machine needs no database or broker server. DATABASE_URL and
CELERY_BROKER_URL switch to Postgres and Redis. DEBUG is off unless asked for; with DEBUG
off a SECRET_KEY must be given and the HTTPS hardening below is on.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-development-key-only-for-debug-mode"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Where datasets may be imported from (browser imports are confined to it), and where
# thumbnails, exports and ML runs are written.
VAR_DIR = Path(os.environ.get("FACECLEAN_VAR_DIR", BASE_DIR / "var"))
DATA_ROOT = Path(os.environ.get("FACECLEAN_DATA_ROOT", VAR_DIR / "data")).resolve()
MEDIA_ROOT = Path(os.environ.get("FACECLEAN_MEDIA_ROOT", VAR_DIR / "media")).resolve()
THUMBNAIL_ROOT = MEDIA_ROOT / "thumbnails"
EXPORT_ROOT = MEDIA_ROOT / "exports"
RUNS_ROOT = MEDIA_ROOT / "runs"
# The most pixels the web process decodes for one thumbnail or image conversion; a larger image
# gets a placeholder. One bound with --verify-images and training: defined (with its environment
# override IMAGE_MAX_PIXELS) in ml.io.budget, since ml never imports Django.
from ml.api import IMAGE_MAX_PIXELS  # noqa: E402

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "reviewapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.security_headers.ContentSecurityPolicyMiddleware",
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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web requests and the worker write concurrently: wait for the lock instead of failing.
    # A deferred transaction that reads first and writes later cannot wait: when another
    # connection wrote in between, SQLite answers "database is locked" at once, whatever the
    # timeout. A round's publish (20,000 flags) beside its own heartbeat thread failed that way;
    # IMMEDIATE takes the write lock at BEGIN, where the timeout applies, and WAL lets readers
    # (the web pages) go on while a round writes (tests/reviewapp/test_sqlite_publish.py).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cached page counts and chart bytes. With several web processes (a cluster) point
# CACHE_URL at Redis so that they share one cache; the default is per process.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL.startswith(("redis://", "rediss://"))
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Failed sign-ins (reviewapp.signin_throttle): past either limit within the window, sign-in is
# refused (429) for that account or address until the window passes, the right password too.
LOGIN_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))  # per account
LOGIN_ADDRESS_FAILURE_LIMIT = int(os.environ.get("LOGIN_ADDRESS_FAILURE_LIMIT", "20"))  # per client address
LOGIN_FAILURE_WINDOW_SECONDS = int(os.environ.get("LOGIN_FAILURE_WINDOW_SECONDS", "900"))
# Wrong API tokens per client address in the same window (reviewapp.api.authentication).
API_TOKEN_FAILURE_LIMIT = int(os.environ.get("API_TOKEN_FAILURE_LIMIT", "20"))
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# Request size limits: the app takes no uploads of images, only forms and JSON.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 5000

# HTTPS hardening, on whenever DEBUG is off; each can be turned off explicitly (e.g. behind
# a proxy that already redirects), at the cost of `check --deploy` warnings.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL") else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "reviewapp.api.authentication.ThrottledTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["reviewapp.api.parsers.BoundedJSONParser", "rest_framework.parsers.FormParser"],
    # Anonymous requests strictly; signed-in users generously (a reviewer's browser deciding
    # flags is far below it; a runaway script is not). Wrong tokens are counted apart, above.
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle",
                                 "rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": os.environ.get("API_THROTTLE_ANON", "30/minute"),
                               "user": os.environ.get("API_THROTTLE_USER", "6000/minute")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "FaceClean API", "VERSION": "1.0.0", "SERVE_INCLUDE_SCHEMA": False}

# Celery. The embedded broker keeps its messages in files under var/broker.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Exchange tables; kombu's default is ./control under the working directory.
        "control_folder": str(_broker_dir / "control"),
    }
else:
    # A round can train for hours: a message unacknowledged for less than this is not
    # handed to a second worker (the Round row's claim guards against it anyway).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 12 * 3600}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Rounds (training, GPU work) go to their own queue so that GPU hosts can serve only it.
CELERY_TASK_ROUTES = {"reviewapp.tasks_rounds.*": {"queue": "rounds"}}
# A running round whose heartbeat is older than this may be claimed by another worker.
ROUND_STALE_SECONDS = int(os.environ.get("ROUND_STALE_SECONDS", "120"))
# A batch of flags a reviewer took is theirs alone for this long, then free for others.
FLAG_CLAIM_SECONDS = int(os.environ.get("FLAG_CLAIM_SECONDS", "1800"))
# A background job (import, export) whose heartbeat is older than this is reported dead.
JOB_STALE_SECONDS = int(os.environ.get("JOB_STALE_SECONDS", "60"))
# Every worker sweeps this often (reviewapp.tasks): dead workers' rounds and jobs are taken over
# or failed, and rows queued while the broker was down are sent.
RECOVERY_SWEEP_SECONDS = float(os.environ.get("RECOVERY_SWEEP_SECONDS", "30"))
# A round that killed its worker this many times is failed instead of retried.
ROUND_MAX_ATTEMPTS = int(os.environ.get("ROUND_MAX_ATTEMPTS", "3"))
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
