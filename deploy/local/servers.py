"""The servers of the deployment topology as local processes: PostgreSQL, Redis, nginx, `rasa run`.

Each one is a real server from the Debian packages (``postgresql``, ``redis-server``, ``nginx`` with
``libnginx-mod-http-js``), started on a free loopback port, its files in a folder of its own, its output
in a log file there. Every process runs in its own process group, so ``stop()`` ends it and whatever
it started (SIGTERM or the server's own fast-shutdown signal, then SIGKILL). Nothing here needs root;
run as root, PostgreSQL (which refuses root) runs as the ``postgres`` user (or ``nobody``) instead.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
NGINX_DIR = REPO / "deploy" / "nginx"
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest first
NGINX_JS_MODULES = [
    Path("/usr/lib/nginx/modules/ngx_http_js_module.so"),
    Path("/etc/nginx/modules/ngx_http_js_module.so"),
]


class TopologyError(RuntimeError):
    """A server could not be started (the message says which, why, and the end of its log)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            return response.status == 200 and b'"model_file":null' not in body.replace(b" ", b"")
    except (urllib.error.URLError, OSError):
        return False


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_binary(name: str, package: str, candidates: Sequence[Path] = ()) -> str:
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if not found:
        raise TopologyError(f"`{name}` is not installed. Install the Debian package: apt-get install -y {package}")
    return found


class Service:
    """One server process: started in its own process group, ready when ``ready()`` says so."""

    stop_signal = signal.SIGTERM

    def __init__(
        self,
        name: str,
        args: List[str],
        env: Dict[str, str],
        log: Path,
        ready: Callable[[], bool],
        cwd: Path = REPO,
        user: Optional[str] = None,
    ) -> None:
        self.name, self.args, self.env, self.log, self.ready, self.cwd, self.user = (
            name,
            args,
            env,
            log,
            ready,
            cwd,
            user,
        )
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 120.0) -> float:
        """Start the process and wait until it is ready; the seconds it took."""
        started = time.monotonic()
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                user=self.user,
            )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise TopologyError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.5)
        self.stop()
        raise TopologyError(f"{self.name} not ready after {timeout:.0f} s:\n{tail(self.log)}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (e.g. SIGKILL to kill a worker without warning)."""
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, self.stop_signal)  # our own process group only
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        else:  # it died (e.g. killed): collect what is left of its group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None


# ----------------------------------------------------------------------------------- PostgreSQL
def _unprivileged_user() -> Optional[str]:
    """None when not root; else the user PostgreSQL runs as (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise TopologyError("running as root, and neither a `postgres` nor a `nobody` user exists for PostgreSQL")


class Postgres(Service):
    """A PostgreSQL cluster of its own (initdb) on 127.0.0.1:port, password authentication, superuser ``user``.

    Its data folder is made directly under the system temp folder (not inside a private test folder), so that
    the unprivileged user it runs as when started by root can reach it. ``restart()`` keeps the data.
    """

    stop_signal = signal.SIGINT  # PostgreSQL's "fast" shutdown: ends sessions, checkpoints, exits

    def __init__(self, user: str = "rasa", database: str = "rasa", password: Optional[str] = None) -> None:
        self.port = free_port()
        self.user_name, self.database = user, database
        self.password = password or secrets.token_urlsafe(16)
        self.home = Path(tempfile.mkdtemp(prefix="nlu-bert-postgres-"))
        self.data = self.home / "data"
        self.os_user = _unprivileged_user()
        bindir = next((d for d in PG_BIN_DIRS if (d / "postgres").is_file()), None)
        if bindir is None:
            raise TopologyError(
                "PostgreSQL is not installed. Install the Debian package: apt-get install -y postgresql"
            )
        self.bindir = bindir
        if self.os_user:
            ids = pwd.getpwnam(self.os_user)
            os.chown(self.home, ids.pw_uid, ids.pw_gid)
        self._initdb()
        args = [
            str(bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.home}",
            "-c",
            "fsync=on",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        super().__init__(
            "postgres", args, env, self.home / "postgres.log", self._accepts, cwd=self.home, user=self.os_user
        )

    def _initdb(self) -> None:
        pwfile = self.home / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self.os_user:
            ids = pwd.getpwnam(self.os_user)
            os.chown(pwfile, ids.pw_uid, ids.pw_gid)
        os.chmod(pwfile, 0o600)
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user_name,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            cwd=self.home,
            capture_output=True,
            text=True,
            user=self.os_user,
            timeout=120,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise TopologyError(
                f"initdb failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )

    def _accepts(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def url(self, database: Optional[str] = None, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user_name}:{self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(self.url("postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


# ----------------------------------------------------------------------------------- Redis
class Redis(Service):
    """``redis-server`` on 127.0.0.1:port with a password, no persistence (it holds only locks)."""

    def __init__(self, folder: Path, password: Optional[str] = None) -> None:
        binary = require_binary("redis-server", "redis-server")
        self.port = free_port()
        self.password = password or secrets.token_urlsafe(16)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "redis.conf"  # the password in a file, not on the command line
        config.write_text(
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {folder}\nrequirepass {self.password}\n',
            encoding="utf-8",
        )
        os.chmod(config, 0o600)
        super().__init__("redis-server", [binary, str(config)], dict(os.environ), folder / "redis.log", self._pings)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def _pings(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.exceptions.RedisError:
            return False


# ----------------------------------------------------------------------------------- nginx
# After a failed request nginx sends a worker nothing for this long (deploy/nginx/upstream-servers.conf).
FAIL_TIMEOUT_S = 10


def render_nginx_config(source: Path, upstreams: Sequence[str], listen_port: int, folder: Path) -> str:
    """``deploy/nginx/nginx.conf`` (the compose file's load balancer) made runnable here: its upstream list a file
    of loopback addresses, its container paths this checkout's and ``folder``'s. Everything else, the
    conversation key, the hashing, the retries and timeouts, is the file itself."""
    text = source.read_text(encoding="utf-8")
    module = next((p for p in NGINX_JS_MODULES if p.is_file()), None)
    if module is None:
        raise TopologyError(
            "nginx's JavaScript module is not installed. Install the Debian package: apt-get install -y libnginx-mod-http-js"
        )
    servers = folder / "upstream-servers.conf"
    servers.write_text(
        "".join(f"server {a} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;\n" for a in upstreams), encoding="utf-8"
    )
    temp = {k: folder / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    local_paths = "".join(f"    {k}_temp_path {v};\n" for k, v in temp.items())
    local_paths += f"    access_log {folder / 'access.log'} conversation;\n"
    replacements = [
        ("load_module modules/ngx_http_js_module.so;", f"load_module {module};"),
        ("/etc/nginx/rasa/upstream-servers.conf", str(servers)),
        ("/etc/nginx/rasa/", f"{NGINX_DIR}/"),
        ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
        ("    access_log /dev/stdout conversation;\n", local_paths),
        ("error_log /dev/stderr warn;", f"error_log {folder / 'error.log'} warn;"),
        ("pid /tmp/nginx.pid;", f"pid {folder / 'nginx.pid'};"),
    ]
    for old, new in replacements:
        if old not in text:
            raise TopologyError(f"{source}: expected `{old.strip()}` (the local topology replaces it)")
        text = text.replace(old, new)
    return text


class Nginx(Service):
    """nginx in front of the workers, with ``deploy/nginx/nginx.conf`` (see ``render_nginx_config``)."""

    stop_signal = signal.SIGQUIT  # graceful: finish the requests in flight

    def __init__(self, folder: Path, upstreams: Sequence[str]) -> None:
        binary = require_binary("nginx", "nginx")
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # nginx's workers drop to `nobody`: let them write their temp files
            os.chmod(folder, 0o755)
        self.config = folder / "nginx.conf"
        self.config.write_text(
            render_nginx_config(NGINX_DIR / "nginx.conf", upstreams, self.port, folder), encoding="utf-8"
        )
        self._own_temp_dirs()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary, "-p", str(folder), "-c", str(self.config), "-g", "daemon off;"]
        super().__init__(
            "nginx", args, dict(os.environ), folder / "nginx.log", lambda: http_ok(f"{self.url}/nginx-health")
        )

    def _own_temp_dirs(self) -> None:
        if os.geteuid() != 0:
            return
        ids = pwd.getpwnam("nobody")
        for path in self.folder.iterdir():
            if path.is_dir():
                os.chown(path, ids.pw_uid, ids.pw_gid)

    def check_config(self) -> None:
        result = subprocess.run(
            [self.args[0], "-t", "-p", str(self.folder), "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise TopologyError(f"nginx -t failed:\n{result.stderr}")

    def access_log(self) -> List[Dict[str, str]]:
        """The access log's lines as dicts (the ``conversation`` log format: key=value pairs)."""
        path = self.folder / "access.log"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            rows.append(dict(re.findall(r'(\w+)="([^"]*)"', line)))
        return rows
