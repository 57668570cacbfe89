from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo player page (``/demo/``) and its token endpoint; both exist only with STREAMLIMIT_DEMO."""

    name = "demo"
