"""The clients of the load benchmark (benchmarks/load_test.py): concurrent REST and parse traffic, latency
statistics, RSS of the server processes.

Each client sends its next request as soon as the previous one is answered: a ``POST /model/parse`` (a
``--parse-share`` of them) or the next turn of its current multi-turn conversation on the REST webhook (its
own sender id per conversation), texts taken from data/nlu.yml, now and then one of about 2,000 characters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
PARSE, WEBHOOK = "/model/parse", "/webhooks/rest/webhook"
LONG_CHARS = 2000

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


# ----------------------------------------------------------------------------------- memory
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants (s); 0 when it is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    children: Dict[int, List[int]] = {}
    stats: Dict[int, List[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / tick
        todo.extend(children.get(current, []))
    return total


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
    def __init__(
        self,
        base: str,
        examples: Dict[str, List[str]],
        args: argparse.Namespace,
        pids: Callable[[], List[int]],
        alive: Callable[[], Optional[str]],
        cpu: Optional[Callable[[], Dict[str, float]]] = None,
    ) -> None:
        """``pids()``: the server processes whose RSS is sampled; ``alive()``: None while they all run, else what exited."""
        self.base, self.examples, self.args, self.pids, self.alive = base, examples, args, pids, alive
        self.records: List[Dict[str, Any]] = []  # measured requests only
        self.warmup_sent = 0
        self.rss: List[Tuple[float, int]] = []  # (seconds since the measurement started, kB)
        self.errors: List[str] = []
        self.pool = [t for texts in examples.values() for t in texts]
        self.t0 = 0.0
        self.measure_from = 0.0
        self.stop_at = 0.0
        self.server_exit: Optional[str] = None
        self.cpu_probe = cpu  # CPU seconds per process group, read when the measurement starts and ends
        self.cpu: Dict[str, Dict[str, float]] = {}

    async def request(
        self, session: Any, kind: str, path: str, body: Dict[str, Any], long: bool, turn: int = 0
    ) -> None:
        import aiohttp

        request_id = uuid.uuid4().hex  # nginx's access log and the workers' stage log name the request by it
        started = time.monotonic()
        ok, detail = False, ""
        try:
            async with session.post(
                self.base + path,
                json=body,
                headers={"X-Request-ID": request_id},
                timeout=aiohttp.ClientTimeout(total=self.args.timeout),
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
            {
                "kind": kind,
                "long": long,
                "ok": ok,
                "latency": latency,
                "t": started - self.measure_from,
                "request_id": request_id,
                "sender": body.get("sender"),
                "turn": turn,
            }
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
        conversation, turns, sender, turn = 0, [], "", 0
        while time.monotonic() < self.stop_at:
            if rng.random() < self.args.parse_share:
                text, long = self.text(rng, None)
                await self.request(session, "parse", PARSE, {"text": text}, long)
                continue
            if not turns:  # a new conversation, a new sender id
                conversation += 1
                sender = f"load-{self.args.seed}-c{index:02d}-{conversation:04d}"
                turns, turn = list(rng.choice(CONVERSATIONS)), 0
            text, long = self.text(rng, turns.pop(0))
            turn += 1
            await self.request(session, "webhook", WEBHOOK, {"sender": sender, "message": text}, long, turn)

    async def monitor(self) -> None:
        next_progress = self.t0 + self.args.progress
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            exited = self.alive()
            if exited:
                self.server_exit = exited
                print(f"[load] {self.server_exit}", flush=True)
                return
            if now >= self.measure_from:
                self.rss.append((round(now - self.measure_from, 2), self.rss_total()))
            if now >= next_progress:
                next_progress += self.args.progress
                phase = "warm-up" if now < self.measure_from else "measuring"
                measured = max(now - self.measure_from, 1e-9)
                failed = sum(not r["ok"] for r in self.records)
                rss = self.rss_total() / 1024
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
            if self.cpu_probe is not None:
                self.cpu["end"] = self.cpu_probe()

    async def _sample_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        if self.cpu_probe is not None:
            self.cpu["start"] = self.cpu_probe()
        if not self.alive():
            self.rss.insert(0, (0.0, self.rss_total()))

    def rss_total(self) -> int:
        return sum(rss_kb(pid) for pid in self.pids())
