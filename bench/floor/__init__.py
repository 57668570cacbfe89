"""The performance floor: a bare Django project with a do-nothing POST /heartbeat.

Served by the same gunicorn config as the real service, it measures what
gunicorn + Django's request/response cycle cost on their own, so the real
heartbeat's throughput can be read as a ratio of this floor.
"""
