"""The webhook models and the audit trail on PostgreSQL: tests/test_webhooks_admin.py run again there.

The suite's own database is SQLite; this runs that module in a pytest of its
own with DATABASE_URL on a PostgreSQL database of this test's own (pytest-django
creates its test_ database beside it and drops it). The worker tests that take
``any_database`` run on both already.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_admin_model_and_audit_tests_pass_on_postgresql(postgres_database: str, key_prefix: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_webhooks_admin.py",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": postgres_database, "STREAMLIMIT_EXPECT_DATABASE_VENDOR": "postgresql"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 30 and "failed" not in summary and "skipped" not in summary
