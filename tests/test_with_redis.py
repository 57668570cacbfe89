"""devtools/with_redis.py: the Redis that `make run` and `make test` find or start."""

from __future__ import annotations

import sys

import pytest

from devtools import with_redis
from tests.conftest import free_port


def test_when_no_redis_answers_it_starts_one_and_says_what_to_export(monkeypatch, capfd) -> None:
    # Nothing listens on this port: as on a machine without a Redis of its own.
    monkeypatch.setattr(with_redis, "DEFAULT_PORT", free_port())
    monkeypatch.delenv("REDIS_URL", raising=False)
    code = with_redis.main(
        [
            sys.executable,
            "-c",
            "import os, redis; print(os.environ['REDIS_URL'], redis.from_url(os.environ['REDIS_URL']).ping())",
        ]
    )
    out, err = capfd.readouterr()
    url, pinged = out.split()
    assert code == 0 and pinged == "True"
    assert f"export REDIS_URL={url}" in err and "started" in err and "stopped the Redis" in err


def test_a_configured_redis_url_is_used_as_it_is(monkeypatch, capfd) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/5")
    assert with_redis.main([sys.executable, "-c", "import os; print(os.environ['REDIS_URL'])"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == "redis://127.0.0.1:6379/5" and "using REDIS_URL" in err
    assert "export" not in err


def test_a_password_in_the_configured_url_is_not_printed(monkeypatch, capfd) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://app:hunter2@127.0.0.1:6379/5")
    assert with_redis.main([sys.executable, "-c", "import os; print(os.environ['REDIS_URL'])"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == "redis://app:hunter2@127.0.0.1:6379/5"
    assert "redis://app:***@127.0.0.1:6379/5" in err and "hunter2" not in err


@pytest.mark.parametrize("name", ["REDIS_SENTINELS", "REDIS_CLUSTER_NODES"])
def test_with_sentinel_or_cluster_configured_no_redis_url_is_added(monkeypatch, capfd, name: str) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv(name, "127.0.0.1:26379")
    assert with_redis.main([sys.executable, "-c", "import os; print(os.environ.get('REDIS_URL', 'unset'))"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == "unset" and f"using {name}=127.0.0.1:26379" in err


@pytest.mark.parametrize("argv", [[]])
def test_without_a_command_it_says_how_to_use_it(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="Usage"):
        with_redis.main(argv)
