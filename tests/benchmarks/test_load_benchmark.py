"""The load benchmark's arithmetic and reports (benchmarks/load_test.py, message_profile.py, stage_timing.py),
on made-up measurements: the real runs start servers for minutes and are benchmarks, not tests."""

from __future__ import annotations

import sys
from typing import Any, Dict, List

from nlu_testing import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import load_test, message_profile  # noqa: E402
from benchmarks.load_clients import pct, summarize  # noqa: E402
from benchmarks.stage_timing import node_stage  # noqa: E402


class Node:
    def __init__(self, name: str) -> None:
        self._node_name = name


def test_node_names_become_stages() -> None:
    assert node_stage(Node("run_nlu_bert.BertIntentClassifier3")) == "nlu: nlu_bert.BertIntentClassifier"
    assert node_stage(Node("run_TEDPolicy2")) == "policy: TEDPolicy"
    assert node_stage(Node("run_RegexMessageHandler")) == "nlu: RegexMessageHandler"
    assert node_stage(Node("select_prediction")) == "graph: select_prediction"


def test_percentiles_and_summary() -> None:
    assert pct([0.1, 0.2, 0.3, 0.4, 0.5], 50) == 300.0
    assert pct([0.1, 0.2], 95) == 195.0
    assert pct([], 50) is None
    records = [{"ok": True, "latency": 0.1 * i} for i in range(1, 11)] + [{"ok": False, "latency": 9.0}]
    summary = summarize(records, 10.0)
    assert summary["sent"] == 11 and summary["failed"] == 1 and summary["requests_per_s"] == 1.1
    assert summary["max_ms"] == 1000.0  # the failed request is not a latency


def messages(cost_per_turn: float, turns: int = 100) -> List[Dict[str, Any]]:
    out = []
    for turn in range(1, turns + 1):
        retrieve = 2.0 + cost_per_turn * turn
        out.append(
            {
                "sender": "s",
                "turn": turn,
                "length": turns,
                "text": "你好",
                "replied": True,
                "client_ms": 50.0 + retrieve,
                "process_cpu_ms": 41.0 + retrieve,
                "handle_cpu_ms": 40.0 + retrieve,
                "stages": {
                    "tracker store: retrieve": {"cpu_ms": retrieve, "wall_ms": retrieve, "calls": 1},
                    "policy: TEDPolicy": {"cpu_ms": 10.0, "wall_ms": 10.0, "calls": 2},
                },
            }
        )
    return out


def test_profile_summary_shows_what_grows() -> None:
    summary = message_profile.summarize(messages(0.5), (1, 10), (91, 100))
    stages = summary["stages"]
    assert (
        stages["tracker store: retrieve"]["early_cpu_ms"] == 4.75
        and stages["tracker store: retrieve"]["late_cpu_ms"] == 49.75
    )
    assert stages["policy: TEDPolicy"]["early_cpu_ms"] == stages["policy: TEDPolicy"]["late_cpu_ms"] == 10.0
    buckets = message_profile.by_turn(messages(0.5), 10)
    assert [b["turns"] for b in buckets][:2] == ["1-10", "11-20"] and len(buckets) == 10
    assert buckets[0]["handle_cpu_ms"] < buckets[-1]["handle_cpu_ms"]


def run(workers: int, rps: float, p95: float) -> Dict[str, Any]:
    stats = {
        "sent": int(rps * 30),
        "failed": 0,
        "requests_per_s": rps,
        "p50_ms": p95 / 2,
        "p95_ms": p95,
        "p99_ms": p95,
        "max_ms": p95,
    }
    return {
        "workers": workers,
        "endpoints": {"all": stats},
        "routes": {"worker 1": 10},
        "server_exit": None,
        "memory": {"after_warmup_mb": 1000.0, "max_mb": 1010.0, "end_mb": 1010.0, "growth_pct": 1.0},
    }


def test_goals_are_judged_from_the_runs_and_the_profile() -> None:
    result: Dict[str, Any] = {"args": {"clients": 20}, "runs": [run(1, 10.0, 1800.0), run(2, 18.0, 900.0)]}
    result["profile"] = {"summary": message_profile.summarize(messages(0.0), (1, 10), (91, 100))}
    met = {g["goal"].split(" ")[0]: g["met"] for g in load_test.goals(result)}
    assert met == {"20": True, "2": True, "cost": True}
    result["runs"][1] = run(2, 15.0, 1200.0)
    result["profile"] = {"summary": message_profile.summarize(messages(0.5), (1, 10), (91, 100))}
    goals = load_test.goals(result)
    assert [g["met"] for g in goals] == [False, False, False]
    assert goals[1]["measured"].startswith("1.5x")


def test_reports_render() -> None:
    profile_messages = messages(0.2)
    result: Dict[str, Any] = {
        "args": {
            "clients": 20,
            "threads": 1,
            "warmup": 5.0,
            "duration": 30.0,
            "timeout": 60.0,
            "turns": [1, 100],
            "repeat": 1,
        },
        "machine": {"cpu": "test cpu", "cores_available": 2, "memory_gb": 24, "load_average_at_start": [0.1, 0.1, 0.1]},
        "model": "models/assistant-offline.tar.gz",
        "code": {"commit": "abc1234", "modified": []},
        "runs": [run(1, 10.0, 1800.0), run(2, 18.0, 900.0)],
        "passed": True,
        "reasons": [],
        "profile": {
            "summary": message_profile.summarize(profile_messages, (1, 10), (91, 100)),
            "by_turn": message_profile.by_turn(profile_messages, 10),
        },
    }
    result["goals"] = load_test.goals(result)
    text = load_test.render(result)
    assert "| 2 | all | 540 | 0 | 18.0 |" in text and "| 91-100 | 10 |" in text and "Verdict: **PASS**" in text
    result["messages"], result["summary"], result["by_turn"] = (
        profile_messages,
        result["profile"]["summary"],
        result["profile"]["by_turn"],
    )
    assert "| tracker store: retrieve |" in message_profile.render(result)
