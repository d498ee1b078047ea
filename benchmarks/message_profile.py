"""Where a webhook message's CPU goes, stage by stage, and how that grows with the conversation's length.

    nice -n 10 .venv/bin/python benchmarks/message_profile.py                      # 1-, 20- and 100-turn conversations
    nice -n 10 .venv/bin/python benchmarks/message_profile.py --turns 1 20 100 200 --model models/assistant-offline.tar.gz
    nice -n 10 .venv/bin/python benchmarks/message_profile.py --states-cache-size 0 --name message_profile_rasa_states

It starts the deployment topology (deploy/local/topology.py: PostgreSQL tracker store, Redis lock store,
the action server, nginx) with one `rasa run` worker whose stages are timed inside the process
(benchmarks/stage_timing.py), and talks to it through nginx, one message at a time: ``--repeat``
conversations of each length in ``--turns``, each message taken in turn from ``MESSAGES`` (intents
answered by rules, two of them through the action server). It writes ``message_profile.{json,md,png}``:
per stage the mean CPU ms of a message at the start of a conversation and at its end, and the CPU of a
message against its turn number.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import git_state, machine_info, markdown_table, write_results  # noqa: E402
from deploy.local.topology import ENDPOINTS, Topology, sample_assistant_model  # noqa: E402

# Answered by rules: 3 responses, 2 custom actions on the action server (action_product_info, action_list_coupons).
MESSAGES = ["你好", "蓝牙耳机多少钱", "你们几点下班", "有什么优惠券", "给我讲个笑话", "谢谢"]
STAGE_ORDER = (
    "lock store",
    "tracker store: retrieve",
    "tracker: from_dict",
    "nlu:",
    "predict next action",
    "policy:",
    "graph:",
    "action server: payload",
    "action server: request",
    "tracker store: save",
)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (seconds)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(base: str, sender: str, text: str, timeout: float = 120.0) -> Any:
    body = json.dumps({"sender": sender, "message": text}, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(
        f"{base}/webhooks/rest/webhook", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def converse(base: str, pid: int, turns: int, tag: str) -> List[Dict[str, Any]]:
    """One conversation of ``turns`` messages; per message its turn, client wall ms and worker CPU ms."""
    sender = f"{tag}-{turns}-{uuid.uuid4().hex[:8]}"
    out = []
    for turn in range(1, turns + 1):
        text = MESSAGES[(turn - 1) % len(MESSAGES)]
        cpu, wall = proc_cpu_seconds(pid), time.perf_counter()
        reply = post(base, sender, text)
        out.append(
            {
                "sender": sender,
                "turn": turn,
                "length": turns,
                "text": text,
                "replied": bool(reply),
                "client_ms": round(1000 * (time.perf_counter() - wall), 2),
                "process_cpu_ms": round(1000 * (proc_cpu_seconds(pid) - cpu), 2),
            }
        )
    return out


def join_stages(messages: List[Dict[str, Any]], log: Path) -> None:
    """Add each message's in-process stage record (same order: one client, one message at a time)."""
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_sender: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        by_sender.setdefault(record["sender"], []).append(record)
    for message in messages:
        stage_record = by_sender[message["sender"]].pop(0)
        assert stage_record["text"] == message["text"], (stage_record["text"], message["text"])
        message["handle_cpu_ms"], message["handle_wall_ms"] = stage_record["cpu_ms"], stage_record["wall_ms"]
        message["stages"] = stage_record["stages"]


def stage_key(name: str) -> Tuple[int, str]:
    return next((i for i, prefix in enumerate(STAGE_ORDER) if name.startswith(prefix)), len(STAGE_ORDER)), name


def mean(values: Sequence[float]) -> Optional[float]:
    return round(statistics.fmean(values), 2) if values else None


def summarize(messages: List[Dict[str, Any]], early: Tuple[int, int], late: Tuple[int, int]) -> Dict[str, Any]:
    """Mean CPU ms per stage for the messages at turns ``early`` and ``late`` (inclusive ranges)."""

    def pick(span: Tuple[int, int]) -> List[Dict[str, Any]]:
        return [m for m in messages if span[0] <= m["turn"] <= span[1]]

    rows = {}
    stages = sorted({s for m in messages for s in m["stages"]}, key=stage_key)
    for stage in stages:
        a = [m["stages"].get(stage, {}).get("cpu_ms", 0.0) for m in pick(early)]
        b = [m["stages"].get(stage, {}).get("cpu_ms", 0.0) for m in pick(late)]
        wall_b = [m["stages"].get(stage, {}).get("wall_ms", 0.0) for m in pick(late)]
        rows[stage] = {"early_cpu_ms": mean(a), "late_cpu_ms": mean(b), "late_wall_ms": mean(wall_b)}
    for total in ("handle_cpu_ms", "process_cpu_ms", "client_ms"):
        rows[total] = {
            "early_cpu_ms": mean([m[total] for m in pick(early)]),
            "late_cpu_ms": mean([m[total] for m in pick(late)]),
            "late_wall_ms": None,
        }
    return {"early": early, "late": late, "n_early": len(pick(early)), "n_late": len(pick(late)), "stages": rows}


def by_turn(messages: List[Dict[str, Any]], bucket: int) -> List[Dict[str, Any]]:
    """Mean CPU per message in buckets of ``bucket`` turns (1-10, 11-20, ...)."""
    out = []
    top = max(m["turn"] for m in messages)
    for start in range(1, top + 1, bucket):
        chosen = [m for m in messages if start <= m["turn"] < start + bucket]
        out.append(
            {
                "turns": f"{start}-{start + bucket - 1}",
                "n": len(chosen),
                "handle_cpu_ms": mean([m["handle_cpu_ms"] for m in chosen]),
                "process_cpu_ms": mean([m["process_cpu_ms"] for m in chosen]),
                "client_ms": mean([m["client_ms"] for m in chosen]),
            }
        )
    return out


def render(result: Dict[str, Any]) -> str:
    summary = result["summary"]
    early, late = summary["early"], summary["late"]
    rows = [
        [
            stage,
            v["early_cpu_ms"],
            v["late_cpu_ms"],
            v["late_wall_ms"],
            None
            if v["early_cpu_ms"] in (None, 0) or v["late_cpu_ms"] is None
            else round(v["late_cpu_ms"] / v["early_cpu_ms"], 2),
        ]
        for stage, v in summary["stages"].items()
    ]
    m = result["machine"]
    return "\n".join(
        [
            "# Cost of a webhook message by stage, against the conversation's length",
            "",
            f"One `rasa run` worker ({result['model']}) behind nginx, PostgreSQL tracker store "
            f"(ResilientSQLTrackerStore, states_cache_size {result['args'].get('states_cache_size', 0)}: "
            f"{'incremental dialogue states' if result['args'].get('states_cache_size') else 'Rasa' + chr(39) + 's dialogue states'}), "
            "Redis lock store, action server; "
            f"one message at a time; conversations of {', '.join(map(str, result['args']['turns']))} turns ({result['args']['repeat']} of each). "
            f"Machine: {m['cpu']}, {m['cores_available']} cores, load average {m['load_average_at_start']} at the start "
            f"(shared: compare rows, not runs). CPU in ms per message; stages nest (`nlu:` and `policy:` nodes run inside "
            "their graphs), so they do not add up to the total.",
            "",
            f"Turns {early[0]}-{early[1]} ({summary['n_early']} messages) against turns {late[0]}-{late[1]} ({summary['n_late']} messages):",
            "",
            markdown_table(
                [
                    "stage",
                    f"CPU ms, turns {early[0]}-{early[1]}",
                    f"CPU ms, turns {late[0]}-{late[1]}",
                    "wall ms, late",
                    "late / early",
                ],
                rows,
            ),
            "",
            "`handle_cpu_ms`: `Agent.handle_message` (lock, tracker, NLU, policies, actions, save); `process_cpu_ms`: the worker "
            "process's CPU for the whole request (HTTP and channel included); `client_ms`: the client's wall time through nginx.",
            "",
            "Per message against its turn number:",
            "",
            markdown_table(
                ["turns", "messages", "handle CPU ms", "process CPU ms", "client ms"],
                [
                    [b["turns"], b["n"], b["handle_cpu_ms"], b["process_cpu_ms"], b["client_ms"]]
                    for b in result["by_turn"]
                ],
            ),
            "",
        ]
    )


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    messages = result["messages"]
    longest = max(result["args"]["turns"])
    conv = [m for m in messages if m["length"] == longest]
    turns = sorted({m["turn"] for m in conv})
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(
        turns,
        [statistics.fmean(m["process_cpu_ms"] for m in conv if m["turn"] == t) for t in turns],
        label="worker process CPU (whole request)",
        color="black",
    )
    top = sorted(result["summary"]["stages"], key=lambda s: -(result["summary"]["stages"][s]["late_cpu_ms"] or 0))
    for stage in [s for s in top if not s.endswith("_ms")][:6]:
        ax.plot(
            turns,
            [
                statistics.fmean(m["stages"].get(stage, {}).get("cpu_ms", 0.0) for m in conv if m["turn"] == t)
                for t in turns
            ],
            label=stage,
            linewidth=1,
        )
    ax.set_xlabel("turn of the conversation")
    ax.set_ylabel("CPU ms per message")
    ax.set_title("Cost of a message against the conversation's length")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def configured_states_cache_size() -> int:
    """The ``states_cache_size`` of endpoints.production.yml's tracker store (0 when it has none)."""
    match = re.search(r"(?m)^  states_cache_size: *(\d+)", ENDPOINTS.read_text(encoding="utf-8"))
    return int(match.group(1)) if match else 0


def endpoints_with_states_cache(size: int, folder: Path) -> Path:
    """endpoints.production.yml with ``states_cache_size: size`` in its tracker store (the incremental dialogue
    states of nlu_bert/tracker_states.py; 0 turns them off)."""
    text = re.sub(r"(?m)^  states_cache_size: *\d+\n", "", ENDPOINTS.read_text(encoding="utf-8"))
    anchor = "  login_db: postgres\n"
    if anchor not in text:
        raise SystemExit(f"{ENDPOINTS}: no '{anchor.strip()}' line in its tracker store to add states_cache_size to")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "endpoints.yml"
    path.write_text(text.replace(anchor, f"{anchor}  states_cache_size: {size}\n", 1), encoding="utf-8")
    return path


def profile(
    model: Path,
    turns: Sequence[int],
    repeat: int,
    threads: int,
    folder: Path,
    states_cache_size: Optional[int] = None,
) -> Dict[str, Any]:
    """Run the conversations on a one-worker topology with stage timing; the messages with their stages."""
    log = folder / "stages.jsonl"
    endpoints = ENDPOINTS if states_cache_size is None else endpoints_with_states_cache(states_cache_size, folder)
    with Topology(
        model,
        workers=1,
        folder=folder / "topology",
        endpoints=endpoints,
        threads=threads,
        worker_module="benchmarks.stage_timing",
        worker_env={"NLU_BERT_STAGE_LOG": str(log)},
    ) as topology:
        pid = topology.workers[0].pid
        converse(topology.url, pid, 2 * len(MESSAGES), "warmup")  # first-request costs: lazy imports, caches
        log.write_text("", encoding="utf-8")
        messages: List[Dict[str, Any]] = []
        for length in turns:
            for _ in range(repeat):
                messages += converse(topology.url, pid, length, "profile")
    join_stages(messages, log)
    return {"messages": messages}


def compact_messages(messages: List[Dict[str, Any]]) -> None:
    """Without each message's stages (summarized and plotted already), to keep the JSON small."""
    for message in messages:
        message.pop("stages", None)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, help="a trained assistant (default: the offline profile, trained when missing)"
    )
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 20, 100], help="conversation lengths")
    parser.add_argument("--repeat", type=int, default=3, help="conversations of each length")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of the worker")
    parser.add_argument(
        "--states-cache-size",
        type=int,
        help="the tracker store's states_cache_size (0: Rasa's own dialogue states; default: endpoints.production.yml's)",
    )
    parser.add_argument("--name", default="message_profile", help="results file name (without extension)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    machine = machine_info()
    model = sample_assistant_model(args.model, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="message-profile-") as tmp:
        result = profile(model, args.turns, args.repeat, args.threads, Path(tmp), args.states_cache_size)
    messages = result["messages"]
    longest = max(args.turns)
    late = (max(1, longest - 9), longest)
    result.update(
        args={
            "turns": args.turns,
            "repeat": args.repeat,
            "threads": args.threads,
            "states_cache_size": configured_states_cache_size()
            if args.states_cache_size is None
            else args.states_cache_size,
        },
        machine=machine,
        code=git_state(),
        model=str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        summary=summarize(messages, (1, min(10, longest)), late),
        by_turn=by_turn([m for m in messages if m["length"] == longest], max(1, longest // 10)),
    )
    markdown = render(result)
    plot(result, args.out / f"{args.name}.png")
    compact_messages(messages)
    json_path, _ = write_results(args.name, result, markdown, args.out)
    print(markdown)
    print(f"wrote {json_path} (+ .md, .png)")
    return 0 if all(m["replied"] for m in messages) else 1


if __name__ == "__main__":
    sys.exit(main())
