from django.apps import AppConfig

from streamlimit.media_types import register_media_types


class HomeConfig(AppConfig):
    """The landing page (``/``) and ``/favicon.ico``."""

    name = "streamlimit.home"
    label = "streamlimit_home"

    def ready(self) -> None:
        # Django's own static view (runserver with DJANGO_DEBUG) guesses from the
        # mimetypes module; whitenoise reads WHITENOISE_MIMETYPES (settings).
        register_media_types()
        # Registers its check; here because this app's pages are the first to need the files.
        from streamlimit import static_check  # noqa: F401
