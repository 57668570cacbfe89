from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    """The heartbeat API and the StreamManager behind it."""

    name = "heartbeat"

    def ready(self) -> None:
        # Imported for their side effects: system checks and setting_changed receivers.
        from heartbeat import checks, services  # noqa: F401
        from heartbeat.edge import logging_context  # noqa: F401
