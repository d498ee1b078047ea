"""Helpers shared by the benchmark scripts: machine facts, memory, timing, the full-size BERT config, texts.

Nothing here imports torch at module import time (a benchmark worker that measures onnxruntime must
not pay for it).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"  # git-ignored: models, exports, caches
SHARED = ROOT.parent / "shared" / "datasets"
BERT_VOCAB = SHARED / "bert_chinese_vocab" / "raw" / "vocab.txt"
SMP2017 = SHARED / "smp2017_ecdt_task1" / "raw" / "Task1data"

# hfl/chinese-bert-wwm-ext (= bert-base-chinese): the architecture the production config names
FULL_BERT = dict(
    vocab_size=21128,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)


def quiet_environment() -> None:
    """Keep TensorFlow / transformers quiet and off the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("USE_TF", "0")  # transformers must not import TensorFlow
    os.environ.setdefault("USE_TORCH", "1")


def offline_env(**extra: str) -> Dict[str, str]:
    """Environment for the `rasa` subprocesses a benchmark starts: this repo importable, no hub, quiet logs."""
    env = dict(os.environ)
    env.update(
        # this repo, then where the benchmark runs (as the `rasa` command does: a bot's own components import)
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.getcwd(), env.get("PYTHONPATH", "")) if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TF_CPP_MIN_LOG_LEVEL="3",
        RASA_TELEMETRY_ENABLED="false",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def config_pipeline(spec: str) -> Tuple[str, List[Dict[str, Any]], str]:
    """``[NAME=]CONFIG`` of a benchmark's ``--config``: the row's name (default: the file's name without its
    suffix), and the pipeline and language of that Rasa config file (a bot's config.yml)."""
    import yaml

    name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    config_path = Path(path)
    if not config_path.is_file():
        raise ValueError(f"--config {spec}: {config_path} is not a file")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {spec}: {config_path} is not valid YAML ({e})") from e
    pipeline = config.get("pipeline") if isinstance(config, dict) else None
    if not isinstance(pipeline, list) or not pipeline:
        raise ValueError(
            f"--config {spec}: {config_path} has no `pipeline` list. Write the pipeline out in the file "
            "(a pipeline left to Rasa's auto-configuration is not benchmarked)."
        )
    # "en": Rasa's own default when a config names no language
    return name or config_path.stem, pipeline, str(config.get("language") or "en")


def file_stem(name: str) -> str:
    """A row name (``bert+gpt2``, a ``--config`` NAME) as a file name: ``bert_gpt2``."""
    import re

    return re.sub(r"[^\w.-]", "_", name)


def add_config_pipelines(
    parser: Any, specs: List[str], pipelines: Dict[str, Any], languages: Dict[str, str]
) -> List[str]:
    """Add each ``--config`` pipeline to ``pipelines`` / ``languages`` under its row name; the names added.
    A bad file or a taken name is a usage error (exit 2) with what to change."""
    added = []
    for spec in specs:
        try:
            name, pipeline, language = config_pipeline(spec)
        except ValueError as e:
            parser.error(str(e))
        if name in pipelines:
            parser.error(f"--config {spec}: the name {name!r} is taken; name the row with NAME=CONFIG")
        pipelines[name], languages[name] = pipeline, language
        added.append(name)
    return added


# ----------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(
    wanted: Iterable[str] = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"),
) -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for name in ("torch", "transformers", "onnxruntime", "onnx", "numpy"):
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:  # noqa: BLE001
            info[name] = None
    return info


# ----------------------------------------------------------------------------------- memory / time
def rss_mb() -> float:
    """Current resident set size (MB)."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    kb = _status_kb("VmHWM")
    if kb:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def percentiles(seconds: Sequence[float], qs: Sequence[int] = (50, 95)) -> Dict[str, float]:
    arr = np.asarray(seconds, dtype=np.float64) * 1e3
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in qs}


def time_calls(fn, n: int, warmup: int = 3) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


# ----------------------------------------------------------------------------------- model facts
def linear_params(hidden: int, layers: int, intermediate: int, num_labels: int) -> int:
    """Weights that go through a GEMM per token (Q, K, V, O, FFN in, FFN out; the head once per message)."""
    return layers * (4 * hidden * hidden + 2 * hidden * intermediate)


def flops_per_message(
    tokens: int, hidden: int = 768, layers: int = 12, intermediate: int = 3072, num_labels: int = 31
) -> float:
    """2 x weights x tokens for the linear layers + QK^T and AV (2 x 2 x tokens^2 x hidden per layer) + head."""
    linear = 2.0 * linear_params(hidden, layers, intermediate, num_labels) * tokens
    attention = 2.0 * 2.0 * tokens * tokens * hidden * layers
    head = 2.0 * hidden * num_labels
    return linear + attention + head


# ----------------------------------------------------------------------------------- texts
def smp2017_split(split: str) -> Tuple[List[str], List[str]]:
    """(texts, labels) of SMP2017-ECDT task 1 (`train`, `develop`, `test`); empty when absent."""
    folder = SMP2017 / split
    texts: List[str] = []
    labels: List[str] = []
    if not folder.is_dir():
        return texts, labels
    for path in sorted(folder.glob(f"{split}_*.txt")):
        label = path.stem.split("_", 1)[1]
        for line in path.read_text(encoding="utf-8").replace("\ufeff", "").split("\n"):
            line = line.strip()
            if line:
                texts.append(line)
                labels.append(label)
    return texts, labels


SYNTHETIC_PARTS = [
    "帮我查一下",
    "明天北京的天气",
    "播放周杰伦的歌",
    "给张三打电话",
    "订一张去上海的机票",
    "今天股市怎么样",
    "红烧肉怎么做",
    "讲个笑话",
    "附近有什么电影院",
    "把这句话翻译成英文",
    "提醒我下午三点开会",
    "打开微信",
]


def sample_texts(n: int, seed: int = 0) -> List[str]:
    """``n`` Chinese messages: SMP2017 test texts where the dataset is here, synthetic ones otherwise."""
    texts, _ = smp2017_split("test")
    rng = np.random.default_rng(seed)
    if not texts:
        texts = ["".join(rng.choice(SYNTHETIC_PARTS, size=int(rng.integers(1, 4)))) for _ in range(max(n, 50))]
    idx = rng.permutation(len(texts))[:n]
    return [texts[i] for i in idx]


def load_bert_tokenizer(vocab: Path = BERT_VOCAB):
    from transformers import BertTokenizerFast

    if not vocab.is_file():
        raise SystemExit(f"{vocab} is missing: the benchmark needs the BERT Chinese vocab.txt")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, tokenize_chinese_chars=True)


# ----------------------------------------------------------------------------------- output
def write_results(name: str, payload: Dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> Tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def git_state() -> Dict[str, Any]:
    """The commit measured, and the tracked files that differ from it (the numbers belong to that code)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": changed}
