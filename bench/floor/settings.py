"""Settings of the floor project: nothing beyond what a Django view needs.

No apps, no middleware, no database, no Redis. Logging is left to gunicorn's
config (the same ``gunicorn.conf.py`` as ``make run``): Django's default
logging config is applied on top, as in any project that does not set LOGGING.
"""

import secrets

# Never used for anything (no sessions, no signing): a throw-away value.
SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor.urls"
WSGI_APPLICATION = "bench.floor.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
TEMPLATES: list[dict[str, object]] = []

USE_I18N = False
USE_TZ = True
TIME_ZONE = "UTC"

# gunicorn's start-up check (streamlimit/player_auth.py) asks how players authenticate: the floor
# has no players, only a view that answers.
PLAYER_AUTH = "anonymous"
