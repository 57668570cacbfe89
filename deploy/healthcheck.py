"""The image's HEALTHCHECK: GET /healthz on this container; exit 0 when it answers 200.

DJANGO_ALLOWED_HOSTS applies to /healthz too, so the request names a host the
service accepts (the first one listed) rather than 127.0.0.1, which an operator's
list may leave out.
"""

import os
import sys
import urllib.request


def allowed_host() -> str:
    """A Host header value that DJANGO_ALLOWED_HOSTS accepts."""
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h.strip()]
    # ".example.com" allows example.com itself; "*" allows anything.
    return next((h.lstrip(".") for h in hosts if h != "*"), "localhost")


def main() -> int:
    port = os.environ.get("PORT", "8080")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": allowed_host()})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (a fixed http URL)
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthz: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
