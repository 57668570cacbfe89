"""The landing page at ``/`` and the favicon: a newcomer's first look at a running service."""
