"""Django settings, read from the environment.

Two modes share this one module:

- embedded (the default, what `make run` uses): SQLite under `var/`, no Redis, a per-install
  secret key file, Celery on kombu's filesystem transport;
- production (`ANNOTATOR_MODE=production`, what docker-compose.yml uses): every secret comes
  from the environment and nothing insecure has a default.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false.")


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    return [part.strip() for part in value.split(",") if part.strip()]


MODE = env_str("ANNOTATOR_MODE", "embedded")
if MODE not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"ANNOTATOR_MODE={MODE!r}: use 'embedded' or 'production'.")
PRODUCTION = MODE == "production"

VAR_DIR = Path(env_str("ANNOTATOR_VAR_DIR", str(BASE_DIR / "var")))


def _embedded_secret_key() -> str:
    """Read the per-install key, creating it (owner read/write only) on first use."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production settings have no default key: "
            "set SECRET_KEY to a long random string (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'`)."
        )
    SECRET_KEY = _embedded_secret_key()

DEBUG = env_bool("DEBUG", False)

if PRODUCTION:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS is not set (comma-separated host names).")
else:
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "labelling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "annotator.urls"
WSGI_APPLICATION = "annotator.wsgi.application"

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# Database ---------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'annotator.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] and _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock when a
    # transaction starts, so two writers queue on the busy timeout instead of failing with
    # "database is locked" when one upgrades a read lock.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
        "PRAGMA busy_timeout=30000",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Connections persist like PostgreSQL's (DB_CONN_MAX_AGE): opening one per request, with
    # Django's function registrations and the PRAGMAs above, took ~5 ms of CPU per request.
else:
    # Django's backend with a health check that costs a round trip only when the socket says
    # something happened (annotator/postgresql/base.py).
    _db["ENGINE"] = "annotator.postgresql"
    _db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Auth -------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Every password check counts failures per account and address (labelling/auth.py).
AUTHENTICATION_BACKENDS = ["labelling.auth.RateLimitedModelBackend"]
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Internationalisation ---------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("pt-br", "Português (Brasil)")]
LOCALE_PATHS = [BASE_DIR / "labelling" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files -----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Embedded mode serves straight from the app folders, so a fresh clone needs no collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION

# Request limits ---------------------------------------------------------------------------------
# Imports stream through their own limit (ANNOTATOR_IMPORT_MAX_BYTES); this caps form posts.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
ANNOTATOR_IMPORT_MAX_BYTES = env_int("ANNOTATOR_IMPORT_MAX_BYTES", 100 * 1024 * 1024)
ANNOTATOR_IMPORT_MAX_MESSAGES = env_int("ANNOTATOR_IMPORT_MAX_MESSAGES", 200)
ANNOTATOR_IMPORT_MAX_MESSAGE_CHARS = env_int("ANNOTATOR_IMPORT_MAX_MESSAGE_CHARS", 100_000)
ANNOTATOR_IMPORT_MAX_ERRORS = env_int("ANNOTATOR_IMPORT_MAX_ERRORS", 100)

# Learning ---------------------------------------------------------------------------------------
# "minilm" (the packaged all-MiniLM-L6-v2 at the fastest precision this CPU has), "minilm-int8",
# "minilm-fp32", "hashing" (a fast stand-in for tests), or the path of any sentence-transformers
# model saved to disk.
ANNOTATOR_ENCODER = env_str("ANNOTATOR_ENCODER", "minilm")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from packages, never from a hub
# How many directions of the items' vectors the classifiers and the queue read (the strongest,
# found per project; 0: all of them). See labelling/learning/classifiers.FEATURE_DIMENSIONS.
ANNOTATOR_FEATURE_DIMENSIONS = env_int("ANNOTATOR_FEATURE_DIMENSIONS", 128)
if ANNOTATOR_FEATURE_DIMENSIONS < 0:
    raise ImproperlyConfigured("ANNOTATOR_FEATURE_DIMENSIONS must be 0 (all) or more.")

# Security headers -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# REST API ---------------------------------------------------------------------------------------
# Requests per API token; 36000/hour is a rater script at 10 requests a second, all day.
ANNOTATOR_TOKEN_RATE = env_str("ANNOTATOR_TOKEN_RATE", "36000/hour")
if not re.fullmatch(r"[1-9]\d*/(s|sec|m|min|h|hour|d|day)", ANNOTATOR_TOKEN_RATE):
    raise ImproperlyConfigured(
        f"ANNOTATOR_TOKEN_RATE={ANNOTATOR_TOKEN_RATE!r}: use <requests>/<s|min|hour|day>."
    )
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "labelling.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "labelling.api.auth.TokenWriteAllowed",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "labelling.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `format` is ours (import and dataset formats), not a renderer switch; the OpenAPI schema
    # answers JSON to `Accept: application/json`.
    "URL_FORMAT_OVERRIDE": None,
    # Per API token, for fairness between pipelines (a fixed window; see api/throttles.py).
    "DEFAULT_THROTTLE_CLASSES": ["labelling.api.throttles.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": ANNOTATOR_TOKEN_RATE},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "annotator API",
    "DESCRIPTION": "Label LLM conversations: projects, schemas, items, queues and datasets.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets shared by several components get one name each.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "labelling.models.RunStatus",
        "ItemStatusEnum": "labelling.models.ItemStatus",
    },
    # labelling/converters.py: ids of at most 18 digits; longer ones are a 404.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}
    },
}

# Celery -----------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        # Well above the longest task, so a slow training run is not redelivered while running.
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600),
    }
else:
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }

# Cache: per-token request counts and the queue's shared progress figures. A Redis URL makes them
# one count for every web process (production); otherwise each process keeps its own.
CACHE_URL = env_str("CACHE_URL")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Logging ----------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
