"""The Redis side: building clients for one server, Sentinel or Cluster, running scripts, the breaker.

Imports nothing from ``heartbeat.limiter``, ``heartbeat.api`` or
``heartbeat.edge``: it moves commands and scripts, whatever they mean.
"""
