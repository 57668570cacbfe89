#!/usr/bin/env python
"""Django's command-line utility for StreamLimit."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")
    from django.core.management import execute_from_command_line

    from streamlimit.startup import load_settings_or_exit

    load_settings_or_exit("manage.py")

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
