"""The limiter: who may play, decided atomically in Redis, and what it did.

Imports no Django and nothing from ``heartbeat.api``, ``heartbeat.edge`` or
``dashboard``: it takes its settings as arguments, and talks to Redis only
through ``heartbeat.store``'s script runner and a redis-py client. The Redis
key layout (``keys``) and the Lua scripts (``scripts/``) live here, in one place.
"""
