"""The deployment topology for real: PostgreSQL, Redis, the action server, two `rasa run` workers and nginx
in front of them (deploy/local/topology.py, the Debian packages; the same nginx.conf and endpoints file as
deploy/docker-compose.yml), on the session's assistant model.

* a conversation whose messages go to both workers keeps every turn, once, in order;
* through nginx, every message of a conversation goes to one worker (the REST body's `sender`), and the
  HTTP API's /conversations/<id>/ and an X-Conversation-Id header go to the same one;
* a worker killed without warning while conversations are under way: every message gets its answer through
  the other worker and every tracker is complete and in order;
* a worker killed after it stored a message's turn and before it answered: nginx's retry on the other worker
  (the same X-Request-ID) gets the stored replies and the turn is stored once; a client that sends a message
  again with its own X-Request-ID gets the same answer, and the turn is not handled twice;
* socket.io through nginx, with the polling transport (its requests must all reach one worker) and websockets;
* PostgreSQL restarted (and down while a message arrives): the conversations are all there and go on.

One topology serves the module (starting it takes a minute); the tests run in file order and each leaves
both workers up.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from assistant_helpers import http_json

pytestmark = pytest.mark.slow

# Training sentences of intents that always get a reply (rules.yml), one of them through the action server.
MESSAGES = ["你好", "你们几点下班", "给我讲个笑话", "蓝牙耳机多少钱", "周末有客服吗", "谢谢", "非常感谢", "再见"]
LOCK_LIFETIME = 10  # s: how long the lock of a conversation outlives a worker killed while holding it
# The workers run tests/assistant/worker_dies_after_save.py: a worker that stores the turn of this text dies.
DIES_AFTER_SAVE = "这句话存下以后服务器就断了"


def _missing_servers() -> List[str]:
    import shutil

    from deploy.local.servers import NGINX_JS_MODULES, PG_BIN_DIRS

    missing = [
        p
        for p, ok in (
            ("postgresql", any((d / "postgres").is_file() for d in PG_BIN_DIRS)),
            ("redis-server", shutil.which("redis-server")),
            ("nginx", shutil.which("nginx")),
            ("libnginx-mod-http-js", any(p.is_file() for p in NGINX_JS_MODULES)),
        )
        if not ok
    ]
    return missing


@pytest.fixture(scope="module")
def topology(assistant_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = _missing_servers()
    if missing:
        pytest.skip(
            f"not installed: {', '.join(missing)} (apt-get install -y {' '.join(missing)}; .ci/run installs them)"
        )
    from deploy.local.topology import Topology

    folder = tmp_path_factory.mktemp("topology")
    with Topology(
        assistant_model,
        workers=2,
        folder=folder,
        lock_lifetime=LOCK_LIFETIME,
        worker_module="tests.assistant.worker_dies_after_save",
        worker_env={"NLU_BERT_DIE_AFTER_SAVE": DIES_AFTER_SAVE},
    ) as running:
        yield running


def say(base: str, sender: str, text: str) -> List[Dict[str, Any]]:
    return http_json("POST", f"{base}/webhooks/rest/webhook", {"sender": sender, "message": text}, timeout=180)


def say_with_id(base: str, sender: str, text: str, request_id: str) -> List[Dict[str, Any]]:
    request = urllib.request.Request(
        f"{base}/webhooks/rest/webhook",
        data=json.dumps({"sender": sender, "message": text}).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=180) as response:
        return json.loads(response.read())


def parse_for(base: str, sender: str, text: str) -> Dict[str, Any]:
    """/model/parse with the conversation named in an X-Conversation-Id header."""
    request = urllib.request.Request(
        f"{base}/model/parse",
        data=json.dumps({"text": text}).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "X-Conversation-Id": sender},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def tracker(base: str, sender: str) -> Dict[str, Any]:
    return http_json("GET", f"{base}/conversations/{sender}/tracker", timeout=60)


def turns(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The tracker's events as turns: each user message with the bot texts that follow it."""
    out: List[Dict[str, Any]] = []
    for event in events:
        if event["event"] == "user":
            out.append({"text": event.get("text"), "bot": []})
        elif event["event"] == "bot" and out:
            out[-1]["bot"].append(event.get("text"))
    return out


def assert_whole(
    events: List[Dict[str, Any]], sent: List[str], replies: List[List[Dict[str, Any]]], sender: str
) -> None:
    """Every message once, in sending order, each followed by exactly the reply its request got."""
    got = turns(events)
    assert [t["text"] for t in got] == sent, (
        f"{sender}: user messages lost, duplicated or out of order: {[t['text'] for t in got]}"
    )
    for turn, reply in zip(got, replies):
        assert reply, f"{sender}: no reply to {turn['text']!r}"
        assert all(r.get("recipient_id") == sender for r in reply), reply
        assert turn["bot"] == [r.get("text") for r in reply], (
            f"{sender}: turn {turn['text']!r} holds {turn['bot']}, the reply was {reply}"
        )
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps), f"{sender}: events out of order"
    assert sum(e["event"] == "session_started" for e in events) == 1, (
        f"{sender}: the session was started more than once"
    )


def stored_events(topology: Any, sender: str) -> List[str]:
    """The event types PostgreSQL holds for ``sender``, in the order of their ids (what every worker reads)."""
    import psycopg2

    with psycopg2.connect(topology.postgres.url("rasa")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT type_name FROM events WHERE sender_id = %s ORDER BY id", (sender,))
        return [row[0] for row in cursor.fetchall()]


def upstream_of(topology: Any) -> Dict[str, set]:
    """Conversation key -> the workers nginx sent its requests to (from its access log)."""
    ports = {f"127.0.0.1:{w.port}": w.index for w in topology.workers}
    out: Dict[str, set] = {}
    for row in topology.nginx.access_log():
        if row.get("key", "").startswith("conversation:"):
            for address in row.get("upstream", "").replace(" ", "").split(","):
                if address in ports:
                    out.setdefault(row["key"][len("conversation:") :], set()).add(ports[address])
    return out


def logged_rows(topology: Any, sender: str, n: int) -> List[Dict[str, str]]:
    """nginx's access log rows of ``sender``, once there are ``n`` (nginx logs a request after its answer left)."""
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in topology.nginx.access_log() if r.get("key") == f"conversation:{sender}"]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def new_sender(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------------------- tests
def test_a_conversation_alternating_between_the_two_workers_keeps_every_turn(topology: Any) -> None:
    workers = [w.url for w in topology.workers]
    senders = [new_sender("both") for _ in range(3)]
    replies: Dict[str, List[List[Dict[str, Any]]]] = {s: [] for s in senders}
    for index, text in enumerate(MESSAGES):
        for sender in senders:  # message i of every conversation to worker i % 2, directly
            replies[sender].append(say(workers[index % 2], sender, text))
    for sender in senders:
        views = [tracker(url, sender)["events"] for url in [*workers, topology.url]]
        assert views[0] == views[1] == views[2], f"{sender}: the workers and nginx see different conversations"
        assert_whole(views[0], MESSAGES, replies[sender], sender)
        assert stored_events(topology, sender) == [e["event"] for e in views[0]]


def test_nginx_sends_every_message_of_a_conversation_to_one_worker(topology: Any) -> None:
    senders = [new_sender("sticky") for _ in range(16)]
    replies: Dict[str, List[List[Dict[str, Any]]]] = {s: [] for s in senders}

    def converse(sender: str) -> None:
        for text in MESSAGES[:3]:
            replies[sender].append(say(topology.url, sender, text))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(converse, senders))
    for sender in senders:  # the HTTP API and the explicit header are hashed like the body's sender
        tracker(topology.url, sender)
        assert parse_for(topology.url, sender, "你好")["intent"]["name"]
    routes = upstream_of(topology)
    assert all(len(routes[s]) == 1 for s in senders), {s: routes[s] for s in senders}
    assert {w for s in senders for w in routes[s]} == {1, 2}, "16 conversations and all of them on one worker"
    for sender in senders:
        assert_whole(tracker(topology.url, sender)["events"], MESSAGES[:3], replies[sender], sender)


def test_a_worker_killed_mid_conversation_loses_nothing(topology: Any) -> None:
    senders = [new_sender("kill") for _ in range(6)]
    replies: Dict[str, List[List[Dict[str, Any]]]] = {s: [] for s in senders}
    sent_half = len(MESSAGES) // 2
    killed: Dict[str, Any] = {}

    def kill_the_busier_worker() -> None:
        """Runs once every conversation is half way, before any of them goes on."""
        for sender in senders:  # nginx logs a request just after its answer left
            logged_rows(topology, sender, sent_half)
        killed["routes"] = routes = upstream_of(topology)
        counts = {w.index: sum(routes.get(s) == {w.index} for s in senders) for w in topology.workers}
        killed["victim"] = max(counts, key=counts.get)
        topology.kill_worker(killed["victim"], signal.SIGKILL)
        killed["at"] = time.monotonic()

    half = threading.Barrier(len(senders), action=kill_the_busier_worker, timeout=300)

    def converse(sender: str) -> None:
        for index, text in enumerate(MESSAGES):
            if index == sent_half:
                half.wait()
            replies[sender].append(say(topology.url, sender, text))

    try:
        with ThreadPoolExecutor(len(senders)) as pool:
            for future in [pool.submit(converse, s) for s in senders]:
                future.result(timeout=600)
        victim, routes = killed["victim"], killed["routes"]
        moved = [s for s in senders if routes.get(s) == {victim}]
        assert moved, f"no conversation was on worker {victim}: {routes}"
        survivor = next(w for w in topology.workers if w.index != victim)
        for sender in senders:
            events = tracker(survivor.url, sender)["events"]
            assert_whole(events, MESSAGES, replies[sender], sender)
        after = upstream_of(topology)
        for sender in moved:  # continued through the other worker
            assert survivor.index in after[sender], after[sender]
        print(
            f"\n[topology] worker {victim} killed with {len(moved)} of {len(senders)} conversations on it; "
            f"all finished {time.monotonic() - killed['at']:.1f} s later"
        )
    finally:
        if "victim" in killed:  # the next tests need both workers
            topology.start_worker(killed["victim"])
    assert_whole(tracker(topology.workers[victim - 1].url, moved[0])["events"], MESSAGES, replies[moved[0]], moved[0])


def test_a_message_retried_after_its_turn_was_stored_is_answered_once(topology: Any) -> None:
    sender = new_sender("stored")
    replies = [say(topology.url, sender, MESSAGES[0])]
    ports = {f"127.0.0.1:{w.port}": w.index for w in topology.workers}
    answered_by = logged_rows(topology, sender, 1)[0]["upstream"].replace(" ", "").split(",")[-1]
    victim = ports[answered_by]
    survivor = next(w for w in topology.workers if w.index != victim)
    started = time.monotonic()
    # the victim stores this turn and dies before answering; nginx sends the request to the survivor
    try:
        replies.append(say(topology.url, sender, DIES_AFTER_SAVE))
        assert not topology.workers[victim - 1].alive(), "the worker did not die after storing the turn"
        events = tracker(survivor.url, sender)["events"]
        assert_whole(events, [MESSAGES[0], DIES_AFTER_SAVE], replies, sender)
        assert stored_events(topology, sender) == [e["event"] for e in events]
        retried = logged_rows(topology, sender, 2)[1]
        assert len(retried["upstream"].split(",")) == 2, retried  # tried on the victim, answered by the survivor
        print(f"\n[topology] retried message answered from the stored turn in {time.monotonic() - started:.1f} s")
    finally:  # the next tests need both workers
        if not topology.workers[victim - 1].alive():
            topology.start_worker(victim)

    # a client's own retry (same X-Request-ID), on either worker, gets the same answer and stores nothing
    request_id = uuid.uuid4().hex
    first = say_with_id(topology.url, sender, MESSAGES[1], request_id)
    again = [say_with_id(w.url, sender, MESSAGES[1], request_id) for w in topology.workers]
    assert again == [first, first]
    other = say_with_id(topology.url, sender, MESSAGES[1], uuid.uuid4().hex)  # a new id is a new message
    events = tracker(topology.url, sender)["events"]
    assert_whole(events, [MESSAGES[0], DIES_AFTER_SAVE, MESSAGES[1], MESSAGES[1]], [*replies, first, other], sender)
    user_ids = [e["metadata"].get("request_id") for e in events if e["event"] == "user"]
    assert user_ids[2] == request_id and len(set(user_ids)) == 4, user_ids


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_socketio_conversations_through_nginx(topology: Any, transport: str) -> None:
    from socketio_client import ChatClient

    async def talk() -> Tuple[str, List[List[Dict[str, Any]]]]:
        client = ChatClient(topology.url, transports=[transport])
        try:
            session = await client.connect()
            return session, [await client.say(text) for text in MESSAGES[:3]]
        finally:
            await client.close()

    session, replies = asyncio.run(talk())
    assert all(replies), replies
    got = turns(tracker(topology.url, session)["events"])
    assert [t["text"] for t in got] == MESSAGES[:3]
    assert [t["bot"] for t in got] == [[r.get("text") for r in reply] for reply in replies]


def test_postgres_restart_keeps_every_conversation(topology: Any) -> None:
    senders = [new_sender("pg") for _ in range(4)]
    replies: Dict[str, List[List[Dict[str, Any]]]] = {s: [] for s in senders}
    for sender in senders:
        for text in MESSAGES[:3]:
            replies[sender].append(say(topology.url, sender, text))
    before = {s: tracker(topology.url, s)["events"] for s in senders}

    topology.restart_postgres()  # every pooled connection of both workers is dead now
    for sender in senders:
        assert tracker(topology.url, sender)["events"] == before[sender], f"{sender} changed across the restart"
        for text in MESSAGES[3:5]:
            replies[sender].append(say(topology.url, sender, text))

    # a message that arrives while PostgreSQL is down waits for it (ResilientSQLTrackerStore's retries)
    late = senders[0]
    topology.postgres.stop()
    restarter = threading.Timer(3.0, topology.postgres.start)
    restarter.start()
    try:
        replies[late].append(say(topology.url, late, MESSAGES[5]))
    finally:
        restarter.join()
    for sender in senders:
        sent = MESSAGES[:6] if sender == late else MESSAGES[:5]
        events = tracker(topology.url, sender)["events"]
        assert_whole(events, sent, replies[sender], sender)
        assert stored_events(topology, sender) == [e["event"] for e in events]
