"""The small bot of the integration tests, trained once per session with real `rasa train nlu`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from nlu_testing import TINY_BOT
from rasa_process import run_rasa

CONFIG = """
recipe: default.v1
language: zh
assistant_id: nlu-bert-integration-test
pipeline:
  - name: JiebaTokenizer
  - name: nlu_bert.BertIntentClassifier
    model: scratch
    scratch_hidden_size: 32
    scratch_num_layers: 2
    scratch_num_heads: 2
    scratch_mlm_epochs: 1
    epochs: 30
    validation_split: 0.0
    ngram_buckets: 4096
    ngram_dim: 32
    ranking_length: 3
  - name: nlu_bert.GPT2FewShotIntentClassifier
    model: scratch
    fine_tune: true
    fine_tune_epochs: 2
    scratch_hidden_size: 32
    scratch_num_layers: 2
    scratch_num_heads: 2
    threshold: 0.3
  - name: FallbackClassifier
    threshold: 0.05
    ambiguity_threshold: 0.0
policies: []
"""


def nlu_yaml(bot: Dict[str, List[str]]) -> str:
    return yaml.safe_dump(
        {"version": "3.1", "nlu": [{"intent": k, "examples": "".join(f"- {t}\n" for t in v)} for k, v in bot.items()]},
        allow_unicode=True,
        sort_keys=False,
    )


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("integration-project")
    (project / "config.yml").write_text(CONFIG, encoding="utf-8")
    (project / "nlu.yml").write_text(nlu_yaml(TINY_BOT), encoding="utf-8")
    result = run_rasa(
        ["train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models", "--fixed-model-name", "bert"],
        cwd=project,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "BertIntentClassifier: data: 4 intents, 48 examples" in output
    assert "GPT2FewShotIntentClassifier" in output
    assert "BertIntentClassifier: epoch 1/30  loss" in output  # the per-epoch progress line
    return project / "models" / "bert.tar.gz"
