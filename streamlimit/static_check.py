"""A system check: the static files were collected, or every page that uses them answers 500.

With whitenoise's manifest storage, ``{% static %}`` looks each file up in
STATIC_ROOT's manifest, which only ``collectstatic`` writes. ``make run`` and
the Docker image run it; someone who installed the package and went straight
to ``streamlimit serve`` has not, and ``streamlimit check`` should say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.checks import Tags, Warning, register


@register(Tags.staticfiles)
def static_files_collected(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when the static files storage needs a manifest that STATIC_ROOT does not have."""
    manifest_name = getattr(staticfiles_storage, "manifest_name", None)
    if not manifest_name or (Path(settings.STATIC_ROOT) / manifest_name).is_file():
        return []
    return [
        Warning(
            f"The static files are not collected in STATIC_ROOT ({settings.STATIC_ROOT}): the landing page, "
            "the dashboard, the admin and the demo answer 500 until they are.",
            hint="Run `streamlimit collectstatic --noinput` (in a checkout: `manage.py collectstatic --noinput`; "
            "make run and the Docker image do it).",
            id="streamlimit.W020",
        )
    ]
