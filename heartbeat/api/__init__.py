"""The HTTP answers: player handlers, playback tokens, rendering, the OpenAPI schema, the probes.

Handlers parse and validate, call the StreamManager (through
``heartbeat.services``), and shape the answer. May import ``heartbeat.limiter``
and ``heartbeat.store``; not ``dashboard``.
"""
