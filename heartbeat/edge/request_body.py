"""Request bodies sent without a length (``Transfer-Encoding: chunked``).

gunicorn decodes a chunked body but sets no ``CONTENT_LENGTH``, and Django 5.2
then reads the body as empty (Django ticket #35838), so a player whose HTTP
library streams its JSON would be told its body is empty. The lean handler
reads such a body itself, at most ``MAX_BODY_BYTES``, and hands Django the
bytes with their length.
"""

from __future__ import annotations

import io
from typing import Any

# A heartbeat body is about a hundred bytes; DRF would read any size into memory.
MAX_BODY_BYTES = 16 * 1024


def read_chunked_body(environ: dict[str, Any], max_bytes: int = MAX_BODY_BYTES) -> None:
    """Read a body sent without a length into ``environ``, with its length.

    At most ``max_bytes + 1`` bytes are read: a longer body then has a length
    over the limit, and the view answers 413 as for any other. A request with
    ``Content-Length`` (or without a body) is left as it is.
    """
    if environ.get("CONTENT_LENGTH") or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    body = environ["wsgi.input"].read(max_bytes + 1)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
