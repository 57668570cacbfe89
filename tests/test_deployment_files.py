"""The Dockerfile and compose.yaml parse and name the right entry points (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from redis import Redis

from devtools.redis_topology import ClusterSet, RedisProcess
from devtools.with_redis import find_redis_server
from tests.conftest import ROOT, free_port, wait_for_port


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
    healthcheck = json.loads(rows["HEALTHCHECK"].split("CMD", 1)[1])
    assert healthcheck == ["python", "/app/deploy/healthcheck.py"]
    assert "/healthz" in (ROOT / "deploy" / "healthcheck.py").read_text()
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


# --- compose, image and proxy (issue 9, part 7) -------------------------------------------

REQUIRED_IN_DOTENV = {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "PLAYBACK_TOKEN_KEYS"}


def readme_settings() -> list[str]:
    """The variables of the manual's table of the service's settings (docs/operators/configuration.md)."""
    text = (ROOT / "docs" / "operators" / "configuration.md").read_text()
    table = text.split("## The service's variables", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, re.MULTILINE)


def dotenv_example() -> dict[str, str]:
    """Variables named in .env.example, set or shown commented out, with their values."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def nginx_headers() -> dict[str, str]:
    """proxy_set_header lines of deploy/nginx.conf: header -> value."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    return {name.lower(): value for name, value in re.findall(r"proxy_set_header\s+(\S+)\s+([^;]+);", text)}


def test_env_example_lists_every_setting_of_the_readme_without_secrets() -> None:
    settings = readme_settings()
    assert len(settings) >= 25  # the table was found
    listed = dotenv_example()
    assert set(settings) - set(listed) == set()
    for name in REQUIRED_IN_DOTENV:
        assert listed[name] == "", f"{name} must be empty in .env.example"
    # The compose-only variables are documented there too.
    assert {"STREAMLIMIT_IMAGE", "METRICS_SUBNET", "PROXY_PORT"} <= set(listed)


def test_nginx_passes_the_host_with_its_port_and_overwrites_forwarded_headers() -> None:
    headers = nginx_headers()
    assert headers["host"] == "$http_host"
    assert headers["x-forwarded-proto"] == "$scheme"
    # $remote_addr replaces what the client sent; $proxy_add_x_forwarded_for would append to it.
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert headers["x-forwarded-host"] == '""' and headers["forwarded"] == '""'
    assert "$proxy_add_x_forwarded_for" not in (ROOT / "deploy" / "nginx.conf").read_text()


def test_compose_builds_one_image_for_migrate_and_api() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["migrate"]
    assert services["api"]["image"] == services["migrate"]["image"]
    assert services["api"]["env_file"] == services["migrate"]["env_file"] == [".env"]


def test_compose_trusts_the_proxy_and_scrapes_metrics_on_a_network_nginx_is_not_on() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    env = services["api"]["environment"]
    assert env["DJANGO_BEHIND_PROXY"] == "true"
    assert env["METRICS_ALLOWED_NETWORKS"] == compose["networks"]["metrics"]["ipam"]["config"][0]["subnet"]
    assert "metrics" in services["api"]["networks"] and "metrics" in services["prometheus"]["networks"]
    assert "metrics" not in services["proxy"]["networks"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [dns] = prometheus["scrape_configs"][0]["dns_sd_configs"]
    assert dns["names"] == ["api"] and dns["port"] == 8080


def test_image_code_belongs_to_root_and_static_files_are_outside_var() -> None:
    rows = dockerfile_instructions()
    final_stage = rows[[i for i, (keyword, _) in enumerate(rows) if keyword == "FROM"][-1] :]
    app_copies = [rest for keyword, rest in final_stage if keyword == "COPY" and "--from" not in rest]
    assert app_copies == [". /app"]  # no --chown: the runtime user cannot change the code
    env = " ".join(rest for keyword, rest in final_stage if keyword == "ENV")
    static_root = re.search(r"STREAMLIMIT_STATIC_ROOT=(\S+)", env).group(1)
    var_dir = re.search(r"STREAMLIMIT_VAR_DIR=(\S+)", env).group(1)
    assert not static_root.startswith(var_dir)
    run = " ".join(rest for keyword, rest in final_stage if keyword == "RUN")
    assert "collectstatic" in run and f"chown streamlimit:streamlimit {var_dir}" in run
    assert "chown -R" not in run


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (or a folder above it) is left out by .dockerignore ``patterns`` (no ! rules used)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def test_dockerignore_keeps_out_state_secrets_and_tests_and_keeps_what_the_image_runs() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert not [p for p in patterns if p.startswith("!")]  # the matcher above does not handle exceptions
    ignored = [".git/HEAD", ".venv/bin/python", "var/db.sqlite3", ".env", ".env.production", "tests/conftest.py"]
    ignored += ["bench/run.sh", "heartbeat/__pycache__/views.cpython-311.pyc", ".pytest_cache/x", "README.md"]
    for left_out in ignored:
        assert dockerignored(left_out, patterns), left_out
    needed = ["manage.py", "gunicorn.conf.py", "requirements.txt", "pyproject.toml", "deploy/docker-entrypoint.sh"]
    needed += [
        "streamlimit/settings.py",
        "heartbeat/limiter/scripts/admit.lua",
        "dashboard/templates/dashboard/base.html",
    ]
    needed += ["dashboard/static/dashboard/dashboard.css", "LICENSE"]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not dockerignored(path, patterns), path


def test_env_is_ignored_by_git() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()


# --- the real tools, where installed (make test installs them from Debian's packages) ---------


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) when it works, else Debian's `docker-compose`, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def compose_project(tmp_path: Path, dotenv: str) -> Path:
    """A copy of compose.yaml and deploy/ with ``dotenv`` as its .env."""
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text(dotenv)
    return tmp_path


@pytest.fixture
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (make test installs docker-compose)")
    return command


def filled_dotenv() -> str:
    """.env.example with the three required secrets set, MAX_CONCURRENT_STREAMS=5 and HOST=127.0.0.1."""
    dotenv = (ROOT / ".env.example").read_text()
    dotenv = dotenv.replace("DJANGO_SECRET_KEY=\n", "DJANGO_SECRET_KEY=test-only-" + "k" * 40 + "\n")
    dotenv = dotenv.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=test-only-pw\n")
    dotenv = dotenv.replace("PLAYBACK_TOKEN_KEYS=\n", "PLAYBACK_TOKEN_KEYS=k1=test-only-" + "t" * 32 + "\n")
    dotenv = dotenv.replace("# MAX_CONCURRENT_STREAMS=3\n", "MAX_CONCURRENT_STREAMS=5\n")
    return dotenv.replace("# HOST=0.0.0.0\n", "HOST=127.0.0.1\n")  # compose's own value must win


def test_compose_config_takes_every_setting_from_dotenv(compose: list[str], tmp_path: Path) -> None:
    project = compose_project(tmp_path, filled_dotenv())
    result = subprocess.run([*compose, "config"], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    api, migrate = services["api"], services["migrate"]
    assert api["environment"]["MAX_CONCURRENT_STREAMS"] == "5"
    assert api["environment"]["HOST"] == "0.0.0.0"  # noqa: S104 (inside the container)
    assert api["environment"]["DATABASE_URL"] == "postgres://streamlimit:test-only-pw@db:5432/streamlimit"
    assert api["image"] == migrate["image"] == "streamlimit:local" and "build" not in api
    listed = subprocess.run(
        [*compose, "--profile", "monitoring", "config", "--services"], cwd=project, capture_output=True, text=True
    )
    assert "prometheus" in listed.stdout.split()


def test_compose_config_refuses_a_dotenv_without_the_secret_key(compose: list[str], tmp_path: Path) -> None:
    project = compose_project(tmp_path, (ROOT / ".env.example").read_text())
    result = subprocess.run([*compose, "config"], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "set DJANGO_SECRET_KEY in .env" in result.stderr or "set POSTGRES_PASSWORD in .env" in result.stderr


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; make test installs it)")
    return found


def test_alert_rules_are_valid_and_their_unit_tests_pass(promtool: str) -> None:
    checked = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=ROOT / "deploy", capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=ROOT / "deploy", capture_output=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_prometheus_scrape_config_is_valid(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", "prometheus.yml"], cwd=ROOT / "deploy", capture_output=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.live_server_gunicorn
def test_the_image_healthcheck_names_an_allowed_host(live_gunicorn) -> None:
    server = live_gunicorn(workers=1, DJANGO_ALLOWED_HOSTS=".limits.example.com,other.example.com")
    env = {**os.environ, "PORT": str(server.port), "DJANGO_ALLOWED_HOSTS": ".limits.example.com,other.example.com"}
    healthy = subprocess.run([sys.executable, "deploy/healthcheck.py"], cwd=ROOT, env=env, capture_output=True)
    assert healthy.returncode == 0, healthy.stderr
    # The old check's Host, 127.0.0.1, is refused by such a list.
    refused = requests.get(f"{server.url}/healthz", timeout=10)
    assert refused.status_code == 400
    server.stop()
    down = subprocess.run([sys.executable, "deploy/healthcheck.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 1 and "healthz:" in down.stderr


# --- compose files for a Sentinel set and a Cluster (issue 11) --------------------------------

SENTINEL_COMPOSE = ROOT / "deploy" / "compose.sentinel.yaml"
CLUSTER_COMPOSE = ROOT / "deploy" / "compose.cluster.yaml"
SENTINEL_SCRIPT = ROOT / "deploy" / "redis-sentinel-start.sh"


def compose_services(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["services"]


def test_the_sentinel_compose_file_points_the_app_at_three_sentinels_watching_its_primary() -> None:
    services = compose_services(SENTINEL_COMPOSE)
    for app in ("api", "migrate"):
        assert not {"REDIS_URL", "REDIS_CLUSTER_NODES"} & set(services[app]["environment"])
    env = services["api"]["environment"]
    master = env["REDIS_SENTINEL_MASTER"]
    sentinels = env["REDIS_SENTINELS"].split(",")
    assert len(sentinels) == 3
    for entry in sentinels:
        host, port = entry.split(":")
        sentinel = services[host]
        assert port == "26379"
        assert sentinel["environment"]["SENTINEL_MASTER_NAME"] == master
        assert sentinel["environment"]["SENTINEL_ANNOUNCE_HOSTNAME"] == host
        assert sentinel["environment"]["REDIS_PRIMARY_HOST"] == "redis-primary"
        assert f"get-master-addr-by-name {master} " in sentinel["healthcheck"]["test"][1]
        mounted = {volume.split(":")[0] for volume in sentinel["volumes"]}
        assert "./redis-sentinel-start.sh" in mounted and (SENTINEL_COMPOSE.parent / "redis-sentinel-start.sh").exists()
        assert services["api"]["depends_on"][host]["condition"] == "service_healthy"
    for node in ("redis-primary", "redis-replica"):
        command = " ".join(services[node]["command"])
        assert "--maxmemory-policy noeviction" in command and f"--replica-announce-ip {node}" in command
    assert "--replicaof redis-primary 6379" in " ".join(services["redis-replica"]["command"])


def test_the_cluster_compose_file_lists_six_nodes_announcing_their_names_and_creates_the_cluster_once() -> None:
    compose = yaml.safe_load(CLUSTER_COMPOSE.read_text())
    services = compose["services"]
    for app in ("api", "migrate"):
        assert not {"REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"} & set(services[app]["environment"])
    nodes = services["api"]["environment"]["REDIS_CLUSTER_NODES"].split(",")
    assert len(nodes) == 6
    job = services["redis-cluster-create"]["command"][2]
    created = re.search(r"--cluster create ((?:\S+:6379 )+)--cluster-replicas 1 --cluster-yes", job)
    [network] = compose["networks"]["redis"]["ipam"]["config"]
    fixed = []
    for entry in nodes:
        host, port = entry.split(":")
        node = services[host]
        assert port == "6379" and node["environment"]["NODE_HOSTNAME"] == host
        command = node["command"][2]
        assert '--cluster-announce-hostname "$$NODE_HOSTNAME"' in command
        assert "--cluster-preferred-endpoint-type hostname" in command and "--maxmemory-policy noeviction" in command
        address = node["networks"]["redis"]["ipv4_address"]
        assert ipaddress.ip_address(address) in ipaddress.ip_network(network["subnet"])
        assert ipaddress.ip_address(address) not in ipaddress.ip_network(network["ip_range"])  # never handed out
        fixed.append(f"{address}:6379")
        assert services["redis-cluster-create"]["depends_on"][host]["condition"] == "service_healthy"
    assert created and created.group(1).split() == fixed
    assert "redis" in services["api"]["networks"]
    assert services["api"]["depends_on"]["redis-cluster-create"]["condition"] == "service_completed_successfully"


def volume_source(volume: str | dict) -> str:
    """The host side of a volume in `compose config`'s output (v1: a string, v2: a mapping)."""
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


@pytest.mark.parametrize(
    ("file", "variables"),
    [
        ("compose.sentinel.yaml", {"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"}),
        ("compose.cluster.yaml", {"REDIS_CLUSTER_NODES"}),
    ],
)
def test_compose_config_accepts_the_topology_file_with_the_repository_dotenv(
    compose: list[str], tmp_path: Path, file: str, variables: set[str]
) -> None:
    project = compose_project(tmp_path, filled_dotenv())
    command = [*compose, "-f", f"deploy/{file}", "--env-file", ".env", "config"]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    env = services["api"]["environment"]
    assert variables <= set(env) and "REDIS_URL" not in env
    assert env["MAX_CONCURRENT_STREAMS"] == "5" and env["HOST"] == "0.0.0.0"  # noqa: S104 (inside the container)
    assert env["DATABASE_URL"] == "postgres://streamlimit:test-only-pw@db:5432/streamlimit"
    # Paths are relative to deploy/: the image is built from the repository's root.
    build = services["migrate"]["build"]
    assert Path(build["context"] if isinstance(build, dict) else build) == project
    assert Path(volume_source(services["proxy"]["volumes"][0])) == project / "deploy" / "nginx.conf"


def test_the_sentinel_start_script_writes_a_config_once_and_runs_a_sentinel_on_it(own_redis, tmp_path: Path) -> None:
    primary = own_redis()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    env = {
        "PATH": os.environ["PATH"],
        "SENTINEL_CONF": str(conf),
        "SENTINEL_PORT": str(port),
        "SENTINEL_BIND": "127.0.0.1",
        "SENTINEL_MASTER_NAME": "streamlimit",
        "SENTINEL_ANNOUNCE_HOSTNAME": "127.0.0.1",
        "REDIS_PRIMARY_HOST": "127.0.0.1",
        "REDIS_PRIMARY_PORT": str(primary.port),
    }

    def run_sentinel() -> tuple[list[str], str]:
        """Start the script (redis-server in place of the image's entrypoint), ask the sentinel, stop it."""
        log = tmp_path / "sentinel.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["sh", str(SENTINEL_SCRIPT), find_redis_server()], env=env, cwd=tmp_path, stdout=out, stderr=out
            )
        try:
            wait_for_port(port, process, timeout=10)
            sentinel = Redis(port=port, socket_timeout=5, decode_responses=True)
            reported = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "streamlimit")
            [myid] = re.findall(r"^sentinel myid (\w+)$", conf.read_text(), re.MULTILINE)  # sentinel rewrote it
            return reported, myid
        except Exception:
            print(log.read_text())
            raise
        finally:
            process.terminate()
            process.wait(timeout=10)

    reported, first_id = run_sentinel()
    assert reported == ["127.0.0.1", str(primary.port)]
    assert "bind 127.0.0.1" in conf.read_text()
    # Restarted, the sentinel keeps what it wrote (a fresh config would give it a new id).
    reported, second_id = run_sentinel()
    assert reported == ["127.0.0.1", str(primary.port)] and second_id == first_id


def cluster_job_script(cluster_cli: str, addresses: list[str]) -> str:
    """The create job's shell script, run here: the local redis-cli, loopback nodes in place of the fixed IPs."""
    script = compose_services(CLUSTER_COMPOSE)["redis-cluster-create"]["command"][2].replace("$$", "$")
    fixed = re.findall(r"(172\.30\.98\.\d+):6379", script)
    first_host, first_port = addresses[0].split(":")
    script = script.replace(f"-h {fixed[0]} ", f"-h {first_host} -p {first_port} ")
    for ip, address in zip(dict.fromkeys(fixed), addresses, strict=True):
        script = script.replace(f"{ip}:6379", address)
    return script.replace("redis-cli ", f"{cluster_cli} ")


def test_the_cluster_create_job_makes_the_cluster_and_leaves_a_made_one_alone() -> None:
    topology = ClusterSet()
    try:
        topology.start_nodes()
        script = cluster_job_script(topology.redis_cli, topology.nodes.split(","))
        first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        topology.wait_until_consistent(timeout=30)
        ids = {row.address: row.id for row in topology.cluster_nodes()}
        assert len(topology.primaries()) == 3 and len(topology.replicas()) == 3
        again = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "--cluster create" not in again.stdout and "hash slots allocation" not in again.stdout
        assert {row.address: row.id for row in topology.cluster_nodes()} == ids
    finally:
        topology.stop()


def redis_server_major_version(binary: str) -> int:
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"v=(\d+)\.", version).group(1))


def test_a_cluster_node_command_line_is_one_redis_server_7_takes(tmp_path: Path) -> None:
    binary = find_redis_server()
    if redis_server_major_version(binary) < 7:
        pytest.skip(f"cluster-announce-hostname needs redis-server 7 or later; {binary} is older")
    command = compose_services(CLUSTER_COMPOSE)["redis-node-3"]["command"][2]
    words = shlex.split(command.replace("$$NODE_HOSTNAME", "redis-node-3"))
    assert words[:3] == ["exec", "docker-entrypoint.sh", "redis-server"]
    node = RedisProcess(
        "compose-node",
        tmp_path,
        lambda port: [binary, *words[3:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
    )
    try:
        node.start(timeout=10)
        client = Redis(port=node.port, socket_timeout=5, decode_responses=True)
        assert client.config_get("cluster-announce-hostname") == {"cluster-announce-hostname": "redis-node-3"}
        assert client.config_get("cluster-preferred-endpoint-type")["cluster-preferred-endpoint-type"] == "hostname"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.info("cluster")["cluster_enabled"] == 1
    finally:
        node.kill()
