"""BertIntentClassifier warm starts: `rasa train --finetune` (Rasa's `is_finetuning` load -> train) continues from the
previous weights; `warm_start_model` adds intents and entity labels to a previous model; clear errors otherwise."""

from __future__ import annotations

import json
import math
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from safetensors import safe_open

from nlu_bert import archive
from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier, ModelArchiveError

import entity_bot
from nlu_testing import TINY_BOT, make_context, make_storage

NODE = "train_BertIntentClassifier0"  # the resource name `rasa train` gives the first BertIntentClassifier
TINY = {
    "model": "scratch",
    "scratch_hidden_size": 32,
    "scratch_num_layers": 2,
    "scratch_num_heads": 2,
    "epochs": 24,
    "validation_split": 0.25,
    "early_stopping_patience": 0,
    "ngram_features": True,
    "ngram_buckets": 2048,
    "ngram_dim": 16,
    "lexical_model": False,
}
WEATHER = ["今天天气怎么样", "明天会下雨吗", "外面冷不冷", "天气预报说什么", "现在气温多少度"]
WEATHER_HELD_OUT = ["后天天气好吗", "明天下雨吗", "今天气温多少"]
OLD_HELD_OUT = {
    "greet": "你好啊朋友",
    "goodbye": "那就再见了",
    "check_order": "帮我看看订单物流",
    "refund": "这个我要退款",
}


def data_of(bot: Dict[str, list]) -> TrainingData:
    return TrainingData([Message(data={"text": t, "intent": i}) for i, texts in bot.items() for t in texts])


def train(folder: Path, config: Dict[str, Any], data: TrainingData, context: Any = None) -> BertIntentClassifier:
    component = BertIntentClassifier.create(config, make_storage(folder), Resource(NODE), context or make_context())
    component.train(data)
    return component


def report_of(folder: Path) -> Dict[str, Any]:
    return json.loads((folder / NODE / archive.REPORT_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Tuple[BertIntentClassifier, Path]:
    """The tiny bot's model, native int8 (the default backend) with its training weights (the default)."""
    folder = tmp_path_factory.mktemp("base")
    return train(folder, TINY, data_of(TINY_BOT)), folder


def finetuning_context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), model_id="finetune", is_finetuning=True)


def test_the_archive_keeps_the_training_weights_in_save_dtype(base: Tuple[Any, Path], tmp_path: Path) -> None:
    component, folder = base
    files = {p.name for p in (folder / NODE).iterdir()}
    assert {archive.NATIVE_FILE, *archive.BERT_TRAINING_FILES} <= files
    meta = json.loads((folder / NODE / archive.META_FILE).read_text(encoding="utf-8"))
    assert meta["finetunable"] == {"files": archive.BERT_TRAINING_FILES, "dtype": "float16"}
    assert meta["backbone"] == "scratch" and meta["archive_format"] == 1
    with safe_open(str(folder / NODE / archive.BERT_WEIGHTS_FILE), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys() if "embeddings" in k} == {"torch.float16"}
    # `finetunable: false`: the archive holds only what the backend serves
    slim = BertIntentClassifier.create(
        {**TINY, "finetunable": False}, make_storage(tmp_path), Resource(NODE), make_context()
    )
    slim.model, slim.tokenizer, slim.meta = component.model, component.tokenizer, component.meta
    slim.persist()
    assert not {p.name for p in (tmp_path / NODE).iterdir()} & set(archive.BERT_TRAINING_FILES)


def test_rasa_finetune_continues_from_the_previous_weights(base: Tuple[Any, Path], tmp_path: Path) -> None:
    """Rasa's `rasa train --finetune`: `load` on the previous model's resource, then `train` (epochs already
    scaled by Rasa). Before the first step the model is the previous one: the same validation accuracy and loss."""
    _, folder = base
    storage = make_storage(tmp_path / "storage")
    shutil.copytree(folder / NODE, tmp_path / "storage" / NODE)
    config = {**TINY, "epochs": 3, "finetuning_epoch_fraction": 0.125}  # what Rasa passes for --epoch-fraction 0.125
    component = BertIntentClassifier.load(config, storage, Resource(NODE), finetuning_context())
    component.train(data_of(TINY_BOT))
    before, after = report_of(folder), report_of(tmp_path / "storage")
    warm = after["warm_start"]
    assert warm["route"] == "finetune" and warm["epochs"] == 3 and len(after["history"]) == 3
    assert warm["new_intents"] == [] and warm["dropped_intents"] == []
    best = before["history"][before["best_epoch"] - 1]
    assert warm["initial_val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert warm["initial_val_loss"] == pytest.approx(best["val_loss"], rel=0.02)  # fp16 weights
    # the first warm epoch starts where the previous training ended, not where the backbone starts
    assert after["history"][0]["loss"] < min(h["loss"] for h in before["history"][: before["best_epoch"] - 3])
    assert after["history"][-1]["val_accuracy"] >= best["val_accuracy"] - 0.1
    loaded = BertIntentClassifier.load(config, storage, Resource(NODE), make_context())
    proba = loaded.predict_proba(list(OLD_HELD_OUT.values()))
    assert sum(loaded.labels[i] == name for i, name in zip(proba.argmax(1), OLD_HELD_OUT)) >= 3


@pytest.mark.parametrize(
    "inference, source",
    [("native", "tar.gz"), ("onnxruntime", "models folder"), ("torch", "component folder")],
)
def test_a_new_intent_is_learned_and_the_old_ones_still_predict(
    base: Tuple[Any, Path], tmp_path: Path, inference: str, source: str
) -> None:
    _, folder = base
    if source == "tar.gz" or source == "models folder":
        models = tmp_path / "models"
        models.mkdir()
        with tarfile.open(models / "nlu-old.tar.gz", "w:gz") as tar:
            tar.add(str(folder / NODE), arcname=f"components/{NODE}")
        path = str(models / "nlu-old.tar.gz") if source == "tar.gz" else str(models)
    else:
        path = str(folder / NODE)
    config = {**TINY, "warm_start_model": path, "finetuning_epoch_fraction": 0.5, "inference": {"backend": inference}}
    bot = {**TINY_BOT, "weather": WEATHER}
    train(tmp_path / "new", config, data_of(bot))
    warm = report_of(tmp_path / "new")["warm_start"]
    assert warm["route"] == "warm_start_model" and warm["new_intents"] == ["weather"]
    assert warm["epochs"] == math.ceil(TINY["epochs"] * 0.5) and warm["vocab_added"] > 0
    loaded = BertIntentClassifier.load(config, make_storage(tmp_path / "new"), Resource(NODE), make_context())
    assert loaded.predictor.backend == inference and "weather" in loaded.labels
    proba = loaded.predict_proba(WEATHER_HELD_OUT + list(OLD_HELD_OUT.values()))
    names = [loaded.labels[i] for i in proba.argmax(1)]
    assert names[: len(WEATHER_HELD_OUT)].count("weather") >= 2, names
    assert sum(a == b for a, b in zip(names[len(WEATHER_HELD_OUT) :], OLD_HELD_OUT)) >= 3, names
    texts = [t for texts in TINY_BOT.values() for t in texts]
    gold = [i for i, texts in TINY_BOT.items() for _ in texts]
    predicted = [loaded.labels[i] for i in loaded.predict_proba(texts).argmax(1)]
    assert np.mean([p == g for p, g in zip(predicted, gold)]) >= 0.9


def test_new_entity_labels_get_new_tags_and_the_old_ones_are_kept(tmp_path: Path) -> None:
    config = {**TINY, "validation_split": 0.0, "epochs": 30}
    everything = entity_bot.training_data(per_template=6, seed=0)
    old = TrainingData([m for m in everything.training_examples if m.get("intent") != "ticket"])
    train(tmp_path / "old", config, old)
    warm_config = {**config, "warm_start_model": str(tmp_path / "old" / NODE)}
    component = train(tmp_path / "new", warm_config, everything)
    warm = report_of(tmp_path / "new")["warm_start"]
    assert warm["new_intents"] == ["ticket"]
    assert {t.split("-", 1)[1] for t in warm["new_entity_tags"]} == {"city#from", "city#to"}, warm
    messages = [Message(data={"text": t}) for t in ["我想买保温杯", "订一张从北京到上海的票"]]
    component.process(messages)
    products = [e["value"] for e in messages[0].get("entities") if e["entity"] == "product"]
    cities = {(e["value"], e.get("role")) for e in messages[1].get("entities") if e["entity"] == "city"}
    assert products == ["保温杯"] and messages[1].get("intent")["name"] == "ticket"
    assert cities == {("北京", "from"), ("上海", "to")}


# ---------------------------------------------------------------- errors
def _no_bert(tmp_path: Path) -> str:
    (tmp_path / "m" / "components" / "train_X").mkdir(parents=True)
    (tmp_path / "m" / "components" / "train_X" / archive.META_FILE).write_text('{"component": "Other"}')
    return str(tmp_path / "m")


def _other_component(tmp_path: Path) -> str:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / archive.META_FILE).write_text('{"component": "GPT2FewShotIntentClassifier"}')
    return str(tmp_path / "c")


def _junk_archive(tmp_path: Path) -> str:
    (tmp_path / "m.tar.gz").write_bytes(b"not a tar")
    return str(tmp_path / "m.tar.gz")


@pytest.mark.parametrize(
    "path, extra, message",
    [
        (lambda t, f: str(t / "missing.tar.gz"), {}, "BertIntentClassifier: `warm_start_model` '{t}/missing.tar.gz' does not exist"),
        (lambda t, f: str(t), {}, "BertIntentClassifier: `warm_start_model` '{t}' is a folder without a Rasa model"),
        (lambda t, f: _no_bert(t), {}, "BertIntentClassifier: `warm_start_model` '{t}/m' holds no BertIntentClassifier model"),
        (lambda t, f: _other_component(t), {}, "BertIntentClassifier: `warm_start_model` '{t}/c' holds no BertIntentClassifier model"),
        (lambda t, f: _junk_archive(t), {}, "`warm_start_model` '{t}/m.tar.gz' is not a readable Rasa model archive"),
        (lambda t, f: f, {"model": "hfl/chinese-bert-wwm-ext"}, "was trained from the backbone 'scratch', but `model` is 'hfl/chinese-bert-wwm-ext'. Set `model: scratch` in config.yml"),
        (lambda t, f: f, {"scratch_hidden_size": 64}, "was trained with `scratch_hidden_size` 32, but the config gives 64. Set `scratch_hidden_size` equal to 32"),
        (lambda t, f: f, {"ngram_features": False}, "was trained with `ngram_buckets` 2048, but the config gives 0."),
        (lambda t, f: f, {"max_length": 128}, "was trained with `max_length` 64, but the config gives 128. Set `max_length` at most 64"),
    ],
    ids=["missing", "no-model", "no-bert", "other-component", "not-an-archive", "backbone", "scratch-size", "ngrams", "max-length"],
)  # fmt: skip
def test_warm_start_errors_say_what_to_change(
    base: Tuple[Any, Path], tmp_path: Path, path: Any, extra: Dict[str, Any], message: str
) -> None:
    _, folder = base
    config = {**TINY, **extra, "warm_start_model": path(tmp_path, str(folder / NODE))}
    with pytest.raises(InvalidConfigException, match=re.escape(message.format(t=tmp_path))):
        train(tmp_path / "new", config, data_of(TINY_BOT))


def test_an_archive_without_training_weights_names_the_fix(base: Tuple[Any, Path], tmp_path: Path) -> None:
    _, folder = base
    shutil.copytree(folder / NODE, tmp_path / "slim" / NODE)
    for name in archive.BERT_TRAINING_FILES:
        (tmp_path / "slim" / NODE / name).unlink()
    fix = "Train that model once more with a full `rasa train` and `finetunable: true` (the default)"
    config = {**TINY, "warm_start_model": str(tmp_path / "slim" / NODE)}
    with pytest.raises(
        ModelArchiveError, match=r"holds no training weights \(model.safetensors is not in its archive\)"
    ):
        train(tmp_path / "new", config, data_of(TINY_BOT))
    storage = make_storage(tmp_path / "slim")
    component = BertIntentClassifier.load(TINY, storage, Resource(NODE), finetuning_context())  # still serves
    assert component.predict_proba(["你好"]).shape == (1, 4)
    with pytest.raises(ModelArchiveError, match=re.escape(fix)):
        component.train(data_of(TINY_BOT))
