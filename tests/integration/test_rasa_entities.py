"""Entities through real `rasa train nlu` and `rasa test nlu`: the entity report names BertIntentClassifier, with
and without JiebaTokenizer in the pipeline, and EntitySynonymMapper after it maps its values."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rasa.shared.nlu.training_data.training_data import TrainingData

from entity_bot import examples, training_data
from rasa_process import run_rasa

pytestmark = pytest.mark.slow

CONFIG = """
recipe: default.v1
language: zh
assistant_id: nlu-bert-entities-test
pipeline:
{tokenizer}
  - name: nlu_bert.BertIntentClassifier
    model: scratch
    scratch_hidden_size: 32
    scratch_num_layers: 2
    scratch_num_heads: 2
    epochs: 40
    validation_split: 0.0
    ngram_buckets: 2048
    ngram_dim: 16
  - name: EntitySynonymMapper
policies: []
"""


@pytest.mark.parametrize("tokenizer", ["  - name: JiebaTokenizer", ""], ids=["jieba", "no-tokenizer"])
def test_rasa_test_nlu_reports_the_components_entities(tmp_path: Path, tokenizer: str) -> None:
    (tmp_path / "config.yml").write_text(CONFIG.format(tokenizer=tokenizer), encoding="utf-8")
    data = training_data()
    data.entity_synonyms = {"蓝牙耳机": "bluetooth_headphones"}
    data.persist_nlu(str(tmp_path / "nlu.yml"))
    seen = {m.get("text") for m in data.training_examples}
    TrainingData(training_examples=[m for m in examples(3, seed=7) if m.get("text") not in seen]).persist_nlu(
        str(tmp_path / "test.yml")
    )
    train = run_rasa(
        ["train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models", "--fixed-model-name", "m"],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    test = run_rasa(
        ["test", "nlu", "--model", "models/m.tar.gz", "--nlu", "test.yml", "--out", "results", "--no-plot"],
        cwd=tmp_path,
    )
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "BertIntentClassifier_report.json").read_text(encoding="utf-8"))
    # Rasa's labels join type, role and group: city.from, count.1 (docs/entities.md)
    assert {"product", "count", "city.from", "city.to", "count.1", "product.2"} <= set(report)
    assert report["micro avg"]["f1-score"] > 0.7, report["micro avg"]
    assert (tmp_path / "results" / "intent_report.json").is_file()

    from rasa.core.agent import Agent

    agent = Agent.load(str(tmp_path / "models" / "m.tar.gz"))
    parsed = asyncio.run(agent.parse_message("我想买蓝牙耳机"))
    products = [e for e in parsed["entities"] if e["entity"] == "product"]
    assert [(e["value"], e["start"], e["end"], e["extractor"]) for e in products] == [
        ("bluetooth_headphones", 3, 7, "BertIntentClassifier")
    ]
    assert products[0]["processors"] == ["EntitySynonymMapper"]
