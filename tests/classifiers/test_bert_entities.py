"""BertIntentClassifier's entities: a tiny scratch model on a synthetic bot learns exact spans, roles and groups, in
every backend; bad annotations warn; other extractors' entities stay; a bot without entities is unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import archive
from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier

from entity_bot import examples, spans, training_data
from nlu_testing import make_context, make_storage, messages, tiny_training_data

TINY_ENTITIES = {
    "model": "scratch",
    "scratch_hidden_size": 32,
    "scratch_num_layers": 2,
    "scratch_num_heads": 2,
    "epochs": 40,
    "validation_split": 0.0,
    "ngram_features": True,
    "ngram_buckets": 2048,
    "ngram_dim": 16,
}
EXTRACTOR = "BertIntentClassifier"
INFERENCE_OPTIONS = [
    ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("native", "int8"), ("torch", "int8"), ("torch", "bf16"), ("torch", "fp32"),
]  # fmt: skip
Trained = Tuple[BertIntentClassifier, LocalModelStorage, Resource]


def train(folder: Path, config: Dict[str, Any], data: TrainingData) -> Trained:
    storage, resource = make_storage(folder), Resource("bert_entities")
    component = BertIntentClassifier.create(config, storage, resource, make_context())
    component.train(data)
    return component, storage, resource


def parse(component: BertIntentClassifier, text: str) -> Message:
    (message,) = component.process(messages([text]))
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Served as trained: the default inference (int8, native where the kernel runs, else its onnxruntime graph)."""
    return train(tmp_path_factory.mktemp("entities"), {**TINY_ENTITIES, "save_dtype": "float32"}, training_data())


@pytest.fixture(scope="module")
def held_out() -> list:
    """New combinations of the templates' values (the texts are not in the training data)."""
    seen = {m.get("text") for m in training_data().training_examples}
    return [m for m in examples(4, seed=7) if m.get("text") not in seen]


# ---------------------------------------------------------------- learning
def test_a_tiny_model_learns_exact_spans_on_a_synthetic_bot(trained: Trained, held_out: list) -> None:
    component, _, _ = trained
    exact = sum(spans(parse(component, m.get("text"))) == spans(m) for m in held_out)
    assert exact >= 0.85 * len(held_out), f"{exact} of {len(held_out)}"
    intents = sum(parse(component, m.get("text")).get("intent")["name"] == m.get("intent") for m in held_out)
    assert intents >= 0.85 * len(held_out)


def test_entity_dicts_are_rasas(trained: Trained) -> None:
    component, _, _ = trained
    message = parse(component, "订一张从北京到上海的票")
    entities = message.get("entities")
    assert [(e["entity"], e["value"], e.get("role")) for e in entities] == [
        ("city", "北京", "from"),
        ("city", "上海", "to"),
    ]
    for entity in entities:
        assert set(entity) == {"entity", "start", "end", "value", "confidence_entity", "role", "extractor"}
        assert (
            entity["extractor"] == EXTRACTOR
            and "订一张从北京到上海的票"[entity["start"] : entity["end"]] == entity["value"]
        )
        assert type(entity["confidence_entity"]) is float and 0.0 < entity["confidence_entity"] <= 1.0
    assert "entities" in message.as_dict(only_output_properties=True)


def test_roles_and_groups(trained: Trained, held_out: list) -> None:
    component, _, _ = trained
    with_roles = [m for m in held_out if any(e.get("role") for e in m.get("entities") or [])]
    with_groups = [m for m in held_out if any(e.get("group") for e in m.get("entities") or [])]
    assert with_roles and with_groups
    for group in (with_roles, with_groups):
        right = sum(spans(parse(component, m.get("text"))) == spans(m) for m in group)
        assert right >= 0.75 * len(group), f"{right} of {len(group)}"
    message = parse(component, "买两个蓝牙耳机和三个充电宝")
    assert spans(message) == [
        (1, 2, "count", None, "1"),
        (3, 7, "product", None, "1"),
        (8, 9, "count", None, "2"),
        (10, 13, "product", None, "2"),
    ]


@pytest.mark.parametrize(
    "text, value",
    [
        ("   我想买AirPods Pro", "AirPods Pro"),  # whitespace before, a Latin name with a space
        ("帮我下单１２个充电宝", "１２"),  # full-width digits
        ("😀😀我想买iPhone 15🙂", "iPhone 15"),  # emoji around
        ("来10件保温杯吧\n", "10"),
    ],
)
def test_offsets_in_mixed_scripts_are_exact(trained: Trained, text: str, value: str) -> None:
    component, _, _ = trained
    found = {e["value"]: e for e in parse(component, text).get("entities")}
    assert value in found, found
    entity = found[value]
    assert (entity["start"], entity["end"]) == (text.index(value), text.index(value) + len(value))


def test_entities_of_other_extractors_are_kept(trained: Trained) -> None:
    component, _, _ = trained
    regex = {"entity": "product", "start": 3, "end": 7, "value": "蓝牙耳机", "extractor": "RegexEntityExtractor"}
    message = Message(data={"text": "我想买蓝牙耳机", "entities": [regex]})
    component.process([message])
    entities = message.get("entities")
    assert entities[0] == regex
    # the same span from both extractors: two entries, one per extractor (docs: what a slot then gets)
    assert [(e["start"], e["end"], e["extractor"]) for e in entities[1:]] == [(3, 7, EXTRACTOR)]


def test_no_tokenizer_in_the_pipeline_gets_the_models_tokens(trained: Trained) -> None:
    component, _, _ = trained
    message = parse(component, "我想买iPhone 15")
    tokens = message.get("text_tokens")
    assert [t.text for t in tokens][:3] == ["我", "想", "买"]
    assert all("我想买iPhone 15"[t.start : t.end] == t.text for t in tokens)


def test_synonyms_through_entity_synonym_mapper(trained: Trained) -> None:
    from rasa.nlu.extractors.entity_synonyms import EntitySynonymMapper

    component, _, _ = trained
    mapper = EntitySynonymMapper.create({}, make_storage(Path(trained[1]._storage_path) / "syn"), Resource("syn"),
                                        make_context(), synonyms={"蓝牙耳机": "bluetooth_headphones"})  # fmt: skip
    message = parse(component, "我想买蓝牙耳机")
    mapper.process([message])
    (entity,) = [e for e in message.get("entities") if e["entity"] == "product"]
    assert entity["value"] == "bluetooth_headphones" and entity["processors"] == ["EntitySynonymMapper"]
    assert (entity["start"], entity["end"]) == (3, 7)


# ---------------------------------------------------------------- backends and archive
def persisted_copy(component: BertIntentClassifier, folder: Path, config: Dict[str, Any]) -> Trained:
    storage, resource = make_storage(folder), Resource("bert_entities")
    copy = BertIntentClassifier.create({**TINY_ENTITIES, **config}, storage, resource, make_context())
    copy.model, copy.tokenizer, copy.labels, copy.meta = (
        component.model,
        component.tokenizer,
        component.labels,
        component.meta,
    )
    copy.persist()
    return copy, storage, resource


@pytest.fixture(scope="module")
def reference(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> BertIntentClassifier:
    """The trained weights served by torch fp32."""
    config = {"save_dtype": "float32", "inference": {"backend": "torch", "precision": "fp32"}}
    _, storage, resource = persisted_copy(trained[0], tmp_path_factory.mktemp("fp32"), config)
    return BertIntentClassifier.load({**TINY_ENTITIES, **config}, storage, resource, make_context())


@pytest.mark.parametrize("backend, precision", INFERENCE_OPTIONS)
def test_archive_round_trip_in_every_backend(
    backend: str, precision: str, tmp_path: Path, trained: Trained, reference: BertIntentClassifier, held_out: list
) -> None:
    config = {"save_dtype": "float32", "inference": {"backend": backend, "precision": precision, "threads": 1}}
    _, storage, resource = persisted_copy(trained[0], tmp_path, config)
    loaded = BertIntentClassifier.load({**TINY_ENTITIES, **config}, storage, resource, make_context())
    assert loaded.predictor.has_entities and loaded.predictor.backend == backend
    texts = [m.get("text") for m in held_out]
    same = sum(spans(parse(loaded, t)) == spans(parse(reference, t)) for t in texts)
    assert same >= (len(texts) if precision == "fp32" else 0.95 * len(texts)), f"{same} of {len(texts)}"
    with storage.read_from(resource) as folder:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    assert meta["archive_format"] == 2 and meta["entities"]["scheme"] == "BILOU"


def test_training_report_has_entity_scores_and_served_span_agreement(tmp_path: Path) -> None:
    data = training_data()
    config = {**TINY_ENTITIES, "epochs": 30, "validation_split": 0.2}
    _, storage, resource = train(tmp_path, config, data)
    with storage.read_from(resource) as folder:
        report = json.loads((Path(folder) / archive.REPORT_FILE).read_text())
    validation = report["entities"]["validation"]
    assert set(validation["per_entity"]) == {"city", "count", "product", "reason"}
    assert 0.0 <= validation["f1"] <= 1.0 and validation["support"] > 0
    for scores in validation["per_entity"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    assert all("val_entity_f1" in row for row in report["history"])
    spans_agreement = report["served_agreement"]["entities"]
    assert spans_agreement["spans"] > 0 and spans_agreement["agreement"] >= 0.995


def test_bad_annotations_warn_with_the_example_and_training_goes_on(tmp_path: Path) -> None:
    data = training_data(per_template=3)
    bad = [
        Message(data={"text": "我想买耳机", "intent": "buy", "entities": [{"entity": "product", "start": 3, "end": 30}]}),
        Message(data={"text": "买个充电宝", "intent": "buy", "entities": [{"entity": "product", "start": 2, "end": 2}]}),
        Message(data={"text": "我想买保温杯", "intent": "buy", "entities": [
            {"entity": "product", "start": 3, "end": 6, "value": "保温杯"},
            {"entity": "thing", "start": 4, "end": 6, "value": "温杯"},
        ]}),
    ]  # fmt: skip
    data = TrainingData(training_examples=data.training_examples + bad)
    with pytest.warns(UserWarning, match=r"3 entity annotations could not be learnt as given") as caught:
        component, _, _ = train(tmp_path, {**TINY_ENTITIES, "epochs": 2}, data)
    text = "\n".join(str(w.message) for w in caught)
    for example in ("'我想买耳机'", "'买个充电宝'", "'我想买保温杯'"):
        assert example in text
    assert "overlaps the entity 'product' at 3..6" in text
    assert component.served is not None


# ---------------------------------------------------------------- without entities
def test_a_bot_without_entities_is_unchanged(tmp_path: Path) -> None:
    component, storage, resource = train(tmp_path, {**TINY_ENTITIES, "epochs": 3}, tiny_training_data())
    assert component.model.entities is None
    assert not any(k.startswith("entities.") for k in component.model.state_dict())
    assert not component.predictor.has_entities and component.served.entities is None
    with storage.read_from(resource) as folder:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        report = json.loads((Path(folder) / archive.REPORT_FILE).read_text())
    assert meta["archive_format"] == 1 and "entities" not in meta and "entities" not in report
    message = parse(component, "我的订单到哪了")
    assert message.get("entities") is None and message.get("text_tokens") is None


def test_entity_recognition_false_learns_no_entities(tmp_path: Path) -> None:
    config = {**TINY_ENTITIES, "epochs": 2, "entity_recognition": False}
    component, _, _ = train(tmp_path, config, training_data(per_template=3))
    assert component.model.entities is None
    assert parse(component, "我想买充电宝").get("entities") is None


def test_entities_only_leaves_the_intent_alone(tmp_path: Path) -> None:
    config = {**TINY_ENTITIES, "intent_classification": False}
    component, _, _ = train(tmp_path, config, training_data())
    message = Message(data={"text": "我想买充电宝", "intent": {"name": "from_another_classifier", "confidence": 0.9}})
    component.process([message])
    assert message.get("intent")["name"] == "from_another_classifier" and message.get("intent_ranking") is None
    assert [(e["entity"], e["value"]) for e in message.get("entities")] == [("product", "充电宝")]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"entity_tagger": "hmm"},
            "BertIntentClassifier: `entity_tagger` must be one of crf, softmax, got 'hmm'. Set `entity_tagger` in config.yml.",
        ),
        (
            {"intent_classification": False, "entity_recognition": False},
            "BertIntentClassifier: `intent_classification` and `entity_recognition` are both false, so there is "
            "nothing to learn. Set one of them to true in config.yml.",
        ),
        (
            {"BILOU_flag": "yes"},
            "BertIntentClassifier: `BILOU_flag` must be true or false, got 'yes'. Set `BILOU_flag` in config.yml.",
        ),
    ],
)
def test_entity_config_errors_name_key_value_and_fix(override: Dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        BertIntentClassifier.validate_config({**BertIntentClassifier.get_default_config(), **override})
