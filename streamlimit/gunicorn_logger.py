"""gunicorn's logger, minus the access log: the application logs every request itself."""

from gunicorn.glogging import Logger


class AppLogsRequests(Logger):
    """Skips gunicorn's access line, which it would otherwise format for every request."""

    def access(self, resp, req, environ, request_time) -> None:
        return
