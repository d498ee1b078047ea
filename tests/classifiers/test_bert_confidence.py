"""BertIntentClassifier's confidences end to end on a tiny scratch BERT: the temperature and the out-of-scope factor
fitted in `train`, stored in meta.json, applied by every backend, reported in training_report.json; old archives
load with temperature 1; messages without content, and of words the bot was not trained on, end as Rasa's
nlu_fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier
from scipy.special import softmax

from nlu_bert import archive
from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier
from nlu_bert.confidence import fitting, out_of_scope

from contract import assert_intent_contract
from nlu_testing import TINY_BOT, make_context, make_storage, messages, tiny_training_data

# the tiny bot's examples, each in 5 phrasings: 240 examples, 60 of them held out
AROUND = [("", ""), ("请问", ""), ("", "谢谢"), ("麻烦", "一下"), ("那个", "吧")]
BIGGER_BOT = {intent: [f"{a}{t}{b}" for t in texts for a, b in AROUND] for intent, texts in TINY_BOT.items()}
CONFIG = {
    "model": "scratch",
    "scratch_hidden_size": 32,
    "scratch_num_layers": 2,
    "scratch_num_heads": 2,
    "epochs": 8,
    "validation_split": 0.25,
    "early_stopping_patience": 0,
    "ngram_buckets": 2048,
    "ngram_dim": 16,
}
BACKENDS = {"native": {}, "torch": {"inference": {"backend": "torch", "precision": "fp32"}, "save_dtype": "float32"}}


def train(folder: Path, config: Dict[str, Any]) -> Tuple[BertIntentClassifier, LocalModelStorage, Resource]:
    storage, resource = make_storage(folder), Resource("bert_intent")
    component = BertIntentClassifier.create(config, storage, resource, make_context())
    component.train(tiny_training_data(BIGGER_BOT))
    return component, storage, resource


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Any, ...]:
    config = {**CONFIG, **BACKENDS[request.param]}
    return (*train(tmp_path_factory.mktemp(request.param), config), config)


def stored(storage: LocalModelStorage, resource: Resource) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    with storage.read_from(resource) as folder:
        return archive.read_meta(Path(folder), archive.BERT), archive.read_report(Path(folder))


def test_train_fits_stores_and_reports_the_calibration(trained: Tuple[Any, ...]) -> None:
    component, storage, resource, _ = trained
    meta, report = stored(storage, resource)
    confidence = report["confidence"]
    assert confidence["held_out_examples"] == 60 and "skipped" not in confidence
    assert meta["confidence"]["temperature"] == pytest.approx(confidence["temperature"], rel=1e-4)
    assert len(meta["confidence"]["energy_reference"]) == out_of_scope.REFERENCE_POINTS
    for key in ("reliability_before", "reliability_after"):
        assert sum(b["count"] for b in confidence[key]) == 60
    assert 0 <= confidence["ece_after"] <= 1 and 0 <= confidence["ece_before"] <= 1
    recommended = confidence["recommended_thresholds"]
    assert fitting.THRESHOLD_GRID[0] <= recommended["fallback_classifier_threshold"] <= recommended["gpt2_threshold"]
    assert set(confidence["synthetic_negatives"]) == {"shuffled", "keyboard_mash"}


def test_every_backend_serves_the_stored_temperature_and_factor(trained: Tuple[Any, ...]) -> None:
    component, storage, resource, config = trained
    loaded = BertIntentClassifier.load(config, storage, resource, make_context())
    meta, _ = stored(storage, resource)
    texts = ["我的订单到哪了", "今天天气怎么样", "随便聊聊吧"]
    w_bert, w_lexical = meta["confidence"]["lexical"]["weights"]
    logits = w_bert * loaded.served.logits(texts) + w_lexical * loaded.confidence.ensemble.model.log_proba(texts)
    t, ref = meta["confidence"]["temperature"], meta["confidence"]["energy_reference"]
    expected = softmax(logits / t, axis=-1) * out_of_scope.in_scope_factor(out_of_scope.energy(logits, t), ref)[:, None]
    assert np.allclose(loaded.predict_proba(texts), expected)
    assert np.allclose(loaded.predict_proba(texts), component.predict_proba(texts), atol=1e-4)
    msgs = messages(texts + ["😀😀😀", "？？？"])
    loaded.process(msgs)
    for m in msgs:
        assert_intent_contract(m, ranking_length=10, allowed=TINY_BOT)


def test_archive_without_confidence_settings_loads_with_temperature_one(
    trained: Tuple[Any, ...], tmp_path: Path
) -> None:
    component, storage, resource, config = trained
    with storage.read_from(resource) as folder:
        meta = json.loads((Path(folder) / archive.META_FILE).read_text())
        meta.pop("confidence")
        (Path(folder) / archive.META_FILE).write_text(json.dumps(meta))
    try:
        old = BertIntentClassifier.load(config, storage, resource, make_context())
        texts = ["我要退款", "明天见"]
        assert old.confidence.ensemble is None
        assert np.allclose(old.predict_proba(texts), softmax(old.served.logits(texts), axis=-1))
    finally:
        with storage.read_from(resource) as folder:
            archive.write_meta(Path(folder), archive.BERT, component.meta)


def test_messages_without_content_end_as_nlu_fallback_with_rasas_defaults(trained: Tuple[Any, ...]) -> None:
    component, _, _, _ = trained
    fallback = FallbackClassifier.create(
        FallbackClassifier.get_default_config(), make_storage(Path("unused")), Resource("fb"), make_context()
    )
    texts = ["😀😀😀", "？？？", "!!!", "🙏", "……", "asdfghjkl", "qwer qwer"]
    msgs = fallback.process(component.process(messages(texts + ["我要退款"])))
    assert [m.get("intent")["name"] for m in msgs[:-1]] == ["nlu_fallback"] * len(texts)
    assert msgs[-1].get("intent")["name"] == "refund"


def test_words_of_the_training_examples_are_stored_and_read(tmp_path: Path) -> None:
    bot = {**BIGGER_BOT, "greet": BIGGER_BOT["greet"] + ["Hello", "hi 你好"]}
    storage, resource = make_storage(tmp_path), Resource("bert_intent")
    component = BertIntentClassifier.create({**CONFIG, "epochs": 2}, storage, resource, make_context())
    component.train(tiny_training_data(bot))
    meta, _ = stored(storage, resource)
    assert meta["confidence"]["known_words"] == ["hello", "hi"]
    loaded = BertIntentClassifier.load({**CONFIG, "epochs": 2}, storage, resource, make_context())
    for model in (component.confidence, loaded.confidence):
        assert model.readable("HELLO!") and model.readable("hi") and model.readable("你好")
        assert not model.readable("asdfghjkl") and not model.readable("hey")
    assert loaded.predict_proba(["asdfghjkl"]).max() == 0.0
    off = BertIntentClassifier.load({**CONFIG, "unknown_words_rule": False}, storage, resource, make_context())
    assert off.confidence.readable("asdfghjkl")


def test_small_bot_skips_calibration_with_a_clear_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage, resource = make_storage(tmp_path), Resource("bert_intent")
    component = BertIntentClassifier.create({**CONFIG, "epochs": 2}, storage, resource, make_context())
    with caplog.at_level("INFO"):
        component.train(tiny_training_data())
    assert "confidence calibration skipped: temperature 1: 12 held-out examples" in caplog.text
    meta, report = stored(storage, resource)
    assert meta["confidence"]["temperature"] == 1.0 and "recommended_thresholds" in report["confidence"]
    # 12 held-out examples: the out-of-scope reference is the lexical model's, cross-fitted on all 48 examples
    assert meta["confidence"]["energy_source"] == "lexical" and "out_of_scope_reference" in report["confidence"]
    # and the lexical model has background classes beside it, stored in the archive, with their own reference
    assert report["confidence"]["out_of_scope_background"]["domains"] and meta["confidence"]["background_reference"]
    with storage.read_from(resource) as folder:
        assert (Path(folder) / "lexical_background.npz").exists()
    loaded = BertIntentClassifier.load({**CONFIG, "epochs": 2}, storage, resource, make_context())
    texts = ["我的订单到哪了", "今天天气怎么样", "随便聊聊吧", "红烧肉怎么做才好吃"]
    background = loaded.confidence.ensemble.background
    factor = np.minimum(
        out_of_scope.in_scope_factor(background.energy(texts), meta["confidence"]["energy_reference"]),
        out_of_scope.in_scope_factor(background.background_log_odds(texts), meta["confidence"]["background_reference"]),
    )
    w_bert, w_lexical = meta["confidence"]["lexical"]["weights"]
    logits = w_bert * loaded.served.logits(texts) + w_lexical * loaded.confidence.ensemble.model.log_proba(texts)
    assert np.allclose(loaded.predict_proba(texts), softmax(logits, axis=-1) * factor[:, None])
    assert np.allclose(loaded.predict_proba(texts), component.predict_proba(texts), atol=1e-4)


def test_calibration_and_out_of_scope_factor_can_be_switched_off(tmp_path: Path) -> None:
    config = {**CONFIG, "epochs": 2, "calibrate": False, "out_of_scope_quantile": 0, "no_content_rule": False,
              "unknown_words_rule": False, "lexical_model": False}  # fmt: skip
    component, storage, resource = train(tmp_path, config)
    meta, _ = stored(storage, resource)
    assert meta["confidence"] == {"temperature": 1.0, "energy_reference": []} and "lexical" not in meta
    with storage.read_from(resource) as folder:
        assert not (Path(folder) / "lexical.npz").exists()
    texts = ["😀😀😀", "asdfghjkl", "我要退款"]
    assert np.allclose(component.predict_proba(texts), softmax(component.served.logits(texts), axis=-1))


@pytest.mark.parametrize(
    "key, value",
    [
        ("calibrate", "yes"),
        ("out_of_scope_quantile", 0.9),
        ("no_content_rule", 2),
        ("unknown_words_rule", "yes"),
        ("lexical_model", "on"),
    ],
)
def test_bad_confidence_settings_name_the_key(key: str, value: Any, tmp_path: Path) -> None:
    from rasa.shared.exceptions import InvalidConfigException

    with pytest.raises(InvalidConfigException, match=f"`{key}`"):
        BertIntentClassifier.create({**CONFIG, key: value}, make_storage(tmp_path), Resource("x"), make_context())


def test_damaged_lexical_model_is_a_clear_archive_error(trained: Tuple[Any, ...]) -> None:
    from nlu_bert.archive import ModelArchiveError

    component, storage, resource, config = trained
    with storage.read_from(resource) as folder:
        path = Path(folder) / "lexical.npz"
        kept = path.read_bytes()
        path.write_bytes(b"not an npz")
    try:
        with pytest.raises(ModelArchiveError, match="lexical.npz is unreadable.*Train the model again"):
            BertIntentClassifier.load(config, storage, resource, make_context())
    finally:
        path.write_bytes(kept)
