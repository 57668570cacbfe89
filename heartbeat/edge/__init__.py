"""What every request passes before a handler: the lean WSGI handler, middleware, CORS, hosts,
logging context and request bodies.

Imports no handler module of ``heartbeat.api`` and nothing from ``heartbeat.limiter``.
"""
