"""Django settings for StreamLimit.

Every setting an operator may change is an environment variable read once here,
typed and checked at start-up (see streamlimit/env.py); the README lists each
with its default.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

from heartbeat.edge.cors import parse_origins
from heartbeat.limiter.keys import MAX_ACTIVITY_SHARDS
from heartbeat.limiter.limits import parse_plan_limits
from heartbeat.limiter.tokens import TokenVerifier, load_jwks, parse_hs256_keys
from heartbeat.store.connection import RedisSettingsError, cache_config, parse_topology
from streamlimit.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_lower_choice,
    env_networks,
    env_parsed,
    env_str,
)
from streamlimit.logging import build_logging_config, configure_structlog
from streamlimit.media_types import STATIC_MEDIA_TYPES
from streamlimit.version import VERSION

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (SQLite file, generated secret key, collected static files): in
# a checkout, its var/ (git ignores it); in an installed package, whose code
# sits in site-packages, var/ in the working directory.
IS_CHECKOUT = (BASE_DIR / "manage.py").is_file()
VAR_DIR = Path(env_str("STREAMLIMIT_VAR_DIR", str((BASE_DIR if IS_CHECKOUT else Path.cwd()) / "var")))
# Collected static files. The image sets it outside VAR_DIR, so the runtime user
# can write its state without being able to change what the service serves.
STATIC_ROOT = Path(env_str("STREAMLIMIT_STATIC_ROOT", str(VAR_DIR / "static")))
# From pyproject.toml; shown by /healthz and the streamlimit_build_info metric.
STREAMLIMIT_VERSION = VERSION

# --- Service -----------------------------------------------------------------
PORT = env_int("PORT", 8080, minimum=1, maximum=65535)
# REDIS_URL, REDIS_SENTINELS (+ REDIS_SENTINEL_MASTER) or REDIS_CLUSTER_NODES:
# exactly one names the topology; see heartbeat/store/connection.py. Read
# below (REDIS_TOPOLOGY), after REDIS_SOCKET_TIMEOUT.
MAX_CONCURRENT_STREAMS = env_int("MAX_CONCURRENT_STREAMS", 3, minimum=1, maximum=1000)
HEARTBEAT_INTERVAL_SECONDS = env_int("HEARTBEAT_INTERVAL_SECONDS", 20, minimum=1, maximum=3600)
SESSION_TTL_SECONDS = env_int("SESSION_TTL_SECONDS", 40, minimum=1, maximum=86400)
EVICTION_COOLDOWN_SECONDS = env_int("EVICTION_COOLDOWN_SECONDS", 300, minimum=0, maximum=86400 * 7)
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "streamlimit")
STREAMLIMIT_FAIL_OPEN = env_bool("STREAMLIMIT_FAIL_OPEN", False)
# The demo player at /demo/ and its token endpoint, which signs a token for any
# account: for development only (`make run` turns it on), never in production.
STREAMLIMIT_DEMO = env_bool("STREAMLIMIT_DEMO", False)
# Sites whose pages may call the player paths from the browser (CORS); empty: same origin only.
PLAYER_ALLOWED_ORIGINS = env_parsed("PLAYER_ALLOWED_ORIGINS", "", parse_origins)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 1.0, minimum=0.01, maximum=60.0)
# A request body that has not fully arrived this long after its headers gets
# 408 and its connection closed (heartbeat/edge/body_deadline.py, gevent workers).
REQUEST_BODY_TIMEOUT_SECONDS = env_float("REQUEST_BODY_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=300.0)
# The player path's circuit breaker (heartbeat/store/breaker.py): after this many
# Redis failures in a row, heartbeats fail at once for REDIS_BREAKER_SECONDS
# (0: no breaker), then one trial call decides.
REDIS_BREAKER_FAILURES = env_int("REDIS_BREAKER_FAILURES", 3, minimum=1, maximum=1000)
REDIS_BREAKER_SECONDS = env_float("REDIS_BREAKER_SECONDS", 5.0, minimum=0.0, maximum=600.0)
# How often each process writes its heartbeats to the shared activity keys
# (dashboard lists and counts, metrics); see heartbeat/limiter/activity.py.
ACTIVITY_FLUSH_SECONDS = env_float("ACTIVITY_FLUSH_SECONDS", 1.0, minimum=0.05, maximum=10.0)
if ACTIVITY_FLUSH_SECONDS * 4 > SESSION_TTL_SECONDS:
    raise ImproperlyConfigured(
        f"ACTIVITY_FLUSH_SECONDS ({ACTIVITY_FLUSH_SECONDS}) must be at most a quarter of "
        f"SESSION_TTL_SECONDS ({SESSION_TTL_SECONDS}), or live sessions would drop off the dashboard"
    )

# --- Playback tokens, plans and the limit policy (see heartbeat/limiter/tokens.py) -----
# HS256 secrets as kid=secret pairs, and/or a JWKS file of public keys; none: tokens off.
PLAYBACK_TOKEN_KEYS = env_parsed("PLAYBACK_TOKEN_KEYS", "", parse_hs256_keys)
PLAYBACK_TOKEN_JWKS_FILE = env_str("PLAYBACK_TOKEN_JWKS_FILE", "").strip()
PLAYBACK_TOKEN_JWKS = env_parsed("PLAYBACK_TOKEN_JWKS_FILE", "", load_jwks)
PLAYBACK_TOKEN_ISSUER = env_str("PLAYBACK_TOKEN_ISSUER", "").strip()
PLAYBACK_TOKEN_AUDIENCE = env_str("PLAYBACK_TOKEN_AUDIENCE", "").strip()
PLAYBACK_TOKEN_LEEWAY_SECONDS = env_int("PLAYBACK_TOKEN_LEEWAY_SECONDS", 30, minimum=0, maximum=600)
# With keys configured, whether a player request must carry a token. false is
# for development and gradual roll-outs: a request without one is served as
# with tokens off, a request with one is verified (and may see its account's
# sessions). `make run` uses it for the demo; production keeps it true.
PLAYBACK_TOKENS_REQUIRED = env_bool("PLAYBACK_TOKENS_REQUIRED", True)
try:
    # Built once here too, so a kid given both as a secret and in the JWKS stops start-up.
    TokenVerifier(PLAYBACK_TOKEN_KEYS, PLAYBACK_TOKEN_JWKS)
except ValueError as _error:
    raise ImproperlyConfigured(f"PLAYBACK_TOKEN_JWKS_FILE: {_error}") from None
# How players prove who they are: "tokens" (the default; gunicorn refuses to
# start without keys unless DJANGO_DEBUG, see streamlimit/player_auth.py) or
# "anonymous": no proof, so anyone can stop anyone (a stop is only taken from
# the network that plays the session, see heartbeat/edge/client_network.py).
PLAYER_AUTH = env_lower_choice("PLAYER_AUTH", "tokens", ("tokens", "anonymous"))
PLAN_LIMITS = env_parsed("PLAN_LIMITS", "", parse_plan_limits)
LIMIT_POLICY = env_lower_choice("LIMIT_POLICY", "reject_new", ("reject_new", "replace_oldest"))

# /metrics is answered to clients in these networks, or to any client that
# sends "Authorization: Bearer <METRICS_BEARER_TOKEN>" when a token is set.
METRICS_ALLOWED_NETWORKS = env_networks("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN", "")

if SESSION_TTL_SECONDS < HEARTBEAT_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        "SESSION_TTL_SECONDS must be at least HEARTBEAT_INTERVAL_SECONDS, or every "
        f"session would expire between two heartbeats (got {SESSION_TTL_SECONDS} < "
        f"{HEARTBEAT_INTERVAL_SECONDS})"
    )
if not REDIS_KEY_PREFIX or any(c in "{}" or c.isspace() for c in REDIS_KEY_PREFIX):
    # Braces would change the Redis Cluster hash tag of every key; whitespace
    # (anywhere, not only at the ends) makes keys that redis-cli cannot name unquoted.
    raise ImproperlyConfigured(
        f"REDIS_KEY_PREFIX must be non-empty, without braces or spaces, got {REDIS_KEY_PREFIX!r}"
    )
try:
    REDIS_TOPOLOGY = parse_topology(os.environ, socket_timeout=REDIS_SOCKET_TIMEOUT)
except RedisSettingsError as _error:
    raise ImproperlyConfigured(str(_error)) from None
# The activity index's shards (heartbeat/limiter/keys.py): fixed for a deployment.
ACTIVITY_SHARDS = env_int("ACTIVITY_SHARDS", 16, minimum=1, maximum=MAX_ACTIVITY_SHARDS)
# The dashboard's analytics (who was seen, refusals, daily sharing signals) stay under this many MB
# of Redis memory: past it the accounts heard longest ago are trimmed, so a flood of made-up
# accounts cannot fill the Redis that admission needs. 0 turns the budget off.
# Anonymous players (no verified token): at most this many new sessions per client network (IPv4 /24,
# IPv6 /56) per minute, kept in Redis for every worker; past it 429 too_many_new_sessions. 0: no limit.
NEW_SESSIONS_PER_NETWORK_PER_MINUTE = env_int("NEW_SESSIONS_PER_NETWORK_PER_MINUTE", 120, minimum=0, maximum=1_000_000)
ACTIVITY_MEMORY_BUDGET_MB = env_int("ACTIVITY_MEMORY_BUDGET_MB", 512, minimum=0, maximum=1_048_576)
# After admitting a NEW session, wait until this many replicas have it (Redis
# WAIT), at most REDIS_WAIT_TIMEOUT_MS; 0: never wait (asynchronous replication).
REDIS_WAIT_REPLICAS = env_int("REDIS_WAIT_REPLICAS", 0, minimum=0, maximum=16)
REDIS_WAIT_TIMEOUT_MS = env_int("REDIS_WAIT_TIMEOUT_MS", 100, minimum=1, maximum=10_000)
# Events (session.started/refused/ended, account.*, policy.changed) in one Redis stream per
# activity shard (docs/operators/events.md). On by default: the policy simulator and the
# sharing risk score replay the recorded history, which cannot be had afterwards. Off: nothing
# is noted or written, at no cost at all.
EVENTS_ENABLED = env_bool("EVENTS_ENABLED", True)
# How long the streams keep events (trimmed approximately: XADD MINID ~), 1 hour to 90 days.
EVENTS_RETENTION_HOURS = env_int("EVENTS_RETENTION_HOURS", 72, minimum=1, maximum=2160)
# The most memory the event streams may take (MB): past it the oldest events go first, whatever
# their age, so a flood of made-up accounts cannot fill Redis (0: no cap, EVENTS_RETENTION_HOURS only).
EVENTS_MEMORY_BUDGET_MB = env_int("EVENTS_MEMORY_BUDGET_MB", 256, minimum=0, maximum=1_000_000)
# manage.py score_sharing flags an account (one account.sharing_flagged event) when its sharing
# risk score reaches this (heartbeat/limiter/risk.py; docs/support/sharing.md). A signal, not proof.
SHARING_FLAG_SCORE = env_int("SHARING_FLAG_SCORE", 60, minimum=1, maximum=100_000)

# --- Webhooks (webhooks/, docs/operators/webhooks.md) ------------------------------------
# An event not delivered to an endpoint this long after it happened goes to its dead letters.
WEBHOOK_MAX_AGE_HOURS = env_float("WEBHOOK_MAX_AGE_HOURS", 24.0, minimum=0.0002, maximum=24.0 * 30)
# Multiplies the retry schedule (webhooks/schedule.py); below 1 only for tests and demonstrations.
WEBHOOK_RETRY_SCALE = env_float("WEBHOOK_RETRY_SCALE", 1.0, minimum=0.0001, maximum=100.0)
# One request's connect and each read; also the longest a whole answer may take.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=120.0)
# The most bytes of an answer's body read; the rest is dropped with the connection.
WEBHOOK_MAX_RESPONSE_BYTES = env_int("WEBHOOK_MAX_RESPONSE_BYTES", 65_536, minimum=0, maximum=16 * 1024 * 1024)
# Loopback, private, link-local and reserved targets are refused unless this is on (tests, development).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
# Requests in flight at once per endpoint in each delivery worker (one account's events stay in order).
WEBHOOK_CONCURRENCY = env_int("WEBHOOK_CONCURRENCY", 8, minimum=1, maximum=256)
# A worker's claim on (endpoint, stream) lasts this long unless renewed; a crashed worker's
# events move to another one after it.
WEBHOOK_LEASE_SECONDS = env_float("WEBHOOK_LEASE_SECONDS", 30.0, minimum=1.0, maximum=600.0)
if WEBHOOK_LEASE_SECONDS < 2 * WEBHOOK_TIMEOUT_SECONDS + 1:
    raise ImproperlyConfigured(
        f"WEBHOOK_LEASE_SECONDS ({WEBHOOK_LEASE_SECONDS}) must be at least twice WEBHOOK_TIMEOUT_SECONDS "
        f"({WEBHOOK_TIMEOUT_SECONDS}) plus 1, or a slow round could outlive its lease and deliver twice"
    )

# --- Django ------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list at least one host name, e.g. limits.example.com")
# Behind our reverse proxy (compose's nginx), which sets X-Forwarded-For to the
# client's address and X-Forwarded-Proto to the scheme, overwriting anything
# the client sent. Never set it when clients reach gunicorn directly: they
# could then name any address and dodge the login lockout.
BEHIND_PROXY = env_bool("DJANGO_BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"DJANGO_CSRF_TRUSTED_ORIGINS must list origins with their scheme, e.g. https://limits.example.com, "
            f"got {_origin!r}"
        )


def _secret_key() -> str:
    """The configured key, else one generated once into VAR_DIR for development."""
    configured = env_str("DJANGO_SECRET_KEY", "")
    if configured:
        if len(configured) < 32:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 32 characters")
        return configured
    # A per-checkout key kept outside git, so every gunicorn worker shares it and
    # staff logins survive a restart; production sets DJANGO_SECRET_KEY.
    key_file = VAR_DIR / "secret_key"
    try:
        if not key_file.exists():
            VAR_DIR.mkdir(parents=True, exist_ok=True)
            try:
                with open(key_file, "x", encoding="ascii") as handle:
                    key_file.chmod(0o600)
                    handle.write(secrets.token_urlsafe(50))
            except FileExistsError:
                pass  # another worker wrote it first
        return key_file.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"STREAMLIMIT_VAR_DIR must be a folder this user can write ({exc}); or set DJANGO_SECRET_KEY"
        ) from None


SECRET_KEY = _secret_key()
# Old keys still accepted for signatures (staff sessions) while a new key is
# rolled out: set the new DJANGO_SECRET_KEY, the old one here, remove it later.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
if any(len(key) < 32 for key in SECRET_KEY_FALLBACKS):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY_FALLBACKS must list keys of at least 32 characters")

INSTALLED_APPS = [
    # Before the admin, so its admin/index.html (the dashboard link) wins.
    "dashboard",
    "demo",
    "webhooks",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_structlog",
    "axes",
    # The optional TOTP second factor for staff (dashboard/second_factor.py).
    "django_otp",
    "django_otp.plugins.otp_totp",
    "csp",
    "heartbeat",
    "streamlimit.home",
]

MIDDLEWARE = [
    # django-structlog's request logging, with a lean path for player requests.
    "heartbeat.edge.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header (CONTENT_SECURITY_POLICY below) on every page.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session logged in with a second factor.
    "django_otp.middleware.OTPMiddleware",
    # Staff sessions' lifetime, idle timeout and second-factor rule.
    "dashboard.staff_sessions.StaffSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login.
    "axes.middleware.AxesMiddleware",
]

# The player endpoints and probes skip the staff pages' middleware (see
# streamlimit/wsgi.py); the paths are exact, with and without the slash.
PLAYER_API_PATHS = frozenset(
    {
        "/heartbeat",
        "/heartbeat/",
        "/heartbeat/stop",
        "/heartbeat/stop/",
        "/sessions",
        "/sessions/",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)
PLAYER_API_MIDDLEWARE = ["heartbeat.edge.middleware.PlayerRequestLogMiddleware"]

ROOT_URLCONF = "streamlimit.urls"
WSGI_APPLICATION = "streamlimit.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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


def _database() -> dict:
    url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
    try:
        return dj_database_url.parse(url, conn_max_age=60)
    except ValueError:  # dj-database-url's UnknownSchemeError is one
        # Only the scheme is repeated: the rest may hold a password.
        raise ImproperlyConfigured(
            "DATABASE_URL must be a database URL such as sqlite:///path or postgres://user:pass@host/db, "
            f"got one starting {url.split(':', 1)[0]!r}"
        ) from None


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-redis' pool for one server and Sentinel (redis_connection.cache_config).
CACHES = {"default": cache_config(REDIS_TOPOLOGY, REDIS_KEY_PREFIX)}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "admin:login"
# Where a login goes when its `next` is missing or refused (another site, say).
LOGIN_REDIRECT_URL = "dashboard:overview"
# django-axes first: it refuses a locked-out login before the password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

# --- Staff login lockout (django-axes) ----------------------------------------
# After this many failed logins for one username from one address, further
# attempts (the right password included) are refused for the lockout time.
AXES_FAILURE_LIMIT = env_int("STAFF_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("STAFF_LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "dashboard/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "dashboard.client_ip.client_ip"
# A locked-out username still logs in with its right password and a valid
# second factor (dashboard/second_factor.py): someone guessing passwords from
# the same office address cannot lock out an account that has one.
AXES_WHITELIST_CALLABLE = "dashboard.second_factor.lockout_bypass"
# A JSON line per lockout is enough; axes' own per-attempt lines are debug.
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# player.d.ts as TypeScript, not MPEG video (streamlimit/media_types.py).
WHITENOISE_MIMETYPES = STATIC_MEDIA_TYPES
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Staff sessions and browser protections -----------------------------------
# Cookies go over HTTPS only whenever HTTPS is in use: behind our proxy (which
# terminates TLS) or with https:// trusted origins. false only for a lab
# proxy on plain http.
_HTTPS_IN_USE = BEHIND_PROXY or any(origin.startswith("https://") for origin in CSRF_TRUSTED_ORIGINS)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", _HTTPS_IN_USE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A staff login lasts at most this long, and ends sooner after this long
# without a request (dashboard/staff_sessions.py checks both).
STAFF_SESSION_HOURS = env_int("STAFF_SESSION_HOURS", 12, minimum=1, maximum=24 * 14)
SESSION_COOKIE_AGE = STAFF_SESSION_HOURS * 3600
STAFF_SESSION_IDLE_MINUTES = env_int("STAFF_SESSION_IDLE_MINUTES", 60, minimum=1, maximum=24 * 14 * 60)
if STAFF_SESSION_IDLE_MINUTES > STAFF_SESSION_HOURS * 60:
    raise ImproperlyConfigured(
        f"STAFF_SESSION_IDLE_MINUTES ({STAFF_SESSION_IDLE_MINUTES}) must be at most STAFF_SESSION_HOURS "
        f"({STAFF_SESSION_HOURS}) in minutes"
    )
# Staff who may evict sessions or change policies must log in with a TOTP
# code (enrolled with `manage.py enrol_totp USERNAME`).
STAFF_REQUIRE_2FA = env_bool("STAFF_REQUIRE_2FA", False)
OTP_TOTP_ISSUER = "StreamLimit"
# Strict-Transport-Security on answers over HTTPS (Django never sends it over
# plain http); 0 turns it off.
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000, minimum=0, maximum=2 * 31_536_000)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Every page's scripts and styles come from our own static files; nothing
# inline (the API docs page is drf-spectacular's split view, its style a file).
# worker-src blob: is the player library's background timer (docs/background-tabs.md).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF],
        "img-src": [csp_constants.SELF, "data:"],
        "font-src": [csp_constants.SELF],
        "connect-src": [csp_constants.SELF],
        "worker-src": [csp_constants.SELF, "blob:"],
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.NONE],
        "form-action": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "heartbeat.api.errors.json_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "StreamLimit API",
    "DESCRIPTION": "Concurrent-stream limiter: players send a heartbeat every heartbeatInterval seconds "
    "(20 by default; each answer says) and keep playing while the answer is 200.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "playbackToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The playback token the streaming company's back end issued (when tokens are on).",
            }
        }
    },
}

# --- Logging -----------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

LOGGING = build_logging_config(LOG_LEVEL)
configure_structlog(LOG_LEVEL)

# Request start lines would double the volume of heartbeat logs for no new
# information; they appear with LOG_LEVEL=DEBUG. Every django-structlog setting
# read per request is spelled out: a missing one costs an AttributeError each time.
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG
DJANGO_STRUCTLOG_STATUS_DEFAULT_LOG_LEVEL = logging.INFO
DJANGO_STRUCTLOG_STATUS_2XX_LOG_LEVEL = logging.INFO
DJANGO_STRUCTLOG_STATUS_4XX_LOG_LEVEL = logging.WARNING
DJANGO_STRUCTLOG_STATUS_5XX_LOG_LEVEL = logging.ERROR
DJANGO_STRUCTLOG_REQUEST_CANCELLED_LOG_LEVEL = logging.WARNING
# The correlation id is chosen in heartbeat/edge/logging_context.py, which checks the
# caller's header before trusting it.
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = False
DJANGO_STRUCTLOG_TRUST_UPSTREAM_CORRELATION_ID = False
# The client address is not among the fields operators asked for, and resolving
# it through proxies costs more than the rest of the request line.
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
DJANGO_STRUCTLOG_USER_ID_FIELD = None
# django-redis keeps pooled connections open; this is read on every request.
DJANGO_REDIS_CLOSE_CONNECTION = False
