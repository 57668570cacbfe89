"""A plain Django function view shaped like the real heartbeat, minus all the work.

It parses the body with the stdlib ``json`` module (the real endpoint uses
orjson, which is faster, so this floor is, if anything, a little low) and
answers the same small JSON body as an allowed heartbeat.
"""

import json

from django.http import HttpRequest, HttpResponse

_BODY = json.dumps({"allowed": True, "activeSessions": 1, "limit": 3, "heartbeatInterval": 20}).encode()


def heartbeat(request: HttpRequest) -> HttpResponse:
    """Read the ids the real endpoint reads, answer 200 always (405 for non-POST, 400 for bad JSON)."""
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    try:
        data = json.loads(request.body)
        _ids = (data["userId"], data["streamId"], data["sessionId"])
    except (ValueError, KeyError, TypeError):
        return HttpResponse(b'{"code":"invalid_request"}', status=400, content_type="application/json")
    return HttpResponse(_BODY, content_type="application/json")
