"""`rasa` with the time of every stage of a message measured inside the process (benchmarks/message_profile.py).

    python -m benchmarks.stage_timing run --enable-api --model ... (the arguments of `rasa`)

With ``NLU_BERT_STAGE_LOG=/path/stages.jsonl`` set, each message the server handles (``Agent.handle_message``,
the Redis lock included) appends one JSON line: its sender, its CPU and wall time, and per stage the CPU and
wall milliseconds and the number of calls. The stages:

* ``nlu: <component>`` and ``policy: <policy>``, and ``graph: <node>`` for the rest of Rasa's graphs: every
  node of the NLU and core graphs (``GraphNode.__call__``);
* ``tracker store: retrieve`` / ``save`` (the whole read or write, through Rasa's FailSafeTrackerStore), and
  inside the read ``tracker: from_dict`` (rebuilding the tracker from its events);
* ``action server: request`` (the HTTP round trip of a custom action, ``EndpointConfig.request``; its CPU
  is this process's, its wall time includes the action server's) and ``action server: payload`` (the
  tracker and domain serialised for it, ``RemoteAction._action_call_format``);
* ``predict next action`` (the core graph and its bookkeeping) and ``lock store`` (waiting for and taking
  the conversation's lock).

CPU is ``time.process_time``: right when one message is handled at a time, which is how the profile runs.
Stages nest (a node inside ``predict next action``): the table reports each, and never adds them up.

Each line also has ``start`` (Unix time the message reached the agent), ``request_id`` (the ``X-Request-ID``
nginx passed, in the message's metadata) and ``gc_ms``: how long Python's garbage collector ran while the
message was in the process (any task's collections: under concurrent load they stall every message).
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import sys
import time
from typing import Any, Callable, Dict, Optional

_CURRENT: contextvars.ContextVar[Optional[Dict[str, Any]]] = contextvars.ContextVar(
    "nlu_bert_stage_record", default=None
)
_NODE_INDEX = re.compile(r"\d+$")
_GC = {"ms": 0.0, "started": 0.0}


def _gc_callback(phase: str, info: Dict[str, Any]) -> None:
    if phase == "start":
        _GC["started"] = time.perf_counter()
    elif _GC["started"]:
        _GC["ms"] += 1000 * (time.perf_counter() - _GC["started"])
        _GC["started"] = 0.0


def _add(stage: str, cpu: float, wall: float) -> None:
    record = _CURRENT.get()
    if record is None:
        return
    slot = record["stages"].setdefault(stage, {"cpu_ms": 0.0, "wall_ms": 0.0, "calls": 0})
    slot["cpu_ms"] += 1000 * cpu
    slot["wall_ms"] += 1000 * wall
    slot["calls"] += 1


def _timed_sync(stage: Callable[..., str], fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _add(stage(*args), time.process_time() - cpu, time.perf_counter() - wall)

    return wrapper


def _timed_async(stage: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _add(stage, time.process_time() - cpu, time.perf_counter() - wall)

    return wrapper


def node_stage(node: Any, *args: Any) -> str:
    """``run_nlu_bert.BertIntentClassifier3`` -> ``nlu: nlu_bert.BertIntentClassifier``; policies likewise."""
    name = getattr(node, "_node_name", "?")
    bare = _NODE_INDEX.sub("", name[len("run_") :] if name.startswith("run_") else name)
    if name.startswith("run_") and bare.endswith("Policy"):
        return f"policy: {bare}"
    if name.startswith("run_"):
        return f"nlu: {bare}"
    return f"graph: {bare}"


def install(log_path: str) -> None:
    import gc

    from rasa.core.actions.action import RemoteAction
    from rasa.core.agent import Agent
    from rasa.core.lock_store import LockStore
    from rasa.core.processor import MessageProcessor
    from rasa.core.tracker_store import FailSafeTrackerStore
    from rasa.engine.graph import GraphNode
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.utils.endpoints import EndpointConfig

    gc.callbacks.append(_gc_callback)
    GraphNode.__call__ = _timed_sync(node_stage, GraphNode.__call__)
    FailSafeTrackerStore.retrieve = _timed_async("tracker store: retrieve", FailSafeTrackerStore.retrieve)
    FailSafeTrackerStore.save = _timed_async("tracker store: save", FailSafeTrackerStore.save)
    original_from_dict = DialogueStateTracker.from_dict.__func__
    DialogueStateTracker.from_dict = classmethod(_timed_sync(lambda *a: "tracker: from_dict", original_from_dict))
    EndpointConfig.request = _timed_async("action server: request", EndpointConfig.request)
    from nlu_bert.action_payload import install as send_last_turns_to_actions

    send_last_turns_to_actions()  # the RequestGuard installs it again when the server starts: it stays timed
    RemoteAction._action_call_format = _timed_sync(
        lambda *a: "action server: payload", RemoteAction._action_call_format
    )
    MessageProcessor._predict_next_with_tracker = _timed_sync(
        lambda *a: "predict next action", MessageProcessor._predict_next_with_tracker
    )
    LockStore.issue_ticket = _timed_sync(lambda *a: "lock store", LockStore.issue_ticket)
    LockStore._acquire_lock = _timed_async("lock store", LockStore._acquire_lock)
    LockStore.cleanup = _timed_sync(lambda *a: "lock store", LockStore.cleanup)
    original_handle = Agent.handle_message

    @functools.wraps(original_handle)
    async def handle_message(self: Any, message: Any) -> Any:
        record: Dict[str, Any] = {
            "sender": message.sender_id,
            "text": message.text,
            "request_id": (message.metadata or {}).get("request_id"),
            "start": time.time(),
            "stages": {},
        }
        token = _CURRENT.set(record)
        cpu, wall, gc_ms = time.process_time(), time.perf_counter(), _GC["ms"]
        try:
            return await original_handle(self, message)
        finally:
            record["cpu_ms"] = round(1000 * (time.process_time() - cpu), 3)
            record["wall_ms"] = round(1000 * (time.perf_counter() - wall), 3)
            record["gc_ms"] = round(_GC["ms"] - gc_ms, 3)
            _CURRENT.reset(token)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    Agent.handle_message = handle_message


def main() -> None:
    log_path = os.environ.get("NLU_BERT_STAGE_LOG")
    if log_path:
        install(log_path)
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()
