"""Run a command with a real PostgreSQL: the configured one, the local one, or one started here.

Usage: ``python -m devtools.with_postgres COMMAND [ARGS...]``

The rule, as ``devtools.with_redis`` has for Redis; the answer is passed to the
command as ``STREAMLIMIT_TEST_POSTGRES_URL`` (a server URL: the tests create a
database of their own on it and drop it, never touching another):

1. ``STREAMLIMIT_TEST_POSTGRES_URL`` is set: use it as it is.
2. Something answers on 127.0.0.1:5432: use it as ``postgres://postgres@127.0.0.1:5432/postgres``.
3. Otherwise start a PostgreSQL from the Debian package (``/usr/lib/postgresql/*/bin``: ``initdb``
   into a temporary folder, ``postgres`` on a free loopback port, trust on loopback), for as long
   as the command runs, and say so. As root it runs as the ``postgres`` user, which PostgreSQL asks for.
4. No binaries: say how to get them (``apt-get install postgresql``) and run the command without;
   the tests that need PostgreSQL then fail, saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5432
URL_VARIABLE = "STREAMLIMIT_TEST_POSTGRES_URL"


def say(message: str) -> None:
    """Print a line prefixed with this tool's name, on stderr."""
    print(f"[with_postgres] {message}", file=sys.stderr, flush=True)


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's bin folder (with initdb and postgres), or the one on PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((DEFAULT_HOST, 0))
        return sock.getsockname()[1]


def _as_postgres_user() -> dict:
    """Popen arguments that drop to the postgres user when running as root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


def start_postgres(bin_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """initdb into a temporary folder and start postgres on a free port; wait until it accepts connections."""
    workdir = Path(tempfile.mkdtemp(prefix="streamlimit-postgres-"))
    drop = _as_postgres_user()
    if drop:
        os.chown(workdir, drop["user"], drop["group"])
    data = workdir / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
        **drop,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-h", DEFAULT_HOST,
            "-p", str(port),
            "-k", str(workdir),
            "-c", "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **drop,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # Listening comes before taking logins ("the database system is starting up"): ask pg_isready.
        if answers(DEFAULT_HOST, port) and _ready(bin_dir, port):
            return process, port, workdir
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    sys.exit(f"[with_postgres] {bin_dir}/postgres did not start on port {port}")


def _ready(bin_dir: Path, port: int) -> bool:
    """Whether the server on ``port`` accepts logins now (pg_isready's exit status 0)."""
    checked = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", DEFAULT_HOST, "-p", str(port), "-U", "postgres"], check=False
    )
    return checked.returncode == 0


def stop_postgres(process: subprocess.Popen[bytes], workdir: Path) -> None:
    """Stop a started postgres (fast shutdown) and remove its folder."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Find or start PostgreSQL, run ``argv`` with its URL set, stop what was started."""
    if not argv:
        sys.exit(__doc__)
    env = dict(os.environ)
    started = None
    if env.get(URL_VARIABLE):
        say(f"using {URL_VARIABLE} (set)")
    elif answers(DEFAULT_HOST, DEFAULT_PORT):
        env[URL_VARIABLE] = f"postgres://postgres@{DEFAULT_HOST}:{DEFAULT_PORT}/postgres"
        say(f"using the PostgreSQL that answers on {DEFAULT_HOST}:{DEFAULT_PORT}")
    else:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            say("no PostgreSQL answers on 127.0.0.1:5432 and none is installed (apt-get install postgresql)")
        else:
            process, port, workdir = start_postgres(bin_dir)
            started = (process, workdir)
            env[URL_VARIABLE] = f"postgres://postgres@{DEFAULT_HOST}:{port}/postgres"
            say(f"no PostgreSQL was reachable: started {bin_dir}/postgres on {DEFAULT_HOST}:{port} for this run")
    child = subprocess.Popen(argv, env=env)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if started is not None:
            stop_postgres(*started)
            say("stopped the PostgreSQL started for this run")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
