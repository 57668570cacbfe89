"""Run ``python manage.py ...`` as a process of its own, forked from a Python that has its libraries imported.

Each ``manage.py`` run the suite starts costs seconds of CPU, most of it
importing Django, redis-py, structlog and the like, on 2 cores the suite's
scarce resource. ``run_manage`` hands the command to a fork server (one per
pytest process, started on first use): a Python that has imported those
libraries, but no module of the project and not its settings, forks a child
per command. The child takes the command's environment, working folder,
stdin, stdout and stderr, and runs ``manage.py`` as ``__main__`` exactly as
``python manage.py`` does, from reading the settings on: its exit status, its
output and its logs are its own. Tests about the interpreter's own start
(``python manage.py`` itself) keep a plain ``subprocess.run``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Libraries only: none reads the environment or the Django settings when imported (checked at start).
PRELOADED = (
    "django.core.management",
    "django.db.models",
    "django.http",
    "django.template",
    "django.forms",
    "django.core.serializers.json",
    "django.contrib.auth.hashers",
    "redis",
    "redis.cluster",
    "redis.asyncio",
    "structlog",
    "structlog.dev",
    "structlog.processors",
    "jwt",
    "jwt.algorithms",
    "prometheus_client",
)
PROJECT_PACKAGES = frozenset({"heartbeat", "streamlimit", "dashboard", "webhooks", "demo", "devtools"})


def _child(request: dict) -> int:
    """In the forked child: become ``python manage.py ARGS`` with the request's environment and files."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in (
        (0, request["stdin"] or os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_TRUNC),
    ):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    script = str(Path(request["cwd"]) / "manage.py")
    sys.argv = [script, *request["args"]]
    # As for `python manage.py`: the script's folder first on the import path.
    sys.path[0] = str(Path(script).parent)
    import runpy

    # What escapes manage.py is handled by the interpreter as for any script (SystemExit, traceback).
    runpy.run_path(script, run_name="__main__")
    return 0


def serve(requests_fd: int, replies_fd: int) -> int:
    """The fork server's loop: one JSON request per line, answered with the child's pid, then its status."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    from django.conf import settings

    loaded = sorted({m.split(".")[0] for m in sys.modules} & PROJECT_PACKAGES)
    if settings.configured or loaded:
        raise RuntimeError(f"the fork server must not load the project or its settings: {loaded}")
    requests = os.fdopen(requests_fd, "r")
    replies = os.fdopen(replies_fd, "w")
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            return _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()
    return 0


class ForkServer:
    """The client side: starts the server, sends it commands one at a time, stops it."""

    def __init__(self) -> None:
        requests_read, self._requests = os.pipe()
        self._replies, replies_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.manage_runner", str(requests_read), str(replies_write)],
            cwd=ROOT,
            pass_fds=(requests_read, replies_write),
            # Not a terminal, as for subprocess.run(capture_output=True): a child's stdout is block-buffered.
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        os.close(requests_read)
        os.close(replies_write)
        self._buffer = b""
        self._lock = threading.Lock()

    def _reply(self, deadline: float | None) -> dict | None:
        import time

        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._replies], [], [], wait)[0]:
                return None
            chunk = os.read(self._replies, 65536)
            if not chunk:
                raise RuntimeError(f"the manage.py fork server ended (status {self.process.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], env: dict[str, str], input: str | None, timeout: float) -> tuple[int, str, str]:
        """Run ``manage.py ARGS``; its exit status, stdout and stderr (killed after ``timeout`` s)."""
        import time

        with self._lock, tempfile.TemporaryDirectory(prefix="manage-run-") as folder:
            files = {name: Path(folder) / name for name in ("stdin", "stdout", "stderr")}
            for path in files.values():
                path.write_text(input if path.name == "stdin" and input is not None else "")
            request = {
                "args": args,
                "env": env,
                "cwd": str(ROOT),
                "stdin": str(files["stdin"]) if input is not None else None,
                "stdout": str(files["stdout"]),
                "stderr": str(files["stderr"]),
            }
            os.write(self._requests, (json.dumps(request) + "\n").encode())
            pid = self._reply(None)["pid"]
            finished = self._reply(time.monotonic() + timeout)
            if finished is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(None)
                raise subprocess.TimeoutExpired(["manage.py", *args], timeout)
            return finished["returncode"], files["stdout"].read_text(), files["stderr"].read_text()

    def stop(self) -> None:
        """End the server (it ends when its request pipe closes)."""
        os.close(self._requests)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._replies)


_SERVER: ForkServer | None = None


def run_manage(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` in the checkout, as ``subprocess.run(..., capture_output=True, text=True)``.

    ``env``: the whole environment (default: this process'); stdin is empty unless ``input`` is given.
    """
    global _SERVER
    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = ForkServer()
    returncode, stdout, stderr = _SERVER.run(list(args), dict(os.environ if env is None else env), input, timeout)
    result = subprocess.CompletedProcess(["manage.py", *args], returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result


def stop() -> None:
    """Stop this process' fork server, if it started one."""
    global _SERVER
    if _SERVER is not None:
        _SERVER.stop()
        _SERVER = None


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
