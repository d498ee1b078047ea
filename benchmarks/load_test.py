"""Bounded load test of the sample assistant: real `rasa run`, real action server, loopback only.

What it does, and stops by itself:

1. the model: ``--model PATH``, or the sample assistant trained with the offline profile
   (``config.offline.yml``, domain.yml, data/{nlu,stories,rules}.yml) into
   ``benchmarks/work/load/assistant-offline.tar.gz`` (git-ignored; trained again only when it is
   missing or older than its config, domain or data);
2. a seeded shop database and a SQLite tracker store in a temporary folder, the action server
   (``rasa run actions``) and ``rasa run --enable-api`` with the assistant's own
   ``rasa_project/credentials.yml`` (REST channel + RequestGuard), both on 127.0.0.1, free ports;
3. ``--clients`` concurrent clients (default 20), each sending its next request as soon as the
   previous one is answered, for ``--warmup`` s (default 5, not counted) and then
   ``--duration`` s (default 30): a mix of ``POST /model/parse`` and multi-turn REST webhook
   conversations (``POST /webhooks/rest/webhook``, one sender id per client and conversation),
   messages taken from data/nlu.yml, and now and then a long message of about 2,000 characters;
4. the RSS of the `rasa run` process (with its children, ``/proc/<pid>/status`` VmRSS) after the
   warm-up, every second, and at the end;
5. one long message at a time to ``/model/parse``: 100,000 characters (answered 413 by the
   RequestGuard) and messages at the guard's limit to the guarded server, then 100,000 characters
   to a second `rasa run` started without the guard, which passes them through the whole NLU
   pipeline, with a short message sent meanwhile (``--no-huge`` skips this part);
6. a markdown table on stdout and ``benchmarks/results/load_test.{json,md}``.

Exit status 1 when any request failed (non-2xx, exception or ``--timeout``), the server exited,
the RSS grew more than ``--max-rss-growth`` % (default 5) from after the warm-up to the end, or
the 100,000-character message was not answered; 0 otherwise. Every process it starts is stopped
at the end (its own process group: SIGTERM, then SIGKILL).

Usage (two CPU cores shared with others: run it nice'd, torch on one thread)::

    nice -n 10 .venv/bin/python benchmarks/load_test.py
    nice -n 10 .venv/bin/python benchmarks/load_test.py --clients 50 --duration 60 --model models/assistant-offline.tar.gz
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine_info, markdown_table, offline_env, write_results  # noqa: E402

PYTHON = sys.executable
WORK = REPO / "benchmarks" / "work" / "load"
DATA = [REPO / "data" / name for name in ("nlu.yml", "stories.yml", "rules.yml")]
CONFIG = REPO / "config.offline.yml"
DOMAIN = REPO / "domain.yml"
CREDENTIALS = REPO / "rasa_project" / "credentials.yml"
PARSE, WEBHOOK = "/model/parse", "/webhooks/rest/webhook"
LONG_CHARS = 2000
HUGE_CHARS = 100_000

# Multi-turn conversations: each turn is an intent of data/nlu.yml; the text is one of its examples.
CONVERSATIONS: List[List[str]] = [
    ["greet", "check_order_status", "check_logistics", "thanks", "goodbye"],
    ["greet", "ask_coupon", "affirm", "thanks"],
    ["request_return", "inform", "inform", "goodbye"],
    ["chitchat", "ask_product", "ask_opening_hours", "goodbye"],
    ["check_logistics", "inform", "thanks"],
    ["greet", "out_of_scope", "human_handoff", "deny", "goodbye"],
]
ANNOTATION = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\{[^}]*\})")


# ----------------------------------------------------------------------------------- messages
def nlu_examples(path: Path = REPO / "data" / "nlu.yml") -> Dict[str, List[str]]:
    """intent -> its example texts, entity annotations removed (``[2405180031](order_id)`` -> the number)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out: Dict[str, List[str]] = {}
    for block in data.get("nlu", []):
        if "intent" not in block:
            continue
        texts = []
        for line in str(block.get("examples", "")).splitlines():
            line = line.strip()
            if not line.startswith("- "):
                continue
            text = line[2:].strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1]
            texts.append(ANNOTATION.sub(r"\1", text))
        if texts:
            out[block["intent"]] = texts
    return out


def long_message(rng: random.Random, pool: Sequence[str], chars: int) -> str:
    """About ``chars`` characters: training sentences joined with Chinese commas."""
    parts: List[str] = []
    size = 0
    while size < chars:
        part = rng.choice(pool)
        parts.append(part)
        size += len(part) + 1
    return "，".join(parts)[:chars]


# ----------------------------------------------------------------------------------- processes
def env_for_servers(threads: int, **extra: str) -> Dict[str, str]:
    limits = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads > 0 else {}
    return offline_env(**{**limits, **extra})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class Server:
    """A process in its own process group, its output in a log; ``stop()`` ends the whole group."""

    def __init__(self, name: str, args: List[str], env: Dict[str, str], log: Path, ready_url: str) -> None:
        self.name, self.args, self.env, self.log, self.ready_url = name, args, env, log, ready_url
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float) -> float:
        started = time.monotonic()
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=5) as response:
                    body = response.read()
                    if response.status == 200 and b'"model_file":null' not in body.replace(b" ", b""):
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{tail(self.log)}")

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.proc = None


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (kB); 0 when it is gone."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total


# ----------------------------------------------------------------------------------- the model
def git_state() -> Dict[str, Any]:
    """The commit measured, and the files that differ from it (the numbers belong to that code)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": changed}


def ensure_model(model: Optional[str], threads: int, retrain: bool = False) -> Tuple[Path, Dict[str, Any]]:
    if model:
        path = Path(model).resolve()
        if not path.is_file():
            raise SystemExit(f"--model {model}: no such file")
        return path, {"model": str(path), "trained_now": False}
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "assistant-offline.tar.gz"
    inputs = [CONFIG, DOMAIN, *DATA]
    if not retrain and path.is_file() and all(p.stat().st_mtime <= path.stat().st_mtime for p in inputs):
        print(f"[load] reusing {path.relative_to(REPO)} (newer than its config, domain and data)", flush=True)
        return path, {"model": str(path.relative_to(REPO)), "trained_now": False}
    log = WORK / "train.log"
    print(
        f"[load] training the sample assistant with {CONFIG.name} -> {path.relative_to(REPO)} (log: {log.relative_to(REPO)})",
        flush=True,
    )
    started = time.monotonic()
    with log.open("wb") as handle:
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "rasa",
                "train",
                "--config",
                str(CONFIG),
                "--domain",
                str(DOMAIN),
                "--data",
                *map(str, DATA),
                "--out",
                str(WORK),
                "--fixed-model-name",
                "assistant-offline",
            ],
            cwd=REPO,
            env=env_for_servers(threads),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if result.returncode != 0 or not path.is_file():
        raise SystemExit(f"rasa train failed ({result.returncode}):\n{tail(log)}")
    seconds = time.monotonic() - started
    print(f"[load] trained in {seconds:.0f} s", flush=True)
    return path, {"model": str(path.relative_to(REPO)), "trained_now": True, "train_seconds": round(seconds, 1)}


# ----------------------------------------------------------------------------------- statistics
def pct(values: Sequence[float], q: float) -> Optional[float]:
    """Percentile with linear interpolation (numpy's default), in ms; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(1000 * (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)), 1)


def summarize(records: List[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
    ok = [r["latency"] for r in records if r["ok"]]
    return {
        "sent": len(records),
        "failed": sum(not r["ok"] for r in records),
        "requests_per_s": round(len(records) / seconds, 2) if seconds > 0 else None,
        "p50_ms": pct(ok, 50),
        "p95_ms": pct(ok, 95),
        "p99_ms": pct(ok, 99),
        "max_ms": round(1000 * max(ok), 1) if ok else None,
    }


# ----------------------------------------------------------------------------------- the load
class Load:
    def __init__(self, base: str, examples: Dict[str, List[str]], args: argparse.Namespace, server: Server) -> None:
        self.base, self.examples, self.args, self.server = base, examples, args, server
        self.records: List[Dict[str, Any]] = []  # measured requests only
        self.warmup_sent = 0
        self.rss: List[Tuple[float, int]] = []  # (seconds since the measurement started, kB)
        self.errors: List[str] = []
        self.pool = [t for texts in examples.values() for t in texts]
        self.t0 = 0.0
        self.measure_from = 0.0
        self.stop_at = 0.0
        self.server_exit: Optional[str] = None

    async def request(self, session: Any, kind: str, path: str, body: Dict[str, Any], long: bool) -> None:
        import aiohttp

        started = time.monotonic()
        ok, detail = False, ""
        try:
            async with session.post(
                self.base + path, json=body, timeout=aiohttp.ClientTimeout(total=self.args.timeout)
            ) as resp:
                payload = await resp.read()
                ok = 200 <= resp.status < 300
                if ok:
                    parsed = json.loads(payload)
                    if kind == "parse" and not isinstance(parsed, dict):
                        ok, detail = False, f"parse answered {payload[:100]!r}"
                    elif kind == "webhook" and not isinstance(parsed, list):
                        ok, detail = False, f"webhook answered {payload[:100]!r}"
                else:
                    detail = f"HTTP {resp.status}: {payload[:200]!r}"
        except asyncio.TimeoutError:
            detail = f"timeout after {self.args.timeout} s"
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
            detail = f"{type(e).__name__}: {e}"
        latency = time.monotonic() - started
        if started < self.measure_from:
            self.warmup_sent += 1
            if not ok:
                self.errors.append(f"(warm-up) {kind} {detail}")
            return
        self.records.append(
            {"kind": kind, "long": long, "ok": ok, "latency": latency, "t": started - self.measure_from}
        )
        if not ok and len(self.errors) < 50:
            self.errors.append(f"{kind}{' (long)' if long else ''}: {detail}")

    def text(self, rng: random.Random, intent: Optional[str]) -> Tuple[str, bool]:
        if rng.random() < self.args.long_share:
            return long_message(rng, self.pool, LONG_CHARS), True
        if intent and intent in self.examples:
            return rng.choice(self.examples[intent]), False
        return rng.choice(self.pool), False

    async def client(self, session: Any, index: int) -> None:
        """One request at a time: a parse (``--parse-share`` of them) or the next turn of its conversation."""
        rng = random.Random(self.args.seed * 1000 + index)
        conversation, turns, sender = 0, [], ""
        while time.monotonic() < self.stop_at:
            if rng.random() < self.args.parse_share:
                text, long = self.text(rng, None)
                await self.request(session, "parse", PARSE, {"text": text}, long)
                continue
            if not turns:  # a new conversation, a new sender id
                conversation += 1
                sender = f"load-{self.args.seed}-c{index:02d}-{conversation:04d}"
                turns = list(rng.choice(CONVERSATIONS))
            text, long = self.text(rng, turns.pop(0))
            await self.request(session, "webhook", WEBHOOK, {"sender": sender, "message": text}, long)

    async def monitor(self) -> None:
        next_progress = self.t0 + self.args.progress
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if not self.server.alive():
                self.server_exit = f"rasa run (pid {self.server.pid}) exited with {self.server.proc.returncode if self.server.proc else '?'}"
                print(f"[load] {self.server_exit}", flush=True)
                return
            if now >= self.measure_from:
                self.rss.append((round(now - self.measure_from, 2), rss_kb(self.server.pid)))
            if now >= next_progress:
                next_progress += self.args.progress
                phase = "warm-up" if now < self.measure_from else "measuring"
                measured = max(now - self.measure_from, 1e-9)
                failed = sum(not r["ok"] for r in self.records)
                rss = rss_kb(self.server.pid) / 1024
                rps = f"{len(self.records) / measured:.1f} req/s" if now >= self.measure_from else ""
                print(
                    f"[load] {now - self.t0:5.0f} s {phase:9s} sent {len(self.records):5d} (+{self.warmup_sent} warm-up) "
                    f"failed {failed:3d} {rps}  rss {rss:.0f} MB",
                    flush=True,
                )

    async def run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.t0 = time.monotonic()
            self.measure_from = self.t0 + self.args.warmup
            self.stop_at = self.measure_from + self.args.duration
            monitor = asyncio.create_task(self.monitor())
            warmup_rss_task = asyncio.create_task(self._sample_at(self.measure_from))
            await asyncio.gather(*(self.client(session, i) for i in range(self.args.clients)))
            await monitor
            await warmup_rss_task

    async def _sample_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        if self.server.alive():
            self.rss.insert(0, (0.0, rss_kb(self.server.pid)))


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
    import threading

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
    server = Server(
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
        env_for_servers(args.threads),
        tmp / "rasa_noguard.log",
        f"{base}/status",
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


# ----------------------------------------------------------------------------------- report
def render(result: Dict[str, Any]) -> str:
    a = result["args"]
    rows = []
    for name, s in result["endpoints"].items():
        rows.append(
            [name, s["sent"], s["failed"], s["requests_per_s"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
        )
    lines = [
        "# Load test: the sample assistant under concurrent clients",
        "",
        f"`rasa run --enable-api` with `{result['model']['model']}` (offline profile), REST channel + RequestGuard, "
        f"SQLite tracker store, action server on SQLite; {a['clients']} clients, {a['warmup']:g} s warm-up (not counted) "
        f"+ {a['duration']:g} s measured, request timeout {a['timeout']:g} s, torch threads {a['threads'] or 'default'}. "
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores_available']} cores "
        f"(load average at start {result['machine']['load_average_at_start']}), shared with other work. "
        f"Code: commit {result['code']['commit']}"
        + (f" with changes in {', '.join(result['code']['modified'])}" if result["code"]["modified"] else "")
        + ".",
        "",
        markdown_table(["requests", "sent", "failed", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows),
        "",
    ]
    m = result["memory"]
    lines += [
        markdown_table(
            ["rasa run RSS", "MB"],
            [
                ["after warm-up", m["after_warmup_mb"]],
                ["max during the run", m["max_mb"]],
                ["at the end", m["end_mb"]],
                ["growth, after warm-up to end", f"{m['growth_pct']} %"],
            ],
        ),
        "",
        f"Server exits/restarts during the run: {result['server_restarts']}.",
        "",
    ]
    huge = result.get("single_message")
    if huge:
        header = ["message", "try", "status", "ms", "intent", "fallback (few_shot.reason)", "fallback ms"]

        def table(rows: List[Dict[str, Any]]) -> str:
            return markdown_table(
                header,
                [
                    [r["message"], r["try"], r["status"], r["ms"], r["intent"], r["fallback_reason"], r["fallback_ms"]]
                    for r in rows
                ],
            )

        lines += [
            "## One long message at a time to `/model/parse`",
            "",
            f"Guarded server (`rasa_project/credentials.yml`, RequestGuard `max_text_chars` {huge.get('guard_max_text_chars')}):",
            "",
            table(huge["guarded"]),
            "",
            f"Unguarded server (`rest:` only, so the whole NLU pipeline sees {huge['chars']:,} characters); a short message "
            f"takes {huge.get('short_message_ms')} ms there, and {huge.get('short_message_while_busy_ms')} ms when sent 1 s "
            "after the first long one (it waits for it):",
            "",
            table(huge["unguarded"]),
            "",
            f"Slowest single message: {huge['slowest_guarded_ms']} ms through the guard, {huge['slowest_ms']} ms without it."
            + (f" Error: {huge['error']}" if huge.get("error") else ""),
            "",
        ]
    lines += [
        f"Verdict: **{'PASS' if result['passed'] else 'FAIL'}** ({'; '.join(result['reasons']) or 'no failed request, RSS growth within the limit'})",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model", help="a trained assistant archive (default: train the offline profile into benchmarks/work/load/)"
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring (not counted)")
    parser.add_argument("--timeout", type=float, default=60.0, help="a request slower than this counts as failed (s)")
    parser.add_argument("--parse-share", type=float, default=0.4, help="share of the requests that go to /model/parse")
    parser.add_argument(
        "--long-share", type=float, default=0.03, help=f"share of the messages of about {LONG_CHARS} characters"
    )
    parser.add_argument(
        "--max-rss-growth", type=float, default=5.0, help="allowed RSS growth from after the warm-up to the end (%%)"
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of the servers (0: torch's default)")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for a server to be ready")
    parser.add_argument("--huge-repeats", type=int, default=2, help="tries of each 100,000-character message")
    parser.add_argument(
        "--no-huge", action="store_true", help="skip the 100,000-character messages (and the second server)"
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train the offline model again even when it is up to date (e.g. after a code change)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results", help="folder of load_test.{json,md}"
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--clients must be ≥ 1, --duration and --timeout > 0, --warmup ≥ 0")

    machine = machine_info()
    model, model_info = ensure_model(args.model, args.threads, args.retrain)
    examples = nlu_examples()
    pool = [t for texts in examples.values() for t in texts]
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    result: Dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "model": model_info,
        "code": git_state(),
    }
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        shop_db = f"sqlite:///{tmp / 'shop.db'}"
        subprocess.run(
            [PYTHON, "-m", "rasa_project.db", "init", "--url", shop_db],
            cwd=REPO,
            env=env_for_servers(args.threads),
            check=True,
            capture_output=True,
        )
        actions_port, rasa_port = free_port(), free_port()
        actions = Server(
            "rasa run actions",
            [PYTHON, "-m", "rasa", "run", "actions", "--actions", "rasa_project.actions", "--port", str(actions_port)],
            env_for_servers(args.threads, SHOP_DB_URL=shop_db),
            tmp / "actions.log",
            f"http://127.0.0.1:{actions_port}/health",
        )
        stack.callback(actions.stop)
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "action_endpoint": {"url": f"http://127.0.0.1:{actions_port}/webhook"},
                    "tracker_store": {"type": "SQL", "dialect": "sqlite", "db": str(tmp / "tracker.db")},
                }
            ),
            encoding="utf-8",
        )
        base = f"http://127.0.0.1:{rasa_port}"
        server = Server(
            "rasa run",
            [
                PYTHON,
                "-m",
                "rasa",
                "run",
                "--enable-api",
                "--model",
                str(model),
                "--endpoints",
                str(endpoints),
                "--credentials",
                str(CREDENTIALS),
                "--port",
                str(rasa_port),
                "--interface",
                "127.0.0.1",
            ],
            env_for_servers(args.threads),
            tmp / "rasa.log",
            f"{base}/status",
        )
        stack.callback(server.stop)
        print(f"[load] starting the action server and rasa run on 127.0.0.1:{rasa_port} ...", flush=True)
        result["startup_s"] = {"actions": round(actions.start(args.start_timeout), 1)}
        result["startup_s"]["rasa_run"] = round(server.start(args.start_timeout), 1)
        pid = server.pid
        print(
            f"[load] ready (rasa run pid {pid}, RSS {rss_kb(pid) / 1024:.0f} MB); {args.clients} clients, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s",
            flush=True,
        )

        load = Load(base, examples, args, server)
        asyncio.run(load.run())
        end_rss = rss_kb(pid) if server.alive() else 0
        measured = args.duration
        records = load.records
        result["endpoints"] = {
            "/model/parse": summarize([r for r in records if r["kind"] == "parse"], measured),
            "/webhooks/rest/webhook": summarize([r for r in records if r["kind"] == "webhook"], measured),
            f"long messages (~{LONG_CHARS} chars, both)": summarize([r for r in records if r["long"]], measured),
            "all": summarize(records, measured),
        }
        result["warmup_requests"] = load.warmup_sent
        result["errors"] = load.errors[:50]
        samples = load.rss
        start_kb = samples[0][1] if samples else 0
        growth = round(100.0 * (end_rss - start_kb) / start_kb, 2) if start_kb and end_rss else None
        result["memory"] = {
            "after_warmup_mb": round(start_kb / 1024, 1),
            "max_mb": round(max(kb for _, kb in samples) / 1024, 1) if samples else None,
            "end_mb": round(end_rss / 1024, 1),
            "growth_pct": growth,
            "samples": [{"t": t, "mb": round(kb / 1024, 1)} for t, kb in samples],
        }
        result["server_restarts"] = 0 if server.alive() and server.pid == pid and load.server_exit is None else 1
        if load.server_exit:
            result["server_exit"] = load.server_exit + "\n" + tail(tmp / "rasa.log")

        if not args.no_huge and server.alive():
            result["single_message"] = single_message_bound(base, model, tmp, args, pool)
        result["server_log_tail"] = tail(tmp / "rasa.log", 30)

    reasons = []
    failed = result["endpoints"]["all"]["failed"]
    if failed:
        reasons.append(f"{failed} requests failed")
    if result["server_restarts"]:
        reasons.append("the server exited")
    growth = result["memory"]["growth_pct"]
    if growth is None or growth > args.max_rss_growth:
        reasons.append(f"RSS growth {growth} % > {args.max_rss_growth:g} %")
    huge = result.get("single_message")
    if huge is not None and not huge["all_answered"]:
        reasons.append("a 100,000-character message was not answered")
    result["passed"] = not reasons
    result["reasons"] = reasons
    markdown = render(result)
    json_path, md_path = write_results("load_test", result, markdown, args.out)
    print()
    print(markdown)
    if load.errors:
        print("first errors:\n  " + "\n  ".join(load.errors[:10]))
    print(
        f"[load] wrote {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path} and {md_path.name}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
