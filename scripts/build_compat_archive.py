"""Build a tiny Rasa model archive with the code of an earlier nlu-bert release, for the compatibility test.

    .venv/bin/python scripts/build_compat_archive.py --commit cc1deae --version 0.2.0

takes the package as it was at ``--commit`` (``git archive``), trains a two-intent-classifier pipeline with
``rasa train nlu`` in a subprocess that imports that old package (``PYTHONPATH``), and writes
``tests/fixtures/archives/nlu-bert-<version>.tar.gz``, and beside it ``nlu-bert-<version>.json``: what that old
code answered for a few probe texts when it served the archive (``/model/parse`` output). tests/test_archive_compat.py
loads the archive with the current code and expects the same answers. The models are tiny (a few hundred kB in all), and the config uses the key names of that release
(``seed``, ``inference_backend``, ``scratch_n_embd``, ...), which Rasa stores in the archive's graph.

The old code runs on the current virtualenv; its native kernel is not compiled, so the native file is served by
onnxruntime (``NLU_BERT_NATIVE_KERNEL=onnxruntime``, which the test sets too, for the same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from nlu_testing import TINY_BOT, write_nlu  # noqa: E402

# texts of the bot and unlike it: some the fallback leaves alone, some it re-decides
PROBES = ["你好", "我的订单到哪了", "我要退款", "再见", "帮我看看物流", "今天天气怎么样", "退货", "嗨"]
PARSE = """
import asyncio, json, sys
from rasa.core.agent import Agent

agent = Agent.load("models/compat.tar.gz")
answers = {}
for text in json.loads(sys.argv[1]):
    out = asyncio.run(agent.parse_message(text))
    out["few_shot"].pop("time_ms", None)
    out["few_shot"].pop("cache_hit", None)
    answers[text] = {key: out[key] for key in ("intent", "intent_ranking", "few_shot")}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(answers, f, ensure_ascii=False, indent=1)
"""

CONFIG = """
recipe: default.v1
language: zh
assistant_id: nlu-bert-compat
pipeline:
  - name: nlu_bert.BertIntentClassifier
    model: scratch
    scratch_hidden_size: 32
    scratch_num_layers: 2
    scratch_num_heads: 2
    ngram_features: true
    ngram_buckets: 512
    ngram_dim: 8
    epochs: 40
    validation_split: 0.0
    seed: 7
    ranking_length: 3
  - name: nlu_bert.GPT2FewShotIntentClassifier
    model: scratch
    fine_tune: true
    fine_tune_epochs: 1
    fine_tune_learning_rate: null
    scratch_n_embd: 32
    scratch_n_layer: 2
    scratch_n_head: 2
    max_prompt_tokens: 160
    max_text_tokens: 32
    inference_backend: onnxruntime
    inference_precision: auto
    threshold: 0.5
policies: []
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", required=True, help="the release's commit (e.g. cc1deae for nlu-bert 0.2.0)")
    parser.add_argument("--version", required=True, help="the release's version, for the file name (e.g. 0.2.0)")
    parser.add_argument("--out", type=Path, help="default: tests/fixtures/archives/nlu-bert-<version>.tar.gz")
    args = parser.parse_args()
    out = args.out or REPO / "tests" / "fixtures" / "archives" / f"nlu-bert-{args.version}.tar.gz"

    with tempfile.TemporaryDirectory(prefix="nlu_bert_compat_") as tmp:
        source, project = Path(tmp) / "source", Path(tmp) / "project"
        source.mkdir()
        project.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.commit, "nlu_bert"], check=True, capture_output=True
        ).stdout
        (Path(tmp) / "source.tar").write_bytes(archive)
        with tarfile.open(Path(tmp) / "source.tar") as tar:
            tar.extractall(source)
        (project / "config.yml").write_text(CONFIG, encoding="utf-8")
        write_nlu(project / "nlu.yml", TINY_BOT)
        env = {
            **os.environ,
            "PYTHONPATH": str(source),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "RASA_TELEMETRY_ENABLED": "false",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "NLU_BERT_NATIVE_KERNEL": "onnxruntime",
        }
        check = subprocess.run(
            [sys.executable, "-c", "import nlu_bert; print(nlu_bert.__version__, nlu_bert.__file__)"],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if check[0] != args.version or not check[1].startswith(str(source)):
            print(f"error: the subprocess imports nlu-bert {check[0]} from {check[1]}", file=sys.stderr)
            return 1
        rasa = str(Path(sys.executable).with_name("rasa"))
        command = [rasa, "train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models"]
        result = subprocess.run([*command, "--fixed-model-name", "compat"], env=env, cwd=project)
        if result.returncode:
            return result.returncode
        answers_file = Path(tmp) / "answers.json"
        answers = subprocess.run(
            [sys.executable, "-c", PARSE, json.dumps(PROBES), str(answers_file)],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
        )
        if answers.returncode:
            print(answers.stderr[-3000:], file=sys.stderr)
            return answers.returncode
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / "models" / "compat.tar.gz", out)
        shutil.copyfile(answers_file, out.with_name(out.name.replace(".tar.gz", ".json")))
    print(f"{out} ({out.stat().st_size / 1024:.0f} kB), trained by nlu-bert {args.version} ({args.commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
