"""The real thing: `rasa train nlu` with nlu_bert components, then `rasa run --enable-api` over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu_testing import TINY_BOT
from rasa_process import http, rasa_server, run_rasa

pytestmark = pytest.mark.slow

from integration_project import CONFIG, nlu_yaml


def test_rasa_run_serves_bert_intents_over_http(trained_model: Path, tmp_path: Path) -> None:
    with rasa_server(trained_model, tmp_path, tmp_path / "server.log") as url:
        status, body = http("POST", f"{url}/model/parse", {"text": "我想申请退款"})
        assert status == 200, body
        assert body["intent"]["name"] in set(TINY_BOT) | {"nlu_fallback"}
        ranking = body["intent_ranking"]
        assert 1 <= len(ranking) <= 3
        confidences = [r["confidence"] for r in ranking]
        assert confidences == sorted(confidences, reverse=True) and all(0 <= c <= 1 for c in confidences)
        assert body["intent"] == ranking[0] or body["intent"]["name"] == "nlu_fallback"
        # the GPT-2 fallback always says whether it acted, and only ever answers with the bot's intents
        assert isinstance(body["few_shot"], dict) and isinstance(body["few_shot"]["acted"], bool)
        # the bot's own training sentences come back with their intents
        hits = acted = 0
        for intent, texts in TINY_BOT.items():
            for text in texts[:3]:
                status, body = http("POST", f"{url}/model/parse", {"text": text})
                hits += body["intent"]["name"] == intent
                assert body["intent"]["name"] in set(TINY_BOT) | {"nlu_fallback"}
                acted += bool(body["few_shot"]["acted"])
        assert hits >= 10  # of 12
        status, body = http("POST", f"{url}/model/parse", {"text": "   "})
        # BERT gives no intent for empty text; Rasa's FallbackClassifier then answers nlu_fallback
        assert status == 200 and body["intent"]["name"] in (None, "nlu_fallback")


def test_hub_model_without_hub_fails_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(
        CONFIG.replace("model: scratch", "model: hfl/chinese-bert-wwm-ext"), encoding="utf-8"
    )
    (tmp_path / "nlu.yml").write_text(nlu_yaml(TINY_BOT), encoding="utf-8")
    result = run_rasa(["train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models"], cwd=tmp_path)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "ModelUnavailableError: BertIntentClassifier: could not load the model 'hfl/chinese-bert-wwm-ext'" in output
    assert "Traceback" not in output
