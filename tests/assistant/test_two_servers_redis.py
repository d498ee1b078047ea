"""Two `rasa run` processes, one conversation: rasa_project/endpoints.redis.yml (shared SQLite tracker
store + Redis lock store) keeps every turn, once, in order, with its reply.

The test starts its own ``redis-server`` on a free port (no persistence) and two real `rasa run`
processes on the session's assistant model. It takes the conversation's lock in Redis itself (a
third client of the same RedisLockStore), sends the conversation's messages alternately to the two
servers, 0.3 s apart, checks that neither server handles any of them while the lock is held, then
lets go: the servers must take turns in ticket order. Without a shared lock (the default in-memory
lock store) both processes would handle their messages at once, read the same tracker, and the SQL
tracker store would keep only the tail of one of the turns (what happens is shown in
docs/reliability.md).

Messages are sent 0.3 s apart on purpose: Rasa 3.6's RedisLockStore issues tickets with a GET and
a SET that are not atomic, so messages of one conversation that reach two processes in the same
millisecond can get the same ticket (RasaHQ/rasa#9213): sent all at once to two servers, all 8 user
messages of one conversation were in the tracker in two runs of three, and in the third only 3 of
the 8 were left. Route one conversation to one process (sticky sessions) in production.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from assistant_helpers import PYTHON, REPO_ROOT, Process, free_port, http_json, subprocess_env, tail

pytestmark = pytest.mark.slow

ENDPOINTS = REPO_ROOT / "rasa_project" / "endpoints.redis.yml"
# Training sentences of intents that always get a reply (rules.yml), one through the action server.
MESSAGES = ["你好", "谢谢", "你们几点下班", "给我讲个笑话", "蓝牙耳机多少钱", "周末有客服吗", "非常感谢", "再见"]


@pytest.fixture(scope="session")  # session scope: set up (or skipped) before the session's trained model
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run installs it)")
    import redis

    tmp_path = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = tmp_path / "redis.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{tail(log)}") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _create_tracker_tables(db: Path) -> None:
    """The SQL tracker store's schema, made once before two processes would both try to make it."""
    from rasa.core.tracker_store import SQLTrackerStore

    SQLTrackerStore(dialect="sqlite", db=str(db))


def _turns(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The tracker's events as turns: each user message with the bot texts that follow it."""
    turns: List[Dict[str, Any]] = []
    for event in events:
        if event["event"] == "user":
            turns.append({"text": event.get("text"), "bot": []})
        elif event["event"] == "bot" and turns:
            turns[-1]["bot"].append(event.get("text"))
    return turns


def test_one_conversation_across_two_servers_keeps_every_turn_once_and_in_order(
    redis_port: int, assistant_model: Path, action_server: str, tmp_path: Path, sender: str
) -> None:
    import redis
    import yaml
    from rasa.core.lock_store import RedisLockStore

    tracker_db = tmp_path / "tracker.db"
    _create_tracker_tables(tracker_db)
    env = subprocess_env(
        ACTION_SERVER_URL=action_server,
        TRACKER_DB=str(tracker_db),
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_port),
        REDIS_DB="0",
    )
    servers = []
    for name in ("a", "b"):
        port = free_port()
        args = [
            PYTHON,
            "-m",
            "rasa",
            "run",
            "--enable-api",
            "--model",
            str(assistant_model),
            "--endpoints",
            str(ENDPOINTS),
            "--credentials",
            str(REPO_ROOT / "rasa_project" / "credentials.yml"),
            "--port",
            str(port),
            "--interface",
            "127.0.0.1",
        ]
        servers.append(
            Process(f"rasa run {name}", args, env, tmp_path / f"rasa_{name}.log", f"http://127.0.0.1:{port}/status")
        )
    urls = [s.ready_url.rsplit("/", 1)[0] for s in servers]
    key_prefix = yaml.safe_load(ENDPOINTS.read_text(encoding="utf-8"))["lock_store"]["key_prefix"]
    locks = RedisLockStore(host="127.0.0.1", port=redis_port, db=0, key_prefix=key_prefix)
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(timeout=300), servers))

        def say(index: int) -> List[Dict[str, Any]]:
            url = urls[index % 2]  # alternately to the two servers
            return http_json(
                "POST", f"{url}/webhooks/rest/webhook", {"sender": sender, "message": MESSAGES[index]}, timeout=120
            )

        held = locks.issue_ticket(sender)  # the test holds the conversation's lock
        with ThreadPoolExecutor(len(MESSAGES)) as pool:
            pending = []
            for index in range(len(MESSAGES)):
                pending.append(pool.submit(say, index))
                time.sleep(0.3)
            time.sleep(0.15)  # between two of the servers' 1 s polls
            handled_while_held = [MESSAGES[i] for i, f in enumerate(pending) if f.done()]
            events_while_held = http_json("GET", f"{urls[1]}/conversations/{sender}/tracker")["events"]
            locks.cleanup(sender, held)  # let go: the servers take turns
            replies = [f.result(timeout=180) for f in pending]

        assert not handled_while_held, f"handled while another client held the Redis lock: {handled_while_held}"
        assert not any(e["event"] == "user" for e in events_while_held), events_while_held
        assert redis.Redis(host="127.0.0.1", port=redis_port).dbsize() == 0, "a lock was left behind in Redis"
        for message, reply in zip(MESSAGES, replies):
            assert reply and all(r.get("recipient_id") == sender for r in reply), f"no reply to {message!r}: {reply}"

        trackers = [http_json("GET", f"{url}/conversations/{sender}/tracker") for url in urls]
        assert trackers[0]["events"] == trackers[1]["events"], "the two servers see different conversations"
        events = trackers[0]["events"]
        turns = _turns(events)
        texts = [t["text"] for t in turns]
        assert sorted(texts) == sorted(MESSAGES), f"user messages lost or duplicated: {texts}"
        assert texts == MESSAGES, f"not in ticket (= sending) order: {texts}"
        # each turn is whole: the bot texts right after a message are exactly the reply its request got
        for turn, reply in zip(turns, replies):
            assert turn["bot"] == [r.get("text") for r in reply], f"turn {turn['text']!r} interleaved: {turn['bot']}"
        timestamps = [e["timestamp"] for e in events]
        assert timestamps == sorted(timestamps), "events out of order in the tracker store"
        assert sum(e["event"] == "session_started" for e in events) == 1, "the session was started twice"
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            print(f"--- {server.name}\n{tail(server.log, 15)}")
