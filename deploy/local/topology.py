"""The deployment topology of deploy/docker-compose.yml, run on this machine from the Debian packages.

PostgreSQL (tracker store and shop database), Redis (lock store), the action server, N `rasa run` workers
and nginx in front of them, sticky on the conversation id, all on 127.0.0.1 and free ports, each in a
temporary folder. The workers run ``rasa_project/endpoints.production.yml`` and
``rasa_project/credentials.yml`` exactly as the containers do; nginx runs ``deploy/nginx/nginx.conf``.
The tests, the load benchmark and people use it::

    .venv/bin/python deploy/local/topology.py                    # 2 workers, the offline sample assistant
    .venv/bin/python deploy/local/topology.py --workers 3 --model models/assistant-offline.tar.gz

It prints the URL of nginx and of each worker with its process id (``kill -9 <pid>`` one in the middle of a
conversation and talk on), and stops everything on Ctrl-C. Needs: apt-get install -y postgresql redis-server
nginx libnginx-mod-http-js.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make `deploy.local` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy.local.servers import (  # noqa: E402
    FAIL_TIMEOUT_S,
    REPO,
    Nginx,
    Postgres,
    Redis,
    Service,
    TopologyError,
    free_port,
    http_ok,
    tail,
)

PYTHON = sys.executable
ENDPOINTS = REPO / "rasa_project" / "endpoints.production.yml"
CREDENTIALS = REPO / "rasa_project" / "credentials.yml"
ASSISTANT_DATA = [REPO / "data" / name for name in ("nlu.yml", "stories.yml", "rules.yml")]
OFFLINE_CONFIG = REPO / "config.offline.yml"
DEFAULT_MODEL = REPO / "models" / "assistant-offline.tar.gz"
# How long a conversation's Redis lock outlives a worker that died holding it (Rasa's default: 60 s). Longer
# than the slowest message; nginx's proxy_read_timeout (120 s) is longer still.
LOCK_LIFETIME = 20


def server_env(threads: int = 1, **extra: str) -> Dict[str, str]:
    """The environment of the `rasa` processes: this checkout importable, no hub, quiet, bounded threads."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TF_CPP_MIN_LOG_LEVEL="3",
        RASA_TELEMETRY_ENABLED="false",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        PYTHONWARNINGS="ignore",
    )
    if threads > 0:  # several workers share the cores: each computes on `threads` of them
        env.update(
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            TF_INTRA_OP_PARALLELISM_THREADS=str(threads),
            TF_INTER_OP_PARALLELISM_THREADS=str(threads),
        )
    env.update(extra)
    return env


def sample_assistant_model(
    model: Optional[Path] = None, out: Path = DEFAULT_MODEL, retrain: bool = False, threads: int = 1
) -> Path:
    """``model`` if given; else the sample assistant trained with the offline profile into ``out`` (again only
    when it is missing or older than config.offline.yml, domain.yml or data/{nlu,stories,rules}.yml)."""
    if model is not None:
        if not Path(model).is_file():
            raise TopologyError(f"--model {model}: no such file")
        return Path(model).resolve()
    inputs = [OFFLINE_CONFIG, REPO / "domain.yml", *ASSISTANT_DATA]
    if not retrain and out.is_file() and all(p.stat().st_mtime <= out.stat().st_mtime for p in inputs):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / (out.name.replace(".tar.gz", "") + ".train.log")
    print(f"[topology] training the sample assistant ({OFFLINE_CONFIG.name}) into {out} (log: {log}) ...", flush=True)
    with log.open("wb") as handle:
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "rasa",
                "train",
                "--config",
                str(OFFLINE_CONFIG),
                "--domain",
                str(REPO / "domain.yml"),
                "--data",
                *map(str, ASSISTANT_DATA),
                "--out",
                str(out.parent),
                "--fixed-model-name",
                out.name.replace(".tar.gz", ""),
            ],
            cwd=REPO,
            env=server_env(threads),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if result.returncode != 0 or not out.is_file():
        raise TopologyError(f"rasa train failed ({result.returncode}):\n{tail(log)}")
    return out


class Worker(Service):
    """One `rasa run` worker: the HTTP API, the assistant's channels, endpoints.production.yml."""

    def __init__(
        self,
        index: int,
        model: Path,
        folder: Path,
        env: Dict[str, str],
        endpoints: Path,
        credentials: Path,
        auth_token: Optional[str] = None,
        module: str = "rasa",
    ) -> None:
        self.index, self.port = index, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            PYTHON,
            "-m",
            module,
            "run",
            "--enable-api",
            "--model",
            str(model),
            "--endpoints",
            str(endpoints),
            "--credentials",
            str(credentials),
            "--port",
            str(self.port),
            "--interface",
            "127.0.0.1",
        ]
        if auth_token:
            args += [f"--auth-token={auth_token}"]  # one argument: a token may begin with "-"
        token = f"?token={auth_token}" if auth_token else ""
        super().__init__(
            f"rasa run (worker {index})",
            args,
            env,
            folder / f"rasa-{index}.log",
            lambda: http_ok(f"{self.url}/status{token}"),
        )


class Topology:
    """Start with ``start()`` (or ``with Topology(...) as t``); everything stops in ``stop()``."""

    def __init__(
        self,
        model: Path,
        workers: int = 2,
        folder: Optional[Path] = None,
        threads: int = 1,
        lock_lifetime: int = LOCK_LIFETIME,
        endpoints: Path = ENDPOINTS,
        credentials: Path = CREDENTIALS,
        auth_token: Optional[str] = None,
        worker_env: Optional[Dict[str, str]] = None,
        start_timeout: float = 300.0,
        worker_module: str = "rasa",
    ) -> None:
        if workers < 1:
            raise TopologyError(f"workers must be ≥ 1, got {workers}")
        self.model, self.n_workers, self.threads = Path(model).resolve(), workers, threads
        self.own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="nlu-bert-topology-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock_lifetime, self.endpoints, self.credentials = lock_lifetime, endpoints, credentials
        self.auth_token, self.worker_env, self.start_timeout = auth_token, dict(worker_env or {}), start_timeout
        self.worker_module = worker_module  # `python -m <module> run ...`: rasa, or a wrapper of it
        self.postgres: Optional[Postgres] = None
        self.redis: Optional[Redis] = None
        self.actions: Optional[Service] = None
        self.workers: List[Worker] = []
        self.nginx: Optional[Nginx] = None
        self.startup_s: Dict[str, float] = {}

    # ------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Topology":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Topology":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.postgres = Postgres(database="rasa")
        self.startup_s["postgres"] = self.postgres.start(60)
        self.postgres.create_database("rasa")
        self.postgres.create_database("shop")
        shop_url = self.postgres.url("shop", driver="postgresql+psycopg2")
        subprocess.run(
            [PYTHON, "-m", "rasa_project.db", "init", "--url", shop_url],
            cwd=REPO,
            env=server_env(self.threads),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.redis = Redis(self.folder / "redis")
        self.startup_s["redis"] = self.redis.start(30)
        actions_port = free_port()
        self.actions = Service(
            "rasa run actions",
            [PYTHON, "-m", "rasa", "run", "actions", "--actions", "rasa_project.actions", "--port", str(actions_port)],
            server_env(self.threads, SHOP_DB_URL=shop_url),
            self.folder / "actions.log",
            lambda: http_ok(f"http://127.0.0.1:{actions_port}/health"),
        )
        self.actions_url = f"http://127.0.0.1:{actions_port}/webhook"
        self.startup_s["actions"] = self.actions.start(self.start_timeout)
        self.workers = [self._make_worker(i + 1) for i in range(self.n_workers)]
        with ThreadPoolExecutor(len(self.workers)) as pool:
            times = list(pool.map(lambda w: w.start(self.start_timeout), self.workers))
        for worker, seconds in zip(self.workers, times):
            self.startup_s[f"worker {worker.index}"] = seconds
        self.nginx = Nginx(self.folder / "nginx", [f"127.0.0.1:{w.port}" for w in self.workers])
        self.nginx.check_config()
        self.startup_s["nginx"] = self.nginx.start(30)

    def worker_environment(self) -> Dict[str, str]:
        """What endpoints.production.yml reads, as the compose file sets it."""
        pg, redis = self.postgres, self.redis
        return server_env(
            self.threads,
            ACTION_SERVER_URL=self.actions_url,
            DB_HOST="127.0.0.1",
            DB_PORT=str(pg.port),
            DB_NAME="rasa",
            DB_USER=pg.user_name,
            DB_PASSWORD=pg.password,
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(redis.port),
            REDIS_PASSWORD=redis.password,
            TICKET_LOCK_LIFETIME=str(self.lock_lifetime),
            **self.worker_env,
        )

    def _make_worker(self, index: int) -> Worker:
        return Worker(
            index,
            self.model,
            self.folder,
            self.worker_environment(),
            self.endpoints,
            self.credentials,
            self.auth_token,
            self.worker_module,
        )

    def stop(self) -> None:
        for service in [self.nginx, *reversed(self.workers), self.actions, self.redis]:
            if service is not None:
                service.stop()
        if self.postgres is not None:
            self.postgres.remove()
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------------------- faults
    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Kill worker ``index`` (1-based) without warning; its port stays closed until ``start_worker``."""
        worker = self.workers[index - 1]
        worker.signal(sig)
        worker.proc.wait(timeout=30)

    def start_worker(self, index: int) -> None:
        """Start worker ``index`` again on its port; returns once nginx sends it requests again (its last
        failed request, made while it was down, is older than fail_timeout)."""
        self.workers[index - 1].stop()
        self.workers[index - 1].start(self.start_timeout)
        time.sleep(FAIL_TIMEOUT_S)

    def restart_postgres(self, down_seconds: float = 0.0) -> None:
        self.postgres.restart(down_seconds)

    # ------------------------------------------------------------------------------- facts
    @property
    def url(self) -> str:
        return self.nginx.url

    def describe(self) -> str:
        lines = [f"nginx (sticky on the conversation id)  {self.nginx.url}   pid {self.nginx.pid}"]
        for worker in self.workers:
            lines.append(
                f"worker {worker.index}: rasa run                  {worker.url}   pid {worker.pid}   log {worker.log}"
            )
        lines += [
            f"action server                         {self.actions_url}   pid {self.actions.pid}",
            f"PostgreSQL (tracker store, shop)      {self.postgres.url('rasa')}   pid {self.postgres.pid}",
            f"Redis (lock store)                    redis://:{self.redis.password}@127.0.0.1:{self.redis.port}/1   pid {self.redis.pid}",
            f"files and logs                        {self.folder}  (nginx access log: {self.nginx.folder / 'access.log'})",
        ]
        return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        help=f"a trained assistant (default: {DEFAULT_MODEL.relative_to(REPO)}, trained when missing)",
    )
    parser.add_argument("--workers", type=int, default=2, help="`rasa run` workers behind nginx")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per worker (0: the libraries' default)")
    parser.add_argument(
        "--lock-lifetime", type=int, default=LOCK_LIFETIME, help="TICKET_LOCK_LIFETIME of the workers (s)"
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("RASA_AUTH_TOKEN"),
        help="token of the workers' HTTP API (default: $RASA_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        help="where the servers keep their files and logs (default: a new temp folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    try:
        model = sample_assistant_model(args.model, threads=args.threads)
        topology = Topology(
            model, args.workers, args.folder, args.threads, args.lock_lifetime, auth_token=args.auth_token
        )
        print(
            f"[topology] starting PostgreSQL, Redis, the action server, {args.workers} workers and nginx with {model} ...",
            flush=True,
        )
        topology.start()
    except TopologyError as e:
        print(f"[topology] {e}", file=sys.stderr)
        return 1
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(topology.describe(), flush=True)
        print(
            f'[topology] ready: curl -s {topology.url}/webhooks/rest/webhook -d \'{{"sender": "me", "message": "你好"}}\'',
            flush=True,
        )
        print("[topology] Ctrl-C stops everything", flush=True)
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        print("[topology] stopping ...", flush=True)
        topology.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
