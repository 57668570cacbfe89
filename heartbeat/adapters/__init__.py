"""The only places that touch another library's private attributes: one small module per library.

Each has a test in ``tests/test_adapters.py`` that fails when the library
changes under it. Imports nothing of ``heartbeat``'s other rooms.
"""
