"""The size of the serving install against the full one, measured on a real second virtualenv.

    nice -n 10 .venv/bin/python benchmarks/install_size.py                     # serves models/assistant-offline.tar.gz
    nice -n 10 .venv/bin/python benchmarks/install_size.py --model models/my-bot.tar.gz --keep

It creates a virtualenv in ``benchmarks/work/serving-venv`` with the Python of ``.venv``, installs this checkout
there without extras (``pip install -c constraints.txt .``: what ``pip install nlu-bert`` installs), checks that
torch, transformers and onnx are absent and that the sample assistant's model loads and parses in it, and
measures both environments: on-disk size, the largest installed distributions, and what the ``train`` extra
adds. It writes ``benchmarks/results/install_size.{json,md}``; ``--keep`` keeps the virtualenv.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import git_state, machine_info, markdown_table, offline_env, write_results  # noqa: E402

FULL = REPO / ".venv"
WORK = REPO / "benchmarks" / "work" / "serving-venv"
TRAIN_EXTRA = ("torch", "transformers", "onnx")

# Run inside an environment: every installed distribution with the bytes of its files.
SIZES = """
import json, os
from importlib import metadata
out = {}
for dist in metadata.distributions():
    total = 0
    for f in dist.files or []:
        try:
            total += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    out[dist.metadata["Name"]] = total
print(json.dumps(out))
"""

SERVE = """
import asyncio, importlib.util, json, sys, time
started = time.perf_counter()
from rasa.core.agent import Agent
agent = Agent.load(sys.argv[1])
loaded = time.perf_counter() - started
result = asyncio.run(agent.parse_message("我的快递到哪了"))
print(json.dumps({
    "intent": result["intent"]["name"], "load_s": round(loaded, 1),
    "absent": [n for n in ("torch", "transformers", "onnx") if importlib.util.find_spec(n) is None],
    "imported": sorted(m for m in ("torch", "transformers", "onnx") if m in sys.modules),
}))
"""


def du_bytes(path: Path) -> int:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def distribution_sizes(python: Path) -> Dict[str, int]:
    done = subprocess.run([str(python), "-c", SIZES], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout)


def create_serving_env(folder: Path) -> float:
    """The base package of this checkout in a new virtualenv; the seconds it took."""
    started = time.monotonic()
    if folder.exists():
        shutil.rmtree(folder)
    subprocess.run([str(FULL / "bin" / "python"), "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt")]
    subprocess.run([*pip, "pip<25", "setuptools<70.4", "wheel"], check=True, cwd=REPO)
    subprocess.run([*pip, str(REPO)], check=True, cwd=REPO)
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "check"], check=True)
    return time.monotonic() - started


def top(sizes: Dict[str, int], n: int = 12) -> List[List[Any]]:
    return [[name, round(size / 2**20, 1)] for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:n]]


def render(result: Dict[str, Any]) -> str:
    full, serving = result["full"], result["serving"]
    extra = result["full_adds_mb"]
    lines = [
        "# Install size: the serving install (`pip install nlu-bert`) against the full one (`nlu-bert[train]`)",
        "",
        f"Python {result['machine']['python']}, constraints.txt, code at commit {result['code']['commit']}. The serving "
        f"virtualenv was created in {result['install_s']:.0f} s (pip cache warm).",
        "",
        markdown_table(
            ["environment", "virtualenv GB", "distributions", "torch / transformers / onnx"],
            [
                ["full (`make install`: train + dev extras)", full["gb"], full["distributions"], "installed"],
                [
                    "serving (`pip install nlu-bert`)",
                    serving["gb"],
                    serving["distributions"],
                    "absent: " + ", ".join(serving["absent"]),
                ],
            ],
        ),
        "",
        "What only the full install has, largest first (MB): "
        + ", ".join(f"{name} {mb}" for name, mb in result["only_in_full"][:12])
        + f"; in all, the `train` and `dev` extras with their dependencies: {extra} MB.",
        "",
        "Largest distributions of the serving install (MB):",
        "",
        markdown_table(["distribution", "MB"], serving["top"]),
        "",
        f"Served from the serving install: `{result['model']}` loaded in {result['smoke']['load_s']} s and parsed "
        f"“我的快递到哪了” as `{result['smoke']['intent']}`; imported of torch / transformers / onnx: "
        f"{result['smoke']['imported'] or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "models" / "assistant-offline.tar.gz",
        help="a model to serve from the serving install",
    )
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/work/serving-venv")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(
            f"--model {args.model}: no such file (make train, or deploy/local/topology.py trains the offline assistant)"
        )
    print(f"[install] creating {WORK.relative_to(REPO)} with `pip install -c constraints.txt .` ...", flush=True)
    install_s = create_serving_env(WORK)
    try:
        python = WORK / "bin" / "python"
        smoke = json.loads(
            subprocess.run(
                [str(python), "-c", SERVE, str(args.model)],
                capture_output=True,
                text=True,
                check=True,
                env=offline_env(),
                cwd=REPO,
                timeout=600,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        full_sizes, serving_sizes = distribution_sizes(FULL / "bin" / "python"), distribution_sizes(python)
        only_full = {k: v for k, v in full_sizes.items() if k not in serving_sizes}
        result: Dict[str, Any] = {
            "machine": machine_info(),
            "code": git_state(),
            "install_s": round(install_s, 1),
            "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
            "full": {"gb": round(du_bytes(FULL) / 2**30, 2), "distributions": len(full_sizes), "top": top(full_sizes)},
            "serving": {
                "gb": round(du_bytes(WORK) / 2**30, 2),
                "distributions": len(serving_sizes),
                "top": top(serving_sizes),
                "absent": smoke["absent"],
            },
            "only_in_full": top(only_full, 40),
            "full_adds_mb": round(sum(only_full.values()) / 2**20),
            "smoke": smoke,
        }
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    markdown = render(result)
    json_path, _ = write_results("install_size", result, markdown, args.out)
    print(markdown)
    print(f"[install] wrote {json_path} (+ .md)")
    return 0 if set(TRAIN_EXTRA) <= set(result["serving"]["absent"]) and not smoke["imported"] else 1


if __name__ == "__main__":
    sys.exit(main())
