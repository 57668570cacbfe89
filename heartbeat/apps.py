from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    """The heartbeat API and the StreamManager behind it."""

    name = "heartbeat"

    def ready(self) -> None:
        from heartbeat import checks, logging_context, services, tokens  # noqa: F401  (checks, signal receivers)
