"""Signed webhooks: endpoints, the delivery worker that reads the event streams, dead letters.

An app of its own on top of ``heartbeat`` (docs/developers/architecture.md says why).
"""
