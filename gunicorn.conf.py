"""gunicorn configuration for StreamLimit (``make run``, the Docker image, the tests and benchmarks).

The configuration itself is ``streamlimit/gunicorn_config.py``, so that an
installed package (``streamlimit serve``) has it too; this file only makes it
the one gunicorn finds with ``--config gunicorn.conf.py`` in a checkout.
"""

from streamlimit.gunicorn_config import *  # noqa: F403  (gunicorn reads the module's settings and hooks)
