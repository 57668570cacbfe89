from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    """The heartbeat API and the StreamManager behind it."""

    name = "heartbeat"

    def ready(self) -> None:
        from heartbeat import logging_context, services  # noqa: F401  (signal receivers)
