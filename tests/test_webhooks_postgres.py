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


def test_with_postgres_starts_one_from_the_debian_package_when_none_answers() -> None:
    # The fallback of make test and of tests/postgres_fixtures.py, on a port of its own (5432 is left alone).
    import psycopg

    from devtools import with_postgres

    bin_dir = with_postgres.find_bin_dir()
    assert bin_dir is not None, "no PostgreSQL binaries: apt-get install postgresql"
    process, port, workdir = with_postgres.start_postgres(bin_dir)
    try:
        assert port != with_postgres.DEFAULT_PORT
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        with_postgres.stop_postgres(process, workdir)
    assert process.poll() is not None and not workdir.exists()
