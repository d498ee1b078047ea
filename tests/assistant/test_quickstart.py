"""`make run` and `make shell` (scripts/quickstart.sh) as a user runs them, on the session's model (NLU_BERT_MODEL):

* `run` listens on 127.0.0.1 only, puts Rasa's HTTP API behind a generated token (a file only its owner reads),
  allows the web chat page's origin and no other, and the page works;
* `shell` runs beside it: the ports `run` holds are taken, so it moves to free ones, talks to the assistant in a
  terminal (a pty), and leaves the logs of `run` alone;
* a second `run` on the same port says so and stops, again without touching the logs of the first.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import pytest

from assistant_helpers import REPO_ROOT, free_port, subprocess_env, tail
from rasa_process import http

pytestmark = pytest.mark.slow
SCRIPT = str(REPO_ROOT / "scripts" / "quickstart.sh")


@pytest.fixture(scope="module")
def quickstart_env(assistant_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    work = tmp_path_factory.mktemp("quickstart")
    return subprocess_env(
        NLU_BERT_MODEL=str(assistant_model),
        QUICKSTART_STATE=str(work / "state"),
        SHOP_DB_URL=f"sqlite:///{work / 'shop.db'}",
        TRACKER_DB=str(work / "tracker.db"),
        RASA_PORT=str(free_port()),
        ACTIONS_PORT=str(free_port()),
        TERM="xterm",
    )


@pytest.fixture(scope="module")
def make_run(quickstart_env: Dict[str, str]) -> Iterator[Dict[str, str]]:
    state = Path(quickstart_env["QUICKSTART_STATE"])
    state.mkdir(parents=True)
    out = state.parent / "make_run.out"
    with out.open("wb") as handle:
        proc = subprocess.Popen(
            ["bash", SCRIPT, "run"],
            cwd=REPO_ROOT,
            env=quickstart_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while "ready." not in out.read_text(encoding="utf-8", errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, tail(out, 60)
            time.sleep(1)
        yield {"url": f"http://127.0.0.1:{quickstart_env['RASA_PORT']}", "out": str(out), "state": str(state)}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the script stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def listening_addresses(port: int) -> set:
    """Local addresses with a listening TCP socket on ``port`` (Linux /proc/net/tcp{,6})."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for line in Path(name).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_make_run_serves_on_localhost_with_the_api_behind_a_token(
    make_run: Dict[str, str], quickstart_env: Dict[str, str]
) -> None:
    url, state = make_run["url"], Path(make_run["state"])
    if os.path.exists("/proc/net/tcp"):
        assert listening_addresses(int(quickstart_env["RASA_PORT"])) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
    token_file = state / "api_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert http("GET", f"{url}/conversations/someone/tracker")[0] == 401
    assert http("POST", f"{url}/model/parse", {"text": "你好"})[0] == 401
    assert http("POST", f"{url}/model/parse?token={token}", {"text": "你好"})[0] == 200
    # the channels and the web chat page need no token
    status, replies = http("POST", f"{url}/webhooks/rest/webhook", {"sender": "quickstart", "message": "你好"})
    assert status == 200 and "小禾" in replies[0]["text"]
    assert json.load(urllib.request.urlopen(f"{url}/webhooks/webchat/status"))["model_loaded"] is True
    for origin, allowed in ((f"http://localhost:{quickstart_env['RASA_PORT']}", True), ("http://evil.example", False)):
        request = urllib.request.Request(f"{url}/webhooks/webchat/status", headers={"Origin": origin})
        with urllib.request.urlopen(request) as response:
            assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed
    assert "token in" in Path(make_run["out"]).read_text(encoding="utf-8") and token not in Path(
        make_run["out"]
    ).read_text(encoding="utf-8")


def read_until(fd: int, pattern: str, timeout: float) -> str:
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, seen.decode("utf-8", errors="replace")):
                return seen.decode("utf-8", errors="replace")
    raise AssertionError(
        f"no {pattern!r} within {timeout:.0f} s; output:\n{seen.decode('utf-8', errors='replace')[-3000:]}"
    )


def test_make_shell_beside_make_run(make_run: Dict[str, str], quickstart_env: Dict[str, str]) -> None:
    run_logs = Path(make_run["state"]) / "run"
    before = {name: (run_logs / name).read_bytes() for name in ("actions.log", "rasa.log")}
    master, slave = pty.openpty()
    shell = subprocess.Popen(
        ["bash", SCRIPT, "shell"],
        cwd=REPO_ROOT,
        env=quickstart_env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        started = read_until(master, r"Your input ->", 600)
        assert f"port {quickstart_env['ACTIONS_PORT']} is taken" in started
        assert f"port {quickstart_env['RASA_PORT']} is taken" in started
        os.write(master, "你好\r".encode("utf-8"))
        assert "小禾" in read_until(master, "小禾", 120)
        os.write(master, b"/stop\r")
        shell.wait(timeout=120)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=10)
        os.close(master)
    assert (Path(make_run["state"]) / "shell" / "actions.log").exists()
    for name, old in before.items():  # the logs of `make run` were not truncated, only appended to
        assert (run_logs / name).read_bytes()[: len(old)] == old, name
    status, replies = http(
        "POST", f"{make_run['url']}/webhooks/rest/webhook", {"sender": "after-shell", "message": "你好"}
    )
    assert status == 200 and "小禾" in replies[0]["text"]  # make run still serves


def test_a_second_make_run_on_the_same_port_stops_with_a_reason(
    make_run: Dict[str, str], quickstart_env: Dict[str, str]
) -> None:
    run_logs = Path(make_run["state"]) / "run"
    before = (run_logs / "actions.log").read_bytes()
    result = subprocess.run(
        ["bash", SCRIPT, "run"], cwd=REPO_ROOT, env=quickstart_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"port {quickstart_env['RASA_PORT']} is taken" in result.stderr
    assert (run_logs / "actions.log").read_bytes()[: len(before)] == before
