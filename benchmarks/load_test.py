"""Load benchmark of the whole assistant, scaled out: 1 and 2 `rasa run` workers behind nginx, PostgreSQL, Redis.

What it does, and stops by itself:

1. the model: ``--model PATH``, or the sample assistant trained with the offline profile into
   ``models/assistant-offline.tar.gz`` (trained again only when missing or older than its inputs);
2. for each count in ``--workers`` (default 1 and 2): the deployment topology of deploy/docker-compose.yml
   from the Debian packages (deploy/local/topology.py: PostgreSQL tracker store and shop database, Redis
   lock store, the action server, N workers with one compute thread each, nginx sticky on the conversation
   id), then ``--clients`` concurrent clients (default 20) through nginx for ``--warmup`` s (not counted)
   and ``--duration`` s: ``/model/parse`` and multi-turn REST conversations (benchmarks/load_clients.py);
   p50/p95/p99 and messages/s per endpoint, the workers' RSS every second;
3. with one worker, one long message at a time (benchmarks/long_messages.py; ``--no-huge`` skips it);
4. the cost of a message against the conversation's length: conversations of ``--turns`` (1, 20, 100)
   turns, one message at a time, CPU by stage inside the worker (benchmarks/message_profile.py;
   ``--no-profile`` skips it);
5. a table on stdout and ``benchmarks/results/load_test.{json,md,png}``, with the goals: 20 clients at
   p95 <= 1.0 s, 2 workers >= 1.7x the messages/s of one, the cost of a message flat in the conversation's
   length (turns 91-100 within 10% of turns 1-10).

Exit status 1 when a request failed (non-2xx, exception or ``--timeout``), a worker exited, the RSS grew more
than ``--max-rss-growth`` % during a run, or a long message went unanswered; the goals are reported, not
enforced (measure them on a quiet machine). Every process it starts is stopped at the end.

    nice -n 10 .venv/bin/python benchmarks/load_test.py
    nice -n 10 .venv/bin/python benchmarks/load_test.py --workers 1 2 3 --duration 60 --no-huge --model models/assistant-offline.tar.gz
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import git_state, machine_info, markdown_table, write_results  # noqa: E402
from benchmarks.load_clients import LONG_CHARS, PARSE, WEBHOOK, Load, cpu_seconds, nlu_examples, summarize  # noqa: E402
from benchmarks.load_diagnosis import COLUMNS, diagnose, join  # noqa: E402
from benchmarks.long_messages import parse_once, single_message_bound  # noqa: E402
from benchmarks.message_profile import by_turn, profile  # noqa: E402
from benchmarks.message_profile import summarize as summarize_profile  # noqa: E402
from deploy.local.topology import Topology, sample_assistant_model  # noqa: E402

GOAL_P95_MS = 1000.0
GOAL_SCALING = 1.7
GOAL_FLAT = 1.10  # cost of a message at turns 91-100 / turns 1-10


def run_load(
    model: Path, workers: int, args: argparse.Namespace, examples: Dict[str, List[str]], folder: Path
) -> Dict[str, Any]:
    """One topology with ``workers`` workers under the clients' load: its statistics."""
    print(
        f"[load] {workers} worker(s): starting PostgreSQL, Redis, the action server, the workers and nginx ...",
        flush=True,
    )
    stage_log = folder / "stages.jsonl"
    timing = (
        {"worker_module": "benchmarks.stage_timing", "worker_env": {"NLU_BERT_STAGE_LOG": str(stage_log)}}
        if args.stages
        else {}
    )
    with Topology(model, workers, folder, threads=args.threads, start_timeout=args.start_timeout, **timing) as topology:
        for worker in topology.workers:  # first-request costs (lazy imports, caches) are not the load's
            for text in ("你好", "我的快递到哪了"):
                parse_once(worker.url, text, args.timeout)

        def exited() -> Optional[str]:
            gone = [
                f"worker {w.index} (pid {w.pid}) exited with {w.proc.returncode}"
                for w in topology.workers
                if not w.alive()
            ]
            return "; ".join(gone) or None

        load = Load(
            topology.url,
            examples,
            args,
            pids=lambda: [w.pid for w in topology.workers],
            alive=exited,
            cpu=lambda: cpu_by_process(topology),
        )
        print(
            f"[load] {workers} worker(s) ready ({', '.join(f'{k} {v:.0f} s' for k, v in topology.startup_s.items())}); "
            f"{args.clients} clients, {args.warmup:g} s warm-up + {args.duration:g} s",
            flush=True,
        )
        asyncio.run(load.run())
        end_rss = load.rss_total() if not exited() else 0
        records = load.records
        result: Dict[str, Any] = {
            "workers": workers,
            "startup_s": {k: round(v, 1) for k, v in topology.startup_s.items()},
            "endpoints": {
                PARSE: summarize([r for r in records if r["kind"] == "parse"], args.duration),
                WEBHOOK: summarize([r for r in records if r["kind"] == "webhook"], args.duration),
                f"long messages (~{LONG_CHARS} chars, both)": summarize(
                    [r for r in records if r["long"]], args.duration
                ),
                "all": summarize(records, args.duration),
            },
            "warmup_requests": load.warmup_sent,
            "errors": load.errors[:50],
            "server_exit": load.server_exit,
            "routes": routes(topology),
            "cpu_s": {k: round(v - load.cpu["start"].get(k, 0.0), 1) for k, v in load.cpu.get("end", {}).items()},
        }
        if args.stages:
            ports = {f"127.0.0.1:{w.port}": f"worker {w.index}" for w in topology.workers}
            rows = join(records, topology.nginx.access_log(), stage_log, ports)
            result["diagnosis"] = diagnose(rows)
        start_kb = load.rss[0][1] if load.rss else 0
        result["memory"] = {
            "after_warmup_mb": round(start_kb / 1024, 1),
            "max_mb": round(max(kb for _, kb in load.rss) / 1024, 1) if load.rss else None,
            "end_mb": round(end_rss / 1024, 1),
            "growth_pct": round(100.0 * (end_rss - start_kb) / start_kb, 2) if start_kb and end_rss else None,
        }
        if workers == 1 and not args.no_huge and not exited():
            pool = [t for texts in examples.values() for t in texts]
            result["single_message"] = single_message_bound(topology.workers[0].url, model, folder, args, pool)
    return result


def cpu_by_process(topology: Topology) -> Dict[str, float]:
    """CPU seconds so far of this load generator and of each server of the topology (with its children)."""
    times = os.times()
    out = {"load generator (this process)": times.user + times.system}
    services = {f"worker {w.index}": w for w in topology.workers}
    services.update(nginx=topology.nginx, actions=topology.actions, postgres=topology.postgres, redis=topology.redis)
    for name, service in services.items():
        out[name] = cpu_seconds(service.pid) if service is not None and service.pid else 0.0
    return out


def routes(topology: Topology) -> Dict[str, int]:
    """Requests per worker, from nginx's access log."""
    ports = {f"127.0.0.1:{w.port}": f"worker {w.index}" for w in topology.workers}
    out: Dict[str, int] = {name: 0 for name in ports.values()}
    for row in topology.nginx.access_log():
        last = row.get("upstream", "").replace(" ", "").split(",")[-1]
        if last in ports:
            out[ports[last]] += 1
    return out


def goals(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    runs = {r["workers"]: r for r in result["runs"]}
    out = []
    best = min(
        (r["endpoints"]["all"]["p95_ms"] for r in runs.values() if r["endpoints"]["all"]["p95_ms"] is not None),
        default=None,
    )
    out.append(
        {
            "goal": f"{result['args']['clients']} clients at p95 <= {GOAL_P95_MS:g} ms",
            "measured": f"{best} ms (best of {sorted(runs)} workers)",
            "met": best is not None and best <= GOAL_P95_MS,
        }
    )
    if 1 in runs and 2 in runs:
        one, two = runs[1]["endpoints"]["all"]["requests_per_s"], runs[2]["endpoints"]["all"]["requests_per_s"]
        ratio = round(two / one, 2) if one else None
        out.append(
            {
                "goal": f"2 workers >= {GOAL_SCALING}x the messages/s of one",
                "measured": f"{ratio}x ({two} / {one} messages/s)",
                "met": ratio is not None and ratio >= GOAL_SCALING,
            }
        )
    profile_summary = result.get("profile", {}).get("summary")
    if profile_summary:
        cost = profile_summary["stages"]["handle_cpu_ms"]
        ratio = round(cost["late_cpu_ms"] / cost["early_cpu_ms"], 2) if cost["early_cpu_ms"] else None
        early, late = profile_summary["early"], profile_summary["late"]
        out.append(
            {
                "goal": f"cost per message flat (turns {late[0]}-{late[1]} within {round(100 * (GOAL_FLAT - 1))}% of turns {early[0]}-{early[1]})",
                "measured": f"{cost['early_cpu_ms']} -> {cost['late_cpu_ms']} ms CPU ({ratio}x)",
                "met": ratio is not None and ratio <= GOAL_FLAT,
            }
        )
    return out


def render(result: Dict[str, Any]) -> str:
    a, m = result["args"], result["machine"]
    lines = [
        "# Load test: the sample assistant behind nginx, 1 and 2 workers",
        "",
        f"`{result['model']}` (offline profile); deploy/local/topology.py: nginx sticky on the conversation id, PostgreSQL "
        f"tracker store, Redis lock store, action server on PostgreSQL, each worker on {a['threads']} compute thread(s). "
        f"{a['clients']} clients, {a['warmup']:g} s warm-up (not counted) + {a['duration']:g} s measured, request timeout "
        f"{a['timeout']:g} s. Machine: {m['cpu']}, {m['cores_available']} cores, {m['memory_gb']} GB, load average "
        f"{m['load_average_at_start']} at the start (shared with other work: compare rows of one run). Code: commit "
        f"{result['code']['commit']}.",
        "",
        markdown_table(
            ["workers", "requests", "sent", "failed", "messages/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [
                    r["workers"],
                    name,
                    s["sent"],
                    s["failed"],
                    s["requests_per_s"],
                    s["p50_ms"],
                    s["p95_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                ]
                for r in result["runs"]
                for name, s in r["endpoints"].items()
            ],
        ),
        "",
        markdown_table(
            [
                "workers",
                "requests per worker (nginx)",
                "RSS after warm-up MB",
                "max MB",
                "end MB",
                "growth %",
                "worker exits",
            ],
            [
                [
                    r["workers"],
                    ", ".join(f"{k}: {v}" for k, v in r["routes"].items()),
                    r["memory"]["after_warmup_mb"],
                    r["memory"]["max_mb"],
                    r["memory"]["end_mb"],
                    r["memory"]["growth_pct"],
                    r["server_exit"] or 0,
                ]
                for r in result["runs"]
            ],
        ),
        "",
    ]
    cpu_rows = [[r["workers"], *(f"{k} {v}" for k, v in r["cpu_s"].items())] for r in result["runs"] if r.get("cpu_s")]
    if cpu_rows:
        lines += [
            f"CPU seconds during the {a['duration']:g} measured seconds (2 cores = {2 * a['duration']:g} s), per process and its children:",
            "",
            *(f"- {row[0]} worker(s): {', '.join(row[1:])}" for row in cpu_rows),
            "",
        ]
    for r in result["runs"]:
        d = r.get("diagnosis")
        if not d:
            continue
        lines += [
            f"### Where the time goes, {r['workers']} worker(s) (ms, means; benchmarks/load_diagnosis.py)",
            "",
            markdown_table(
                ["band", "n", *COLUMNS], [[k, v["n"], *(v[c] for c in COLUMNS)] for k, v in d["bands"].items()]
            ),
            "",
            "Webhook p50 / p95 ms per worker: "
            + "; ".join(f"{w} {v['p50_ms']} / {v['p95_ms']} (n {v['n']})" for w, v in d["by_worker"].items())
            + ". Per turn: "
            + "; ".join(f"turn {t} {v['p50_ms']} / {v['p95_ms']} (n {v['n']})" for t, v in d["by_turn"].items())
            + f". Long messages {d['long_messages']['p50_ms']} / {d['long_messages']['p95_ms']} (n {d['long_messages']['n']}).",
            "",
        ]
    prof = result.get("profile")
    if prof:
        lines += [
            "## Cost of a message against the conversation's length (one worker, one message at a time)",
            "",
            markdown_table(
                ["turns", "messages", "handle CPU ms", "process CPU ms", "client ms"],
                [
                    [b["turns"], b["n"], b["handle_cpu_ms"], b["process_cpu_ms"], b["client_ms"]]
                    for b in prof["by_turn"]
                ],
            ),
            "",
            "Stages (CPU ms per message; they nest, see benchmarks/results/message_profile.md for the method):",
            "",
            markdown_table(
                ["stage", "early", "late"],
                [[k, v["early_cpu_ms"], v["late_cpu_ms"]] for k, v in prof["summary"]["stages"].items()],
            ),
            "",
        ]
    huge = next((r.get("single_message") for r in result["runs"] if r.get("single_message")), None)
    if huge:
        lines += [
            f"One long message at a time: slowest {huge['slowest_guarded_ms']} ms through the RequestGuard, "
            f"{huge['slowest_ms']} ms without it (the JSON has every row).",
            "",
        ]
    lines += [
        "## Goals",
        "",
        markdown_table(
            ["goal", "measured", "met"],
            [[g["goal"], g["measured"], "yes" if g["met"] else "no"] for g in result["goals"]],
        ),
        "",
        f"Verdict: **{'PASS' if result['passed'] else 'FAIL'}** ({'; '.join(result['reasons']) or 'no failed request, no worker exit, RSS within the limit'})",
        "",
    ]
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    runs = result["runs"]
    labels = [f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in runs]
    x = range(len(runs))
    axes[0].bar([i - 0.2 for i in x], [r["endpoints"]["all"]["p50_ms"] or 0 for r in runs], 0.4, label="p50 ms")
    axes[0].bar([i + 0.2 for i in x], [r["endpoints"]["all"]["p95_ms"] or 0 for r in runs], 0.4, label="p95 ms")
    axes[0].axhline(GOAL_P95_MS, color="red", linestyle="--", linewidth=1, label="p95 goal")
    axes[0].set_xticks(list(x), labels)
    axes[0].set_ylabel("latency ms")
    twin = axes[0].twinx()
    twin.plot(list(x), [r["endpoints"]["all"]["requests_per_s"] for r in runs], "ko-", label="messages/s")
    twin.set_ylabel("messages/s")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].set_title(f"{result['args']['clients']} clients through nginx")
    prof = result.get("profile")
    if prof:
        buckets = prof["by_turn"]
        axes[1].plot(range(len(buckets)), [b["handle_cpu_ms"] for b in buckets], "o-", label="CPU per message (handle)")
        axes[1].set_xticks(range(len(buckets)), [b["turns"] for b in buckets], rotation=45, fontsize=7)
        axes[1].set_xlabel("turns of the conversation")
        axes[1].set_ylabel("CPU ms per message")
        axes[1].set_ylim(bottom=0)
        axes[1].set_title("Cost of a message against the conversation's length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, help="a trained assistant (default: the offline profile, trained when missing)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure, one topology each"
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
    parser.add_argument("--threads", type=int, default=1, help="compute threads per worker (OMP, TensorFlow)")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for a server to be ready")
    parser.add_argument("--huge-repeats", type=int, default=2, help="tries of each 100,000-character message")
    parser.add_argument(
        "--no-huge", action="store_true", help="skip the 100,000-character messages (and their second server)"
    )
    parser.add_argument(
        "--turns", type=int, nargs="+", default=[1, 20, 100], help="conversation lengths of the cost-per-message part"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the cost per message against the conversation's length"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train the offline model again even when it is up to date"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="time each message's stages inside the workers (benchmarks/stage_timing.py) and show where the "
        "latency of the median and of the slowest 5%% goes (benchmarks/load_diagnosis.py)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results", help="folder of load_test.{json,md,png}"
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.timeout <= 0 or min(args.workers) < 1:
        parser.error("--clients and --workers must be >= 1, --duration and --timeout > 0, --warmup >= 0")

    machine = machine_info()
    model = sample_assistant_model(args.model, retrain=args.retrain, threads=args.threads)
    examples = nlu_examples()
    random.seed(args.seed)
    result: Dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
        "code": git_state(),
        "runs": [],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        for workers in args.workers:
            result["runs"].append(run_load(model, workers, args, examples, Path(tmp) / f"workers-{workers}"))
        if not args.no_profile:
            print(f"[load] cost per message: conversations of {args.turns} turns on one worker ...", flush=True)
            messages = profile(model, args.turns, 1, args.threads, Path(tmp) / "profile")["messages"]
            longest = max(args.turns)
            result["profile"] = {
                "summary": summarize_profile(messages, (1, min(10, longest)), (max(1, longest - 9), longest)),
                "by_turn": by_turn([m for m in messages if m["length"] == longest], max(1, longest // 10)),
            }
    result["seconds"] = round(time.monotonic() - started, 1)
    result["load_average_at_end"] = machine_info()["load_average_at_start"]
    reasons = []
    for run in result["runs"]:
        failed = run["endpoints"]["all"]["failed"]
        if failed:
            reasons.append(f"{failed} requests failed with {run['workers']} worker(s)")
        if run["server_exit"]:
            reasons.append(run["server_exit"])
        growth = run["memory"]["growth_pct"]
        if growth is None or growth > args.max_rss_growth:
            reasons.append(f"RSS growth {growth} % > {args.max_rss_growth:g} % with {run['workers']} worker(s)")
        huge = run.get("single_message")
        if huge is not None and not huge["all_answered"]:
            reasons.append("a 100,000-character message was not answered")
    result["passed"], result["reasons"] = not reasons, reasons
    result["goals"] = goals(result)
    markdown = render(result)
    json_path, _ = write_results("load_test", result, markdown, args.out)
    plot(result, args.out / "load_test.png")
    print()
    print(markdown)
    print(f"[load] wrote {json_path} (+ .md, .png) in {result['seconds']:.0f} s")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
