"""BertIntentClassifier: config validation, scratch and local-folder backbones, persistence, contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException, RasaException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import archive
from nlu_bert.backbones import ModelUnavailableError
from nlu_bert.bert import ngrams
from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier, ModelArchiveError

from contract import assert_intent_contract
from nlu_testing import TINY_BOT, make_context, make_storage, messages, tiny_training_data

TINY = {
    "model": "scratch",
    "scratch_hidden_size": 32,
    "scratch_num_layers": 2,
    "scratch_num_heads": 2,
    "scratch_mlm_epochs": 0,
    "epochs": 25,
    "validation_split": 0.0,
    "ngram_buckets": 2048,
    "ngram_dim": 16,
    "lexical_model": False,  # the TF-IDF model beside BERT: tests/classifiers/test_bert_confidence.py
}
HELD_OUT = {"greet": "你好啊朋友", "goodbye": "那就再见了", "check_order": "帮我看看订单物流", "refund": "这个我要退款"}
ODD_TEXTS = ["😀😀😀", "我的訂單到哪裡了", "order 12345 查一下", "ＡＢＣ１２３", "退款" * 500, "a\x00b\u200f", "/greet"]


def train_component(
    storage_dir: Path, config: Dict[str, Any], data: TrainingData
) -> Tuple[BertIntentClassifier, LocalModelStorage, Resource]:
    storage = make_storage(storage_dir)
    resource = Resource("bert_intent")
    component = BertIntentClassifier.create(config, storage, resource, make_context())
    component.train(data)
    return component, storage, resource


TORCH_FP32 = {"inference": {"backend": "torch", "precision": "fp32"}}
ONNX_INT8 = {"inference": {"backend": "onnxruntime"}}
INFERENCE_NOT_A_MAPPING = (
    "BertIntentClassifier: `inference` must be a mapping of `backend`, `precision`, `threads`, `spinning`, "
    "e.g. `inference: {{backend: torch}}`, got {value}. Set `inference` in config.yml."
)
INFERENCE_OPTIONS = [
    ("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("native", "int8"), ("torch", "int8"), ("torch", "bf16"), ("torch", "fp32"),
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Tuple[BertIntentClassifier, LocalModelStorage, Resource]:
    """Default inference: `auto`, which is native int8 for this BERT."""
    return train_component(tmp_path_factory.mktemp("bert"), {**TINY, "ngram_features": True}, tiny_training_data())


@pytest.fixture(scope="module")
def trained_torch(tmp_path_factory: pytest.TempPathFactory) -> Tuple[BertIntentClassifier, LocalModelStorage, Resource]:
    config = {**TINY, "ngram_features": True, "save_dtype": "float32", **TORCH_FP32}
    return train_component(tmp_path_factory.mktemp("bert_torch"), config, tiny_training_data())


def _persist_copy(
    component: BertIntentClassifier, folder: Path, config: Dict[str, Any]
) -> Tuple[LocalModelStorage, Resource]:
    """The same trained weights, persisted with another config (e.g. another inference option)."""
    storage, resource = make_storage(folder), Resource("bert_intent")
    copy = BertIntentClassifier.create({**TINY, "ngram_features": True, **config}, storage, resource, make_context())
    copy.model, copy.tokenizer, copy.labels, copy.meta = (
        component.model,
        component.tokenizer,
        component.labels,
        component.meta,
    )
    copy.persist()
    return storage, resource


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override, message",
    [
        ({"epochs": 0}, "BertIntentClassifier: `epochs` must be an integer ≥ 1, got 0. Set `epochs` in config.yml."),
        (
            {"device": "tpu"},
            "BertIntentClassifier: `device` must be one of auto, cpu, cuda, mps, got 'tpu'. Set `device` in config.yml.",
        ),
        (
            {"validation_split": 0.7},
            "BertIntentClassifier: `validation_split` must be a number in [0, 0.5], got 0.7. Set `validation_split` in config.yml.",
        ),
        (
            {"max_length": 1000},
            "BertIntentClassifier: `max_length` must be an integer between 4 and 512, got 1000. Set `max_length` in config.yml.",
        ),
        (
            {"learning_rate": -1},
            "BertIntentClassifier: `learning_rate` must be `auto` or a number > 0, got -1. Set `learning_rate` in config.yml.",
        ),
        (
            {"save_dtype": "int8"},
            "BertIntentClassifier: `save_dtype` must be one of float32, float16, got 'int8'. Set `save_dtype` in config.yml.",
        ),
        ({"model": ""}, "BertIntentClassifier: `model` must be a non-empty string, got ''. Set `model` in config.yml."),
        (
            {"epochs": True},
            "BertIntentClassifier: `epochs` must be an integer ≥ 1, got True. Set `epochs` in config.yml.",
        ),
        (
            {"scratch_hidden_size": 30, "scratch_num_heads": 4},
            "BertIntentClassifier: `scratch_hidden_size` must be a multiple of `scratch_num_heads` (4), got 30. "
            "Set `scratch_hidden_size` in config.yml.",
        ),
        ({"epoch": 3}, "BertIntentClassifier: unknown config key `epoch`. Did you mean `epochs`?"),
        (
            {"inference": {"backend": "tensorflow"}},
            "BertIntentClassifier: `inference.backend` must be one of 'auto', 'torch', 'onnxruntime', 'native', got 'tensorflow'. "
            "Set `inference.backend` in config.yml.",
        ),
        (
            {"inference": {"backend": "onnxruntime", "precision": "bf16"}},
            "BertIntentClassifier: `inference.precision` 'bf16' is not available with `inference.backend` 'onnxruntime' "
            "(allowed there: 'fp32', 'int8'). Use `inference.backend` 'torch' for bf16, or another precision. "
            "Set `inference.precision` in config.yml.",
        ),
        (
            {"inference": {"threads": -1}},
            "BertIntentClassifier: `inference.threads` must be an integer >= 0 (0 = all cores), got -1. "
            "Set `inference.threads` in config.yml.",
        ),
        (
            {"inference": {"bakend": "torch"}},
            "BertIntentClassifier: unknown config key `inference.bakend`. Did you mean `inference.backend`?",
        ),
        (
            {"inference": {"spinning": "yes"}},
            "BertIntentClassifier: `inference.spinning` must be true or false, got 'yes'. Set `inference.spinning` in config.yml.",
        ),
        (
            {"inference": "torch"},
            INFERENCE_NOT_A_MAPPING.format(value="'torch'"),
        ),
    ],
)
def test_config_errors_name_key_value_and_fix(
    override: Dict[str, Any], message: str, model_storage: LocalModelStorage
) -> None:
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        BertIntentClassifier.create({**TINY, **override}, model_storage, Resource("x"), make_context())


@pytest.mark.parametrize("value", ["torch", ["torch", "fp32"], 1])
def test_inference_block_written_as_a_value_is_reported_through_rasas_graph(
    value: Any, model_storage: LocalModelStorage
) -> None:
    # Rasa's GraphNode merges config.yml into the defaults itself (`override_defaults`, dict.update on
    # dict defaults); the component's own message must come out of it, not Rasa's ValueError
    from rasa.engine.graph import GraphNode

    with pytest.raises(InvalidConfigException, match=re.escape(INFERENCE_NOT_A_MAPPING.format(value=repr(value)))):
        GraphNode(
            "bert",
            BertIntentClassifier,
            "create",
            {**TINY, "inference": value},
            "train",
            {},
            True,
            model_storage,
            None,
            make_context(),
        )


def test_a_partial_inference_block_is_filled_in_with_the_defaults_through_rasas_graph(
    model_storage: LocalModelStorage,
) -> None:
    from rasa.engine.graph import GraphNode

    from nlu_bert import onnx_tools
    from nlu_bert.bert import predictors

    node = GraphNode(
        "bert",
        BertIntentClassifier,
        "create",
        {**TINY, "inference": {"precision": "fp32"}},
        "train",
        {},
        True,
        model_storage,
        None,
        make_context(),
    )
    assert node._component.config["inference"] == {
        "backend": predictors.DEFAULT_BACKEND,
        "precision": "fp32",
        "threads": predictors.DEFAULT_NUM_THREADS,
        "spinning": onnx_tools.ALLOW_SPINNING,
    }
    # the filled-in block is what Rasa's training cache keys on, so a changed default retrains
    with_default = BertIntentClassifier.fingerprint_addon({**TINY, "inference": {"precision": "fp32"}})
    written_out = BertIntentClassifier.fingerprint_addon({**TINY, "inference": node._component.config["inference"]})
    other = BertIntentClassifier.fingerprint_addon({**TINY, "inference": {"precision": "fp32", "threads": 1}})
    assert with_default == written_out != other


def test_rasa_finetune_key_is_accepted(model_storage: LocalModelStorage) -> None:
    BertIntentClassifier.create(
        {**TINY, "finetuning_epoch_fraction": 0.5}, model_storage, Resource("x"), make_context()
    )


def test_defaults_name_the_hub_model_and_every_key_is_commented() -> None:
    defaults = BertIntentClassifier.get_default_config()
    assert defaults["model"] == "hfl/chinese-bert-wwm-ext"
    source = Path(__import__("nlu_bert.classifiers.bert_intent_classifier", fromlist=["x"]).__file__).read_text()
    block = source.split("def get_default_config")[1].split("def required_packages")[0]
    for key in defaults:
        line_index = block.index(f'"{key}":')
        preceding = block[:line_index].rstrip().splitlines()
        assert preceding[-1].strip().startswith(("#", '"')), f"`{key}` has no comment"


# ---------------------------------------------------------------- scratch training and contract
def test_scratch_model_learns_the_bot(trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    component, _, _ = trained
    data = tiny_training_data()
    msgs = messages([m.get("text") for m in data.intent_examples])
    component.process(msgs)
    accuracy = np.mean([m.get("intent")["name"] == e.get("intent") for m, e in zip(msgs, data.intent_examples)])
    assert accuracy >= 0.9
    held = messages(list(HELD_OUT.values()))
    component.process(held)
    assert sum(m.get("intent")["name"] == k for m, k in zip(held, HELD_OUT)) >= 3


def test_contract_on_normal_and_odd_texts(trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    component, _, _ = trained
    msgs = messages(list(HELD_OUT.values()) + ODD_TEXTS)
    component.process(msgs)
    for m in msgs:
        assert_intent_contract(m, ranking_length=10, allowed=TINY_BOT)


def test_ranking_length_limits_the_ranking(tmp_path: Path, trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    _, storage, resource = trained
    component = BertIntentClassifier.load(
        {**TINY, "ngram_features": True, "ranking_length": 2}, storage, resource, make_context()
    )
    msgs = messages(["你好"])
    component.process(msgs)
    assert_intent_contract(msgs[0], ranking_length=2)
    assert len(msgs[0].get("intent_ranking")) == 2


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_text_gives_no_intent_and_no_error(text: Any, trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    component, _, _ = trained
    message = Message(data={"text": text} if text is not None else {})
    component.process([message])
    assert message.get("intent") == {"name": None, "confidence": 0.0}
    assert message.get("intent_ranking") == []


def _batched_and_alone(component: BertIntentClassifier) -> Tuple[np.ndarray, np.ndarray]:
    texts = list(HELD_OUT.values()) + ODD_TEXTS
    return component.predict_proba(texts), np.vstack([component.predict_proba([t]) for t in texts])


def test_batch_equals_one_by_one(trained_torch: Tuple[BertIntentClassifier, Any, Any]) -> None:
    together, alone = _batched_and_alone(trained_torch[0])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_int8_batch_and_one_by_one_agree_on_the_intent(trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    # dynamic int8 quantizes activations with one scale per batch: probabilities move a little with the batch
    together, alone = _batched_and_alone(trained[0])
    np.testing.assert_allclose(together, alone, atol=2e-2)
    margin = np.sort(alone, axis=1)[:, -1] - np.sort(alone, axis=1)[:, -2]
    clear = margin > 0.05
    assert clear.sum() >= len(alone) // 2
    assert (together.argmax(1) == alone.argmax(1))[clear].all()


@pytest.mark.parametrize("backend, precision", INFERENCE_OPTIONS)
def test_every_inference_option_agrees_with_fp32(
    backend: str, precision: str, tmp_path: Path, trained_torch: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    component, _, _ = trained_torch
    config = {"save_dtype": "float32", "inference": {"backend": backend, "precision": precision, "threads": 1}}
    storage, resource = _persist_copy(component, tmp_path, config)
    loaded = BertIntentClassifier.load({**TINY, "ngram_features": True, **config}, storage, resource, make_context())
    assert (loaded.predictor.backend, loaded.predictor.precision) == (backend, precision)
    data = tiny_training_data()
    texts = [m.get("text") for m in data.intent_examples] + list(HELD_OUT.values())
    reference, got = component.predict_proba(texts), loaded.predict_proba(texts)
    tolerance = 1e-5 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(got, reference, atol=tolerance)
    with storage.read_from(resource) as folder:
        names = {p.name for p in Path(folder).iterdir()} - {"tokenizer", "meta.json", "training_report.json"}
    # and the trainable weights for warm starts (`finetunable`, on by default: tests/classifiers/test_bert_warm_start.py)
    assert names == set(archive.bert_files(backend, precision) + archive.BERT_TRAINING_FILES) - {"tokenizer"}
    ordered = np.sort(reference, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 2 * tolerance
    assert clear.mean() > 0.8
    assert (got.argmax(1) == reference.argmax(1))[clear].all()


def test_long_text_is_truncated_to_max_length(trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    component, _, _ = trained
    head = "我要退款" * 20
    # everything past max_length tokens is ignored by the encoder; only the n-gram bag sees more
    a = component.predict_proba([head + "再见" * 5000])
    assert np.isfinite(a).all() and a.shape == (1, 4)


# ---------------------------------------------------------------- persistence
def test_round_trip_gives_identical_predictions(trained: Tuple[BertIntentClassifier, Any, Any]) -> None:
    component, storage, resource = trained
    loaded = BertIntentClassifier.load({**TINY, "ngram_features": True}, storage, resource, make_context())
    texts = list(HELD_OUT.values()) + ODD_TEXTS
    before, after = messages(texts), messages(texts)
    component.process(before)
    loaded.process(after)
    for a, b in zip(before, after):
        assert a.get("intent")["name"] == b.get("intent")["name"]
        assert [r["name"] for r in a.get("intent_ranking")] == [r["name"] for r in b.get("intent_ranking")]
        np.testing.assert_allclose(
            [r["confidence"] for r in a.get("intent_ranking")],
            [r["confidence"] for r in b.get("intent_ranking")],
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "fixture, weights",
    [("trained", {"model.native.safetensors"}), ("trained_torch", {"model.safetensors", "encoder_config.json"})],
)
def test_archive_holds_only_what_the_backend_loads(fixture: str, weights: set, request: pytest.FixtureRequest) -> None:
    _, storage, resource = request.getfixturevalue(fixture)
    with storage.read_from(resource) as folder:
        names = {p.name for p in Path(folder).iterdir()}
        assert names == weights | set(archive.BERT_TRAINING_FILES) | {"tokenizer", "meta.json", "training_report.json"}
        meta = json.loads((Path(folder) / "meta.json").read_text())
        assert meta["labels"] == sorted(TINY_BOT)
        report = json.loads((Path(folder) / "training_report.json").read_text())
        assert report["data"]["examples"] == sum(len(v) for v in TINY_BOT.values())
        assert report["history"] and "loss" in report["history"][0]


def test_training_report_counts_where_the_served_int8_model_leaves_fp32(
    trained: Tuple[BertIntentClassifier, Any, Any],
) -> None:
    import torch

    component, storage, resource = trained
    with storage.read_from(resource) as folder:
        agreement = json.loads((Path(folder) / "training_report.json").read_text())["served_agreement"]
    texts = [m.get("text") for m in tiny_training_data().intent_examples]
    assert agreement["texts"] == len(texts)
    # recount: the fp32 torch model the graph was exported from against what the component serves
    enc = component.tokenizer(
        texts, padding=True, truncation=True, max_length=component.meta["max_length"], return_tensors="pt"
    )
    with torch.inference_mode():
        fp32 = (
            component.model(
                enc["input_ids"], enc["attention_mask"], torch.from_numpy(ngrams.ids_for(texts, component.meta))
            )
            .argmax(-1)
            .numpy()
        )
    served = component.predict_proba(texts).argmax(-1)
    assert agreement["differ"] == int((fp32 != served).sum())
    assert agreement["agreement"] == pytest.approx(1 - agreement["differ"] / len(texts))


def test_served_model_below_the_agreement_goal_warns_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlu_bert.bert import training as module

    monkeypatch.setattr(module, "MIN_AGREEMENT", 1.01)  # no model reaches it: the check must speak
    with pytest.warns(UserWarning, match=re.escape("Set `inference: {precision: fp32}` in config.yml to serve fp32.")):
        train_component(tmp_path, {**TINY, "epochs": 2}, tiny_training_data())


def test_fp32_serving_skips_the_agreement_check(trained_torch: Tuple[BertIntentClassifier, Any, Any]) -> None:
    _, storage, resource = trained_torch
    with storage.read_from(resource) as folder:
        assert "served_agreement" not in json.loads((Path(folder) / "training_report.json").read_text())


def test_float16_archive_is_smaller_and_predicts_the_same(
    tmp_path: Path, trained_torch: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    component, storage, resource = trained_torch
    half_storage, _ = _persist_copy(component, tmp_path / "half", {"save_dtype": "float16", **TORCH_FP32})
    loaded = BertIntentClassifier.load(
        {**TINY, "ngram_features": True, **TORCH_FP32}, half_storage, resource, make_context()
    )
    with storage.read_from(resource) as full_dir, half_storage.read_from(resource) as half_dir:
        full_size = (Path(full_dir) / "model.safetensors").stat().st_size
        half_size = (Path(half_dir) / "model.safetensors").stat().st_size
    assert half_size < 0.6 * full_size
    texts = list(HELD_OUT.values())
    np.testing.assert_allclose(component.predict_proba(texts), loaded.predict_proba(texts), atol=5e-3)


def test_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    config = {**TINY, "epochs": 3, **TORCH_FP32}
    a, _, _ = train_component(tmp_path / "a", config, tiny_training_data())
    b, _, _ = train_component(tmp_path / "b", config, tiny_training_data())
    texts = list(HELD_OUT.values())
    np.testing.assert_array_equal(a.predict_proba(texts), b.predict_proba(texts))


def _damage(storage: LocalModelStorage, resource: Resource, fn: Any) -> None:
    with storage.read_from(resource) as folder:
        fn(Path(folder))


def _edit_meta(folder: Path, **changes: Any) -> None:
    (folder / "meta.json").write_text(json.dumps({**json.loads((folder / "meta.json").read_text()), **changes}))


@pytest.mark.parametrize(
    "config, damage, expected",
    [
        ({}, lambda f: (f / "model.native.safetensors").unlink(), "model.native.safetensors is missing"),
        (
            {},
            lambda f: (f / "model.native.safetensors").write_bytes(b"\x00" * 100),
            "the model archive is damaged or incomplete",
        ),
        (ONNX_INT8, lambda f: (f / "model.int8.onnx").unlink(), "model.int8.onnx is missing"),
        (
            ONNX_INT8,
            lambda f: (f / "model.int8.onnx").write_bytes(b"\x00" * 100),
            "the model archive is damaged or incomplete",
        ),
        (TORCH_FP32, lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
        (
            TORCH_FP32,
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 100),
            "the model archive is damaged or incomplete",
        ),
        ({}, lambda f: __import__("shutil").rmtree(f / "tokenizer"), "tokenizer is missing"),
        (
            {},
            lambda f: (f / "tokenizer" / "tokenizer.json").write_text("{"),
            "the model archive is damaged or incomplete",
        ),
        (
            {},
            lambda f: _edit_meta(f, labels=["a", "b", "c"]),
            "the weights have 4 outputs but meta.json lists 3 intents",
        ),
        (
            ONNX_INT8,
            lambda f: _edit_meta(f, labels=["a", "b", "c"]),
            "the weights have 4 outputs but meta.json lists 3 intents",
        ),
        (
            TORCH_FP32,
            lambda f: _edit_meta(f, labels=["a", "b", "c"]),
            "the weights have 4 outputs but meta.json lists 3 intents",
        ),
        (
            {},
            lambda f: _edit_meta(f, archive_format=99, nlu_bert_version="9.0"),
            "this model was trained by nlu-bert 9.0 with archive format 99",
        ),
        ({}, lambda f: (f / "meta.json").write_text("[1, 2"), "meta.json is unreadable"),
    ],
)
def test_damaged_archive_gives_a_clear_error(
    tmp_path: Path,
    trained_torch: Tuple[BertIntentClassifier, Any, Any],
    config: Dict[str, Any],
    damage: Any,
    expected: str,
) -> None:
    component, _, _ = trained_torch
    storage, resource = _persist_copy(component, tmp_path / "copy", config)
    _damage(storage, resource, damage)
    with pytest.raises(ModelArchiveError, match=re.escape(expected)) as info:
        BertIntentClassifier.load({**TINY, **config}, storage, resource, make_context())
    assert "rasa train" in str(info.value)


def test_archive_exported_for_another_backend_names_both(
    tmp_path: Path, trained: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    component, storage, resource = trained
    # the default archive keeps the trainable weights (`finetunable`), which the torch backend serves as well
    served = BertIntentClassifier.load(
        {**TINY, "ngram_features": True, **TORCH_FP32}, storage, resource, make_context()
    )
    assert served.predictor.backend == "torch" and served.predict_proba(["你好"]).argmax() == served.labels.index(
        "greet"
    )
    storage, resource = _persist_copy(component, tmp_path, {"finetunable": False})
    with pytest.raises(ModelArchiveError) as info:
        BertIntentClassifier.load({**TINY, **TORCH_FP32}, storage, resource, make_context())
    assert str(info.value).startswith(
        "BertIntentClassifier: this model was exported for `inference.backend` 'native' with "
        "`inference.precision` 'int8', but the config asks for 'torch' / 'fp32' (model.safetensors is not in the archive)."
    )


def test_archive_from_before_the_inference_block_is_served_by_torch(
    tmp_path: Path, trained_torch: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    # such archives hold model.safetensors and a meta.json without `inference`; the default config asks for `auto`
    component, _, _ = trained_torch
    storage, resource = _persist_copy(component, tmp_path, TORCH_FP32)
    with storage.read_from(resource) as folder:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        for key in ("inference", "files"):
            meta.pop(key)
        (Path(folder) / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(
        UserWarning, match=re.escape("it is served with `inference.backend` 'torch' (int8) instead of 'auto'")
    ):
        loaded = BertIntentClassifier.load({**TINY, "ngram_features": True}, storage, resource, make_context())
    assert (loaded.predictor.backend, loaded.predictor.precision) == ("torch", "int8")
    texts = list(HELD_OUT.values())
    assert (loaded.predict_proba(texts).argmax(1) == component.predict_proba(texts).argmax(1)).all()


def test_threads_and_spinning_can_change_at_load_time(
    tmp_path: Path, trained: Tuple[BertIntentClassifier, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlu_bert.bert import native

    component, storage, resource = trained
    loaded = BertIntentClassifier.load({**TINY, "inference": {"threads": 1}}, storage, resource, make_context())
    assert loaded.predictor.backend == "native" and loaded.predictor.model.num_threads == 1
    onnx_storage, _ = _persist_copy(component, tmp_path, ONNX_INT8)
    for spinning in (True, False):
        config = {**TINY, "inference": {"backend": "onnxruntime", "threads": 1, "spinning": spinning}}
        loaded = BertIntentClassifier.load(config, onnx_storage, resource, make_context())
        assert loaded.predictor.num_threads == 1
        options = loaded.predictor.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spinning))
    # the native file where its C kernel cannot run: onnxruntime serves it, with the same settings
    monkeypatch.setenv(native.KERNEL_ENV, "onnxruntime")
    loaded = BertIntentClassifier.load(
        {**TINY, "inference": {"threads": 1, "spinning": False}}, storage, resource, make_context()
    )
    assert loaded.predictor.kernel == "onnxruntime"
    options = loaded.predictor.model.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


ORT_LOAD_WITHOUT_TORCH = """
import sys, pathlib
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.shared.nlu.training_data.message import Message
from nlu_bert import BertIntentClassifier
storage = LocalModelStorage(pathlib.Path({storage!r}))
component = BertIntentClassifier.load({config!r}, storage, Resource("bert_intent"), ExecutionContext(GraphSchema({{}}), "x"))
message = Message(data={{"text": "我要退款"}})
component.process([message])
print(message.get("intent")["name"], "torch" in sys.modules, "transformers" in sys.modules)
"""


def test_onnxruntime_serving_imports_neither_torch_nor_transformers(
    tmp_path: Path, trained: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    import subprocess
    import sys

    component = trained[0]
    storage, _ = _persist_copy(component, tmp_path, ONNX_INT8)
    code = ORT_LOAD_WITHOUT_TORCH.format(
        storage=str(storage._storage_path), config={**TINY, "ngram_features": True, **ONNX_INT8}
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    intent, torch_loaded, transformers_loaded = out.stdout.split()[-3:]
    assert intent == messages_intent(component, "我要退款")
    assert (torch_loaded, transformers_loaded) == ("False", "False")


def test_native_serving_imports_neither_torch_nor_transformers(
    tmp_path: Path, trained: Tuple[BertIntentClassifier, Any, Any]
) -> None:
    import subprocess
    import sys

    component = trained[0]
    config = {"inference": {"backend": "native"}}
    storage, _ = _persist_copy(component, tmp_path, config)
    code = ORT_LOAD_WITHOUT_TORCH.format(
        storage=str(storage._storage_path), config={**TINY, "ngram_features": True, **config}
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    intent, torch_loaded, transformers_loaded = out.stdout.split()[-3:]
    assert intent == messages_intent(component, "我要退款")
    assert (torch_loaded, transformers_loaded) == ("False", "False")


def messages_intent(component: BertIntentClassifier, text: str) -> str:
    msgs = messages([text])
    component.process(msgs)
    return msgs[0].get("intent")["name"]


def test_untrained_component_predicts_no_intent(model_storage: LocalModelStorage) -> None:
    component = BertIntentClassifier.load(TINY, model_storage, Resource("never_trained"), make_context())
    msgs = messages(["你好"])
    component.process(msgs)
    assert msgs[0].get("intent") == {"name": None, "confidence": 0.0}


# ---------------------------------------------------------------- data problems
def test_data_summary_warns_about_conflicts_and_truncation(tmp_path: Path) -> None:
    bot = {k: list(v) for k, v in TINY_BOT.items()}
    bot["greet"] += ["查一下订单"]  # also under check_order (Rasa's TrainingData itself drops exact duplicates)
    bot["refund"].append("我要退款，" + "因为质量问题" * 30)
    with pytest.warns(UserWarning) as record:
        component, _, _ = train_component(tmp_path, {**TINY, "epochs": 1, "max_length": 24}, tiny_training_data(bot))
    text = "\n".join(str(w.message) for w in record)
    assert "1 texts appear under more than one intent (e.g. '查一下订单' → check_order, greet)" in text
    assert "1 training texts are longer than `max_length` (24 tokens" in text
    with component._model_storage.read_from(component._resource) as folder:
        report = json.loads((Path(folder) / "training_report.json").read_text())
    assert report["data"]["truncated"] == 1
    assert report["data"]["conflicting_texts"] == {"查一下订单": ["check_order", "greet"]}


def test_one_intent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RasaException, match=re.escape("the training data has only one intent ('greet')")):
        train_component(tmp_path, TINY, tiny_training_data({"greet": TINY_BOT["greet"]}))


def test_no_intent_examples_warns_and_predicts_nothing(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="the training data has no intent examples"):
        component, storage, resource = train_component(tmp_path, TINY, TrainingData())
    loaded = BertIntentClassifier.load(TINY, storage, resource, make_context())
    msgs = messages(["你好"])
    loaded.process(msgs)
    assert msgs[0].get("intent")["name"] is None


def test_intent_with_one_example_trains_with_a_warning(tmp_path: Path) -> None:
    bot = {**TINY_BOT, "human_handoff": ["转人工"]}
    with pytest.warns(UserWarning, match=re.escape("1 intents have a single example (human_handoff)")):
        component, _, _ = train_component(
            tmp_path, {**TINY, "epochs": 2, "validation_split": 0.2}, tiny_training_data(bot)
        )
    assert "human_handoff" in component.labels


# ---------------------------------------------------------------- backbones: local folder and hub
@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT with random weights and a character vocabulary, saved like a hub download."""
    import torch
    from transformers import BertConfig, BertModel

    from nlu_bert.vocab import build_char_vocab, make_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = [t for ts in TINY_BOT.values() for t in ts]
    tokenizer = make_tokenizer(build_char_vocab(texts), folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


def test_local_folder_backbone_trains_and_keeps_its_tokenizer(tmp_path: Path, tiny_bert_folder: Path) -> None:
    config = {**TINY, "model": str(tiny_bert_folder), "epochs": 20, "learning_rate": 1e-3}
    component, storage, resource = train_component(tmp_path, config, tiny_training_data())
    with storage.read_from(resource) as folder:
        saved_vocab = (Path(folder) / "tokenizer" / "vocab.txt").read_text(encoding="utf-8")
    assert saved_vocab == (tiny_bert_folder / "vocab.txt").read_text(encoding="utf-8")
    assert component.meta["ngram_buckets"] == 0  # `auto`: n-grams only for scratch
    msgs = messages(list(HELD_OUT.values()))
    component.process(msgs)
    for m in msgs:
        assert_intent_contract(m, 10, TINY_BOT)


def test_native_backend_refuses_a_backbone_it_cannot_run_before_training(tmp_path: Path) -> None:
    config = {**TINY, "scratch_hidden_size": 40, "inference": {"backend": "native"}}
    message = (
        "BertIntentClassifier: `inference.backend` 'native' cannot serve the backbone 'scratch': hidden_size (40) and "
        "intermediate_size (160) must be multiples of 16"
    )
    with pytest.raises(InvalidConfigException, match=re.escape(message)) as info:
        train_component(tmp_path, config, tiny_training_data())
    assert "Set `inference: {backend: auto}` (or onnxruntime) in config.yml." in str(info.value)


def test_auto_backend_serves_a_backbone_the_native_kernel_cannot_run_with_onnxruntime(tmp_path: Path) -> None:
    config = {**TINY, "scratch_hidden_size": 40, "epochs": 2}  # 40 is no multiple of 16
    component, storage, resource = train_component(tmp_path, config, tiny_training_data())
    with storage.read_from(resource) as folder:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        assert meta["inference"] == {"backend": "onnxruntime", "precision": "int8"}
        assert "model.int8.onnx" in meta["files"] and "model.native.safetensors" not in meta["files"]
    loaded = BertIntentClassifier.load(config, storage, resource, make_context())
    assert loaded.predictor.backend == "onnxruntime"
    texts = list(HELD_OUT.values())
    np.testing.assert_allclose(loaded.predict_proba(texts), component.predict_proba(texts), atol=1e-6)


def test_unreachable_hub_model_names_the_three_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        train_component(tmp_path, {**TINY, "model": "hfl/chinese-bert-wwm-ext"}, tiny_training_data())
    text = str(info.value)
    assert text.startswith("BertIntentClassifier: could not load the model 'hfl/chinese-bert-wwm-ext'")
    for way in ("HF_ENDPOINT", "set `model: ./models/chinese-bert-wwm-ext`", "set `model: scratch`"):
        assert way in text
    assert "\n" not in text


def test_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(
        ModelUnavailableError, match=re.escape(f"the local folder '{empty.resolve()}' does not hold a usable model")
    ):
        train_component(tmp_path / "s", {**TINY, "model": str(empty)}, tiny_training_data())


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, nlu_bert; nlu_bert.BertIntentClassifier; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ---------------------------------------------------------------- more training-data and disk faults
def test_intent_names_that_break_rasa_syntax_get_a_warning(tmp_path: Path) -> None:
    bot = {"check order": TINY_BOT["check_order"], "refund/return": TINY_BOT["refund"]}
    with pytest.warns(
        UserWarning, match=re.escape("intent names with spaces, slashes or brackets ('check order', 'refund/return')")
    ):
        component, _, _ = train_component(tmp_path, {**TINY, "epochs": 2}, tiny_training_data(bot))
    assert component.labels == ["check order", "refund/return"]


def test_500_intents_train_and_rank(tmp_path: Path) -> None:
    bot = {f"intent_{i:03d}": [f"问题{i}号", f"第{i}个问题"] for i in range(500)}
    component, _, _ = train_component(tmp_path, {**TINY, "epochs": 1, "ranking_length": 5}, tiny_training_data(bot))
    msgs = messages(["问题7号"])
    component.process(msgs)
    assert_intent_contract(msgs[0], 5, bot)
    assert len(component.labels) == 500


def test_english_only_data_works(tmp_path: Path) -> None:
    bot = {
        "greet": ["hello", "hi there", "good morning", "hey", "hello friend", "hi"],
        "bye": ["goodbye", "bye bye", "see you later", "bye", "see you", "good night"],
    }
    component, _, _ = train_component(tmp_path, {**TINY, "epochs": 30}, tiny_training_data(bot))
    msgs = messages(["hello there", "bye now"])
    component.process(msgs)
    assert [m.get("intent")["name"] for m in msgs] == ["greet", "bye"]


DISK_FULL = """
import resource, signal, sys, tempfile, pathlib
sys.path[:0] = [{tests!r}, {root!r}]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from nlu_testing import tiny_training_data
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.engine.graph import ExecutionContext, GraphSchema
from nlu_bert import BertIntentClassifier
storage = LocalModelStorage(pathlib.Path(tempfile.mkdtemp()))
config = dict(model="scratch", scratch_hidden_size=32, scratch_num_layers=1, scratch_num_heads=2, scratch_mlm_epochs=0, epochs=1)
component = BertIntentClassifier.create(config, storage, Resource("b"), ExecutionContext(GraphSchema({{}}), "x"))
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # files over 100 kB cannot be written: a full disk
try:
    component.train(tiny_training_data())
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


def test_disk_full_while_persisting_is_one_clear_error() -> None:
    import subprocess
    import sys

    tests = str(Path(__file__).resolve().parents[1])
    code = DISK_FULL.format(tests=tests, root=str(Path(tests).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    line = next(x for x in out.splitlines() if x.startswith("ERROR"))
    assert line.startswith(
        "ERROR RasaException BertIntentClassifier: could not write the trained model into the Rasa model archive"
    )
    assert line.endswith("Free disk space (or point `rasa train --out` at a disk with room) and train again.")
