"""Run real `rasa` commands and servers from tests: free ports, readiness, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

RASA = str(Path(sys.executable).with_name("rasa"))
# the REST channel behind the RequestGuard, as the sample assistant runs it
GUARDED_CREDENTIALS = """
rest:
nlu_bert.http_guard.RequestGuard:
  max_text_chars: 5000
"""
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        RASA_TELEMETRY_ENABLED="false",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_rasa(args: Sequence[str], cwd: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [RASA, *args], cwd=str(cwd), env=test_env(**env), capture_output=True, text=True, timeout=timeout
    )
    return proc


def http(method: str, url: str, body: Any = None, raw: Optional[bytes] = None, timeout: float = 60) -> tuple:
    """(status, parsed JSON or text). Never raises on HTTP errors."""
    data = raw if raw is not None else (json.dumps(body).encode("utf-8") if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    text = payload.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def wait_until_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            status, body = http("GET", url, timeout=5)
            if status == 200 and (not isinstance(body, dict) or body.get("model_file", True)):
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def background(
    args: List[str], cwd: Path, log: Path, ready_url: Optional[str] = None, **env: str
) -> Iterator[subprocess.Popen]:
    """Start a process (its own process group), wait for ``ready_url``, stop it (SIGTERM, then SIGKILL)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args, cwd=str(cwd), env=test_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        if ready_url:
            wait_until_ready(ready_url, proc, log)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextmanager
def rasa_server(model: Path, cwd: Path, log: Path, extra_args: Sequence[str] = (), **env: str) -> Iterator[str]:
    """`rasa run --enable-api` on a free port; yields the base URL once `/status` reports the model."""
    port = free_port()
    args = [RASA, "run", "--enable-api", "--model", str(model), "--port", str(port), "-i", "127.0.0.1", *extra_args]
    url = f"http://127.0.0.1:{port}"
    with background(args, cwd, log, ready_url=f"{url}/status", **env):
        yield url
