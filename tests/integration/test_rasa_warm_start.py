"""Warm starts through real `rasa train nlu`: `--finetune` continues from the previous BERT (Rasa scales `epochs` by
`--epoch-fraction`), Rasa itself refuses `--finetune` with a new intent, and `warm_start_model` adds the intent."""

from __future__ import annotations

import asyncio
import json
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest

from nlu_testing import TINY_BOT, write_nlu
from rasa_process import run_rasa

pytestmark = pytest.mark.slow

CONFIG = """
recipe: default.v1
language: zh
assistant_id: nlu-bert-warm-start-test
pipeline:
  - name: nlu_bert.BertIntentClassifier
    model: scratch
    scratch_hidden_size: 32
    scratch_num_layers: 2
    scratch_num_heads: 2
    epochs: 24
    validation_split: 0.25
    ngram_buckets: 2048
    ngram_dim: 16
{extra}
policies: []
"""
WEATHER = ["今天天气怎么样", "明天会下雨吗", "外面冷不冷", "天气预报说什么", "现在气温多少度"]


def bert_report(model: Path) -> Dict[str, Any]:
    with tarfile.open(model, "r:gz") as tar:
        name = next(n for n in tar.getnames() if n.endswith("BertIntentClassifier0/training_report.json"))
        stream = tar.extractfile(name)
        assert stream is not None
        return json.loads(stream.read().decode("utf-8"))


def train(tmp_path: Path, name: str, *extra: str) -> Any:
    args = ["train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models", "--fixed-model-name", name]
    result = run_rasa([*args, *extra], cwd=tmp_path)
    return result


def test_finetune_and_warm_start_model_through_rasa_train(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(CONFIG.format(extra=""), encoding="utf-8")
    write_nlu(tmp_path / "nlu.yml", TINY_BOT)
    first = train(tmp_path, "base")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    base = bert_report(tmp_path / "models" / "base.tar.gz")

    # the same labels: Rasa loads the previous component and trains it for ceil(24 x 0.25) = 6 epochs
    tuned = train(tmp_path, "tuned", "--finetune", "models/base.tar.gz", "--epoch-fraction", "0.25")
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    report = bert_report(tmp_path / "models" / "tuned.tar.gz")
    assert report["warm_start"]["route"] == "finetune" and report["warm_start"]["epochs"] == 6
    assert report["config"]["epochs"] == 6 and len(report["history"]) <= 6
    best = base["history"][base["best_epoch"] - 1]
    assert report["warm_start"]["initial_val_accuracy"] == pytest.approx(best["val_accuracy"])

    # a new intent: Rasa 3.6 refuses --finetune before any component runs
    write_nlu(tmp_path / "nlu.yml", {**TINY_BOT, "weather": WEATHER})
    refused = train(tmp_path, "refused", "--finetune", "models/base.tar.gz")
    assert refused.returncode != 0
    assert "Cannot finetune because NLU training data contains new labels" in refused.stdout + refused.stderr

    # nlu-bert's route: a plain `rasa train` from the newest model of models/
    extra = "    warm_start_model: models\n    finetuning_epoch_fraction: 0.5"
    (tmp_path / "config.yml").write_text(CONFIG.format(extra=extra), encoding="utf-8")
    added = train(tmp_path, "added")
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    warm = bert_report(tmp_path / "models" / "added.tar.gz")["warm_start"]
    assert warm["new_intents"] == ["weather"] and warm["epochs"] == 12 and "tuned.tar.gz" in warm["from"]

    from rasa.core.agent import Agent

    agent = Agent.load(str(tmp_path / "models" / "added.tar.gz"))
    parsed = [asyncio.run(agent.parse_message(t))["intent"]["name"] for t in ["后天天气好吗", "我要退款", "你好啊"]]
    assert parsed[1:] == ["refund", "greet"] and parsed[0] == "weather", parsed
