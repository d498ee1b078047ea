"""Where a load test's latency goes (benchmarks/load_test.py ``--stages``): each request followed from the client
through nginx into the worker, by its ``X-Request-ID``.

For every measured request it joins the client's record (latency, conversation, turn), nginx's access log
(``request_time``, ``upstream_time``: the worker's answer time) and, for webhook messages, the worker's stage
record (benchmarks/stage_timing.py: the time inside ``Agent.handle_message`` by stage, and the garbage
collector's time meanwhile). The time of a message then splits into:

* ``client + network``: the client's latency minus nginx's request time (the load generator's own event loop
  and CPU: it shares the cores);
* ``nginx``: nginx's request time minus the worker's answer time;
* ``worker, outside the handler``: the worker's answer time minus the time in ``handle_message``: the request
  waiting for the worker's event loop (busy with other messages) before and after the handler;
* ``lock``, ``retrieve``, ``NLU``, ``policies``, ``action server`` (and its number of calls), ``save``: inside
  the handler, wall time (it includes waiting for the event loop between awaits); the rest of ``handler_ms`` is
  waiting for a place among ``max_concurrent_messages`` (nlu_bert/admission.py); ``gc_ms``: the collector's time
  while the message was in the worker; ``handler_cpu_ms``: the worker's CPU while the message was in the handler,
  other messages' included (so only a bound on its own).

The table compares the median band (p40-p60) of the webhook messages with their tail (p95 and slower), and
shows p50/p95 per worker and per turn of the conversation.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.load_clients import pct

COLUMNS = (
    "latency_ms",
    "client_ms",
    "nginx_ms",
    "outside_handler_ms",
    "handler_ms",
    "lock_ms",
    "retrieve_ms",
    "nlu_ms",
    "policies_ms",
    "action_server_ms",
    "action_calls",
    "save_ms",
    "gc_ms",
    "handler_cpu_ms",
)


def _seconds(value: str) -> Optional[float]:
    """The last number of an nginx time field ("0.120", "3.001, 0.120", "-") in seconds."""
    parts = [p.strip() for p in (value or "").replace(":", ",").split(",") if p.strip() not in ("", "-")]
    try:
        return float(parts[-1]) if parts else None
    except ValueError:
        return None


def _stage_wall(stages: Dict[str, Any], prefix: str) -> float:
    return sum(v["wall_ms"] for k, v in stages.items() if k.startswith(prefix))


def join(
    records: List[Dict[str, Any]], access_log: List[Dict[str, str]], stage_log: Path, ports: Dict[str, str]
) -> List[Dict[str, Any]]:
    """One row per measured, answered request, with the columns above (None where a source lacks the request)."""
    nginx = {row.get("request_id"): row for row in access_log if row.get("request_id")}
    stages: Dict[str, Dict[str, Any]] = {}
    if stage_log.exists():
        for line in stage_log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("request_id"):
                    stages[record["request_id"]] = record
    rows = []
    for r in records:
        if not r["ok"]:
            continue
        row: Dict[str, Any] = {
            "kind": r["kind"],
            "turn": r.get("turn", 0),
            "long": r["long"],
            "latency_ms": 1000 * r["latency"],
        }
        log = nginx.get(r.get("request_id"))
        if log is not None:
            request_s, upstream_s = _seconds(log.get("request_time", "")), _seconds(log.get("upstream_time", ""))
            upstream = log.get("upstream", "").replace(" ", "").split(",")[-1]
            row["worker"] = ports.get(upstream, upstream)
            if request_s is not None:
                row["client_ms"] = row["latency_ms"] - 1000 * request_s
                if upstream_s is not None:
                    row["nginx_ms"] = 1000 * (request_s - upstream_s)
                    row["upstream_ms"] = 1000 * upstream_s
        stage = stages.get(r.get("request_id"))
        if stage is not None:
            s = stage["stages"]
            row.update(
                handler_ms=stage["wall_ms"],
                handler_cpu_ms=stage["cpu_ms"],
                gc_ms=stage.get("gc_ms", 0.0),
                lock_ms=_stage_wall(s, "lock store"),
                retrieve_ms=_stage_wall(s, "tracker store: retrieve"),
                nlu_ms=_stage_wall(s, "nlu:"),
                policies_ms=_stage_wall(s, "policy:"),
                action_server_ms=_stage_wall(s, "action server: request"),
                action_calls=s.get("action server: request", {}).get("calls", 0),
                text=stage["text"][:20],
                stage_walls={k: round(v["wall_ms"], 1) for k, v in s.items() if v["wall_ms"] >= 50},
                save_ms=_stage_wall(s, "tracker store: save"),
            )
            if "upstream_ms" in row:
                row["outside_handler_ms"] = row["upstream_ms"] - stage["wall_ms"]
        rows.append(row)
    return rows


def _mean(rows: Sequence[Dict[str, Any]], column: str) -> Optional[float]:
    values = [r[column] for r in rows if r.get(column) is not None]
    return round(statistics.fmean(values), 1) if values else None


def _band(rows: List[Dict[str, Any]], low: float, high: float) -> List[Dict[str, Any]]:
    ordered = sorted(rows, key=lambda r: r["latency_ms"])
    n = len(ordered)
    return ordered[int(n * low) : max(int(n * low) + 1, int(n * high))] if n else []


def _percentiles(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    seconds = [r["latency_ms"] / 1000 for r in rows]
    return {"n": len(rows), "p50_ms": pct(seconds, 50), "p95_ms": pct(seconds, 95)}


def diagnose(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The median band and the tail of the webhook messages, column by column; p50/p95 per worker and turn."""
    webhook = [r for r in rows if r["kind"] == "webhook"]
    parse = [r for r in rows if r["kind"] == "parse"]
    bands = {
        "webhook p40-p60": _band(webhook, 0.4, 0.6),
        "webhook >= p95": _band(webhook, 0.95, 1.0),
        "parse p40-p60": _band(parse, 0.4, 0.6),
        "parse >= p95": _band(parse, 0.95, 1.0),
    }
    return {
        "bands": {name: {c: _mean(band, c) for c in COLUMNS} | {"n": len(band)} for name, band in bands.items()},
        "by_worker": {
            w: _percentiles([r for r in webhook if r.get("worker") == w])
            for w in sorted({r.get("worker") for r in webhook if r.get("worker")})
        },
        "by_turn": {
            t: _percentiles([r for r in webhook if r["turn"] == t]) for t in sorted({r["turn"] for r in webhook})
        },
        "long_messages": _percentiles([r for r in rows if r["long"]]),
        "slowest_webhook": [
            {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()}
            for r in sorted(webhook, key=lambda r: -r["latency_ms"])[:10]
        ],
    }
