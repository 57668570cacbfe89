"""A real PostgreSQL for the tests: a database of the test's own, created and dropped on the shared server.

The server is the one ``devtools.with_postgres`` (``make test``) found or started
(``STREAMLIMIT_TEST_POSTGRES_URL``), else the one answering on 127.0.0.1:5432,
else one started here from the Debian package for the session. Only databases
named ``streamlimit_test_<random>`` are ever created or dropped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from devtools import with_postgres


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server's maintenance database (``postgres``)."""
    configured = os.environ.get(with_postgres.URL_VARIABLE)
    if configured:
        yield configured
        return
    host, port = with_postgres.DEFAULT_HOST, with_postgres.DEFAULT_PORT
    if with_postgres.answers(host, port):
        yield f"postgres://postgres@{host}:{port}/postgres"
        return
    bin_dir = with_postgres.find_bin_dir()
    if bin_dir is None:
        pytest.fail("no PostgreSQL answers on 127.0.0.1:5432 and none is installed: apt-get install postgresql")
    process, started_port, workdir = with_postgres.start_postgres(bin_dir)
    try:
        yield f"postgres://postgres@{host}:{started_port}/postgres"
    finally:
        with_postgres.stop_postgres(process, workdir)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """The URL of an empty database of this test's own, dropped after it (its connections ended)."""
    name = f"streamlimit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
