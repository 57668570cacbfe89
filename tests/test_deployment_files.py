"""The Dockerfile and compose.yaml parse and name the right entry points (no Docker engine here)."""

from __future__ import annotations

import json
import re

import yaml

from tests.conftest import ROOT


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)  # continuation lines
    rows = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    rows = dockerfile_instructions()
    known = {"FROM", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "ARG"}
    assert {keyword for keyword, _ in rows} <= known
    bases = [rest for keyword, rest in rows if keyword == "FROM"]
    assert len(bases) == 2 and all(base.startswith("python:3.11-slim") for base in bases)
    users = [rest for keyword, rest in rows if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_runs_gunicorn_with_the_repo_config_and_checks_healthz() -> None:
    rows = dict(dockerfile_instructions())
    assert json.loads(rows["CMD"]) == ["gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"]
    assert "/healthz" in rows["HEALTHCHECK"]
    entrypoint = json.loads(rows["ENTRYPOINT"])[0]
    assert (ROOT / entrypoint.removeprefix("/app/")).exists()
    assert "migrate" in (ROOT / entrypoint.removeprefix("/app/")).read_text()


def test_compose_runs_the_api_with_redis_migrations_and_replicas() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "db", "migrate", "api", "proxy"} <= set(services)
    api = services["api"]
    assert api["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert api["deploy"]["replicas"] >= 2
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert "noeviction" in services["redis"]["command"]
    assert "${DJANGO_SECRET_KEY:?" in (ROOT / "compose.yaml").read_text()
    assert (ROOT / services["proxy"]["volumes"][0].split(":")[0]).exists()
