"""`rasa run` over HTTP: /model/parse latency, load time and memory of the BERT pipeline against Rasa's DIET, in one run.

    .venv/bin/python benchmarks/http_latency.py            # full-size BERT (+ GPT-2) vs DIET, 2 passes
    .venv/bin/python benchmarks/http_latency.py --quick    # 1 pass, fewer messages
    .venv/bin/python benchmarks/http_latency.py --nlu path/to/your/nlu.yml   # another bot's NLU data
    .venv/bin/python benchmarks/http_latency.py --nlu mybot/data --config mybot/config.yml --pipelines diet bert
        # ... and its own pipeline served beside them (as the row `config`; NAME=CONFIG names it)

Models (built here, random weights; the compute equals the pretrained models'):

* ``bert``: JiebaTokenizer + BertIntentClassifier on a local folder with the architecture of
  hfl/chinese-bert-wwm-ext (12 x 768, 21,128-token vocabulary from ../shared/datasets), trained 1 epoch on the
  sample assistant's NLU data and served with the component's default inference (``backend: auto``: native
  int8 for a BERT encoder, by the C kernel on CPUs with AVX-512 VNNI, by onnxruntime elsewhere);
* ``bert-onnxruntime``: the same with ``inference: {backend: onnxruntime}`` (the fused ONNX graph in int8,
  worker threads spinning between the ops of a message);
* ``bert-onnxruntime-nospin``: that with ``spinning: false`` (worker threads sleep between ops);
* ``bert+gpt2``: ``bert`` + GPT2FewShotIntentClassifier on a local GPT-2 with the architecture of
  uer/gpt2-chinese-cluecorpussmall (both full-size models in one server: the memory target), with the
  fallback's default inference (onnxruntime int8) and BERT's (native int8);
* ``bert+gpt2-fp32``: the same with ``inference: {precision: fp32}`` for the fallback (onnxruntime fp32);
* ``bert+gpt2-torch``: the same with ``inference: {backend: torch}`` for the fallback (torch bf16 on CPUs with
  AVX-512 BF16);
* ``diet``: JiebaTokenizer + CountVectorsFeaturizer (char_wb 1-4) + DIETClassifier (Rasa's own baseline).

Each model is served by its own `rasa run --enable-api` process, one at a time (servers never compete for
the 2 cores), passes alternate the order. Per server: seconds from start to ready, RSS after load and after the
messages (the server and its children), /model/parse p50 / p95 / p99 over the assistant's test messages
(sequential, one client, after a warm-up). The random-weight BERT is unsure of every message, so in
``bert+gpt2`` the fallback runs on every message: its latency is the fallback path's, not the usual mix.

Writes benchmarks/results/http_latency.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from benchmarks import _common as C  # noqa: E402

C.quiet_environment()

WORK = C.WORK / "http_latency"
RASA = str(Path(sys.executable).with_name("rasa"))
NLU_DATA = C.ROOT / "data" / "nlu.yml"
GPT2_FULL = dict(vocab_size=21128, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


# ----------------------------------------------------------------------------------- models
FOLDERS = {"bert": WORK / "chinese-bert-wwm-ext-random", "gpt2": WORK / "gpt2-chinese-cluecorpussmall-random"}


def full_size_folders() -> Dict[str, Path]:
    """Random-weight hfl/chinese-bert-wwm-ext and uer/gpt2-chinese-cluecorpussmall, saved like hub downloads."""
    if all((f / "config.json").is_file() for f in FOLDERS.values()):
        return FOLDERS
    if not C.BERT_VOCAB.is_file():
        raise SystemExit(
            f"{C.BERT_VOCAB} not found: the full-size models need the 21,128-token Chinese BERT vocabulary"
        )
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(C.BERT_VOCAB))
    BertModel(BertConfig(**C.FULL_BERT)).save_pretrained(str(FOLDERS["bert"]))
    tokenizer.save_pretrained(str(FOLDERS["bert"]))
    GPT2LMHeadModel(GPT2Config(**GPT2_FULL)).save_pretrained(str(FOLDERS["gpt2"]))
    tokenizer.save_pretrained(str(FOLDERS["gpt2"]))
    return FOLDERS


def pipelines(folders: Dict[str, Path]) -> Dict[str, List[Dict[str, Any]]]:
    bert = {
        "name": "nlu_bert.BertIntentClassifier",
        "model": str(folders["bert"]),
        "epochs": 1,
        "validation_split": 0.0,
        "batch_size": 16,
    }
    gpt2 = {"name": "nlu_bert.GPT2FewShotIntentClassifier", "model": str(folders["gpt2"])}
    tokenizer = {"name": "JiebaTokenizer"}
    onnx = {**bert, "inference": {"backend": "onnxruntime"}}
    return {
        "diet": [
            tokenizer,
            {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
            {"name": "DIETClassifier", "epochs": 100},
        ],
        # the defaults: `inference.backend` auto = native int8 for BERT
        "bert": [tokenizer, bert],
        "bert-onnxruntime": [tokenizer, onnx],
        "bert-onnxruntime-nospin": [tokenizer, {**onnx, "inference": {"backend": "onnxruntime", "spinning": False}}],
        "bert+gpt2": [tokenizer, bert, gpt2],
        "bert+gpt2-fp32": [tokenizer, bert, {**gpt2, "inference": {"precision": "fp32"}}],
        "bert+gpt2-torch": [tokenizer, bert, {**gpt2, "inference": {"backend": "torch"}}],
    }


def train(
    name: str, pipeline: List[Dict[str, Any]], nlu: Path, language: str = "zh", work: Path = WORK
) -> Dict[str, Any]:
    """Train (once; reused while the pipeline is unchanged) with `rasa train nlu` in a subprocess."""
    out = work / "models"
    out.mkdir(parents=True, exist_ok=True)
    stem = C.file_stem(name)
    config = out / f"{stem}.config.yml"
    text = yaml.safe_dump(
        {"recipe": "default.v1", "language": language, "pipeline": pipeline, "policies": []}, allow_unicode=True
    )
    text += f"# data: {nlu}\n"
    if any(str(c["name"]).startswith("nlu_bert.") for c in pipeline):
        text += f"# nlu_bert source: {source_digest()}\n"
    model = out / f"{stem}.tar.gz"
    info = out / f"{stem}.train.json"
    if model.is_file() and info.is_file():
        stored = json.loads(info.read_text(encoding="utf-8"))
        if stored.get("config") == text:  # (rasa adds an assistant_id to the config file itself)
            return stored
    config.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    proc = subprocess.run(
        [RASA, "train", "nlu", "-c", str(config), "--nlu", str(nlu), "--out", str(out), "--fixed-model-name", stem],
        # no Rasa training cache: it keys components by config and data, not by nlu-bert's code, so after a
        # change it would hand back components that the old code trained and exported
        cwd=str(C.ROOT),
        env={**server_env(), "RASA_MAX_CACHE_SIZE": "0"},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not model.is_file():
        raise RuntimeError(
            f"training {name} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    result = {
        "train_s": round(time.perf_counter() - start, 1),
        "archive_mb": round(model.stat().st_size / 1e6, 1),
        "config": text,
    }
    info.write_text(json.dumps(result), encoding="utf-8")
    return result


def source_digest() -> str:
    """A digest of the nlu_bert package's code: a change to the components retrains the cached models."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((C.ROOT / "nlu_bert").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------- serving
def server_env() -> Dict[str, str]:
    return C.offline_env(**SERVING_ENV)


# the serving settings of scripts/quickstart.sh (README "Memory")
SERVING_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: Dict[str, Any], timeout: float = 120) -> Dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants (MB)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += float(line.split()[1]) / 1024
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo.extend(int(c) for c in children)
        except OSError:
            continue
    return total


def serve_and_measure(model: Path, texts: List[str], warmup: int) -> Dict[str, Any]:
    port = free_port()
    log = model.parent / f"{model.stem}.server.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [RASA, "run", "--enable-api", "-m", str(model), "--port", str(port), "-i", "127.0.0.1"],
            cwd=str(model.parent),
            env=server_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"rasa run exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
                )
            try:
                post(url + "/model/parse", {"text": "你好"}, timeout=5)
                break
            except OSError:
                if time.perf_counter() - start > 600:
                    raise TimeoutError(f"{url} not ready after 600 s") from None
                time.sleep(0.5)
        ready_s = time.perf_counter() - start
        rss_loaded = tree_rss_mb(proc.pid)
        for text in texts[:warmup]:
            post(url + "/model/parse", {"text": text})
        times, fallback = [], 0
        for text in texts:
            t0 = time.perf_counter()
            parsed = post(url + "/model/parse", {"text": text})
            times.append(time.perf_counter() - t0)
            fallback += bool((parsed.get("few_shot") or {}).get("why_consulted"))  # GPT-2 scored the candidates
        rss_end = tree_rss_mb(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
    return {
        "ready_s": round(ready_s, 1),
        "rss_loaded_mb": round(rss_loaded),
        "rss_end_mb": round(rss_end),
        "messages": len(texts),
        "fallback_consulted": fallback,
        **C.percentiles(times, (50, 95, 99)),
    }


def test_texts(nlu: Path, n: int, seed: int) -> List[str]:
    """Messages for the servers: the bot's NLU examples, shuffled (latency does not depend on labels)."""
    from rasa.shared.data import get_nlu_directory
    from rasa.shared.nlu.training_data.loading import load_data

    texts = [
        m.get("text") for m in load_data(get_nlu_directory(str(nlu))).intent_examples
    ]  # a file or a bot's data folder
    random.Random(seed).shuffle(texts)
    return (texts * (n // max(1, len(texts)) + 1))[:n]


# ----------------------------------------------------------------------------------- report
def render(payload: Dict[str, Any]) -> str:
    lines = [
        "| pipeline | archive MB | train s | start → ready s | RSS loaded MB | RSS after MB | /model/parse p50 ms | p95 ms | p99 ms | × DIET p50 | GPT-2 consulted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    diet = payload["best"].get("diet", {}).get("p50")
    for name, r in payload["best"].items():
        t = payload["training"][name]
        ratio = f"{r['p50'] / diet:.2f}×" if diet else ""
        lines.append(
            f"| {name} | {t['archive_mb']:.1f} | {t['train_s']:.0f} | {r['ready_s']:.1f} | {r['rss_loaded_mb']} | "
            f"{r['rss_end_mb']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {ratio} | {r['fallback_consulted']} / {r['messages']} |"
        )
    m = payload["machine"]
    return (
        f"`{payload['command']}`: {m.get('cpu', '')}, {m.get('cores_available', '')} cores, load average at start "
        f"{payload['loadavg_start']}, best of {payload['passes']} passes by p50, {payload['messages']} messages "
        "per server, one client, sequential.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 pass, 60 messages")
    parser.add_argument("--passes", type=int, default=None, help="passes over the servers (default 2; 1 with --quick)")
    parser.add_argument("--messages", type=int, default=None, help="messages per server (default 200; 60 with --quick)")
    specs = pipelines(FOLDERS)
    parser.add_argument(
        "--pipelines", nargs="+", default=list(specs), help=f"of: {' '.join(specs)} and the --config names"
    )
    parser.add_argument(
        "--name", default=None, help="output name in benchmarks/results/ (default http_latency[_quick])"
    )
    parser.add_argument(
        "--nlu", type=Path, default=NLU_DATA, help="the NLU data to train and parse (default: the sample assistant's)"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[NAME=]CONFIG",
        help="also serve the pipeline of this Rasa config file (your bot's config.yml) as the row NAME (default: the "
        "file's name without .yml); repeatable. Your own components import from the folder this runs in",
    )
    parser.add_argument(
        "--work", type=Path, default=WORK, help="working folder: the trained models and server logs (git-ignored)"
    )
    parser.add_argument("--out", type=Path, default=C.RESULTS, help="results folder")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    languages = {name: "zh" for name in specs}
    extra = C.add_config_pipelines(parser, args.config, specs, languages)
    unknown = [p for p in args.pipelines if p not in specs]
    if unknown:
        parser.error(
            f"unknown --pipelines {' '.join(unknown)}: choose from {' '.join(specs)} (or add your own with --config)"
        )
    if not args.nlu.exists():
        parser.error(f"--nlu {args.nlu} does not exist")
    args.pipelines = list(dict.fromkeys(args.pipelines + extra))
    passes = args.passes or (1 if args.quick else 2)
    n = args.messages or (60 if args.quick else 200)
    args.work.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    if any(name not in extra and name != "diet" for name in args.pipelines):
        full_size_folders()  # the random-weight full-size models of the built-in BERT rows
    training = {}
    for name in tqdm(args.pipelines, desc="train", unit="model"):
        training[name] = train(name, specs[name], args.nlu.resolve(), languages[name], args.work)
    texts = test_texts(args.nlu, n, seed=0)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in args.pipelines}
    jobs = [(p, name) for p in range(passes) for name in (args.pipelines if p % 2 == 0 else args.pipelines[::-1])]
    bar = tqdm(jobs, desc="serve", unit="server")
    for _, name in bar:
        bar.set_postfix_str(name)
        model = args.work / "models" / f"{C.file_stem(name)}.tar.gz"
        # the fallback runs on every message of the random-weight BERT: fewer messages keep its pass short
        fallback = name.startswith("bert+gpt2")
        count = n if not fallback else max(10, n // 10)
        result = serve_and_measure(model, texts[:count], warmup=3 if fallback else 10)
        tqdm.write(f"{name}: {json.dumps(result)}")
        runs[name].append(result)
    payload = {
        "command": "python benchmarks/http_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": C.machine_info(),
        "loadavg_start": round(os.getloadavg()[0], 2),
        "passes": passes,
        "messages": n,
        "training": training,
        "runs": runs,
        "best": {name: min(r, key=lambda x: x["p50"]) for name, r in runs.items()},
    }
    table = render(payload)
    C.write_results(args.name or ("http_latency_quick" if args.quick else "http_latency"), payload, table, args.out)
    print(table)


if __name__ == "__main__":
    main()
