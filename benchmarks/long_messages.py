"""One long message at a time (benchmarks/load_test.py, unless ``--no-huge``): what bounds a single message.

100,000 characters to ``/model/parse`` of a worker behind the RequestGuard (answered 413), messages at the guard's
limit, then 100,000 characters to a second `rasa run` started without the guard, which passes them through the
whole NLU pipeline, with a short message sent meanwhile (it waits: one process handles one message at a time).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.load_clients import PARSE, long_message
from deploy.local.servers import Service, free_port, http_ok
from deploy.local.topology import server_env

PYTHON = sys.executable
HUGE_CHARS = 100_000


def parse_once(base: str, text: str, timeout: float) -> Tuple[int, float, Any]:
    body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        base + PARSE, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    seconds = time.monotonic() - started
    try:
        return status, seconds, json.loads(payload)
    except json.JSONDecodeError:
        return status, seconds, payload[:200].decode("utf-8", errors="replace")


def huge_messages(rng: random.Random, pool: Sequence[str]) -> List[Tuple[str, str]]:
    """(name, text) of 100,000 characters each: one repeated character, training sentences, a random mix."""
    chars = sorted({c for t in pool for c in t})
    return [
        ("one character repeated", "退" * HUGE_CHARS),
        ("training sentences joined", long_message(rng, pool, HUGE_CHARS)),
        ("random characters of the training data", "".join(rng.choice(chars) for _ in range(HUGE_CHARS))),
    ]


def _row(name: str, repeat: int, status: int, seconds: float, body: Any) -> Dict[str, Any]:
    few_shot = body.get("few_shot", {}) if isinstance(body, dict) else {}
    return {
        "message": name,
        "try": repeat,
        "status": status,
        "ms": round(1000 * seconds, 1),
        "intent": (body.get("intent") or {}).get("name") if isinstance(body, dict) else None,
        "fallback_acted": few_shot.get("acted"),
        "fallback_reason": few_shot.get("reason"),
        "fallback_ms": few_shot.get("time_ms"),
    }


def parse_while_busy(base: str, text: str, timeout: float, delay: float = 1.0) -> Tuple[Tuple[int, float, Any], float]:
    """``text`` to /model/parse, and ``delay`` s later a short message: (the long one's answer, the short one's seconds)."""
    short: Dict[str, float] = {}

    def later() -> None:
        time.sleep(delay)
        short["s"] = parse_once(base, "你好", timeout)[1]

    thread = threading.Thread(target=later)
    thread.start()
    answer = parse_once(base, text, timeout)
    thread.join()
    return answer, short["s"]


def single_message_bound(
    guarded_base: str, model: Path, tmp: Path, args: argparse.Namespace, pool: Sequence[str]
) -> Dict[str, Any]:
    """One long message at a time: at the guard's limit and beyond it (guarded server), then 100,000
    characters through the whole NLU pipeline of a second server started without the guard."""
    rng = random.Random(args.seed)
    messages = huge_messages(rng, pool)
    out: Dict[str, Any] = {"chars": HUGE_CHARS, "guarded": []}
    limit = guard_limit(guarded_base)
    out["guard_max_text_chars"] = limit
    guarded = [(f"{HUGE_CHARS:,} characters, one repeated", messages[0][1])]
    if limit:
        guarded.append((f"{limit:,} characters (the guard's limit), one repeated", "退" * limit))
        guarded.append((f"{limit:,} characters (the guard's limit), random", messages[2][1][:limit]))
    for name, text in guarded:
        for repeat in range(args.huge_repeats):
            status, seconds, body = parse_once(guarded_base, text, args.timeout)
            out["guarded"].append(_row(name, repeat + 1, status, seconds, body))
            print(f"[load]   guarded server, {name}: HTTP {status} in {1000 * seconds:.0f} ms", flush=True)

    credentials = tmp / "credentials.noguard.yml"
    credentials.write_text("rest:\n", encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Service(
        "rasa run (no guard)",
        [
            PYTHON,
            "-m",
            "rasa",
            "run",
            "--enable-api",
            "--model",
            str(model),
            "--credentials",
            str(credentials),
            "--port",
            str(port),
            "--interface",
            "127.0.0.1",
        ],
        server_env(args.threads),
        tmp / "rasa_noguard.log",
        lambda: http_ok(f"{base}/status"),
    )
    rows: List[Dict[str, Any]] = []
    try:
        print(
            f"[load] starting a second rasa run without the RequestGuard for {HUGE_CHARS:,}-character messages ...",
            flush=True,
        )
        server.start(timeout=args.start_timeout)
        for _ in range(2):  # warm-up: first-request costs (lazy imports, caches)
            parse_once(base, "你好，我想查一下订单", args.timeout)
        short = [parse_once(base, t, args.timeout)[1] for t in ["我的快递到哪了", "有什么优惠券", "你们几点关门"]]
        out["short_message_ms"] = round(1000 * max(short), 1)
        for index, (name, text) in enumerate(messages):
            for repeat in range(args.huge_repeats):
                if index == 0 and repeat == 0:
                    (status, seconds, body), short_s = parse_while_busy(base, text, args.timeout)
                    out["short_message_while_busy_ms"] = round(1000 * short_s, 1)
                    print(
                        f"[load]   a short message sent 1 s after it was answered in {1000 * short_s:.0f} ms",
                        flush=True,
                    )
                else:
                    status, seconds, body = parse_once(base, text, args.timeout)
                rows.append(_row(name, repeat + 1, status, seconds, body))
                print(
                    f"[load]   {name}: HTTP {status} in {1000 * seconds:.0f} ms (fallback: {rows[-1]['fallback_reason']})",
                    flush=True,
                )
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says it
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    out["unguarded"] = rows
    ok = [r["ms"] for r in rows if r["status"] == 200]
    out["slowest_ms"] = max(ok) if ok else None
    guarded_ok = [r for r in out["guarded"] if r["status"] == 200]
    out["slowest_guarded_ms"] = max(r["ms"] for r in guarded_ok) if guarded_ok else None
    out["all_answered"] = bool(rows) and len(ok) == len(rows) and "error" not in out
    return out


def guard_limit(base: str) -> Optional[int]:
    """``max_text_chars`` of the RequestGuard (GET /webhooks/guard/), None without a guard."""
    try:
        with urllib.request.urlopen(base + "/webhooks/guard/", timeout=10) as response:
            return int(json.loads(response.read())["max_text_chars"])
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
