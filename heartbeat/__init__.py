"""The heartbeat app: the player API and the limiter behind it, in four rooms.

- ``heartbeat.limiter``: the domain (admission, stops, evictions, the activity
  writer, the read model, the key layout and the Lua scripts). No Django.
- ``heartbeat.store``: the Redis side (connection and topology, the script
  runner and cluster router, the circuit breaker). Knows nothing of the domain.
- ``heartbeat.api``: the player handlers, playback tokens, rendering, the
  OpenAPI schema and the probes.
- ``heartbeat.edge``: what every request passes before a handler (middleware,
  CORS, hosts, logging context, request bodies, the lean WSGI handler).

``heartbeat.services`` is the one composition root that wires them from
settings. The import rules are checked by import-linter (``make lint``).
"""
