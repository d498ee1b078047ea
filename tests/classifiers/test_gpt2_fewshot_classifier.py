"""GPT2FewShotIntentClassifier: config validation, when it acts, what it may answer, persistence, Rasa graph."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier
from rasa.shared.exceptions import InvalidConfigException, RasaException
from rasa.shared.nlu.training_data.message import Message

from nlu_bert.archive import ModelArchiveError
from nlu_bert.classifiers.gpt2_fewshot_classifier import GPT2FewShotIntentClassifier as Component
from nlu_bert.version import __version__

from contract import assert_intent_contract
from gpt2_fixtures import (
    TINY_SIZES,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_tokenizer,
)
from nlu_testing import TINY_BOT, make_context, make_storage, tiny_training_data

BOT_INTENTS = set(TINY_BOT)
ALLOWED = BOT_INTENTS | {"nlu_fallback"}
# min_confidence 0: these tests check when it acts and what it answers, with a barely trained tiny model
TINY = {
    "model": "scratch",
    "fine_tune": True,
    "fine_tune_epochs": 1,
    "max_prompt_tokens": 384,
    "min_confidence": 0.0,
    **TINY_SIZES,
}


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStorage:
    return make_storage(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def context() -> ExecutionContext:
    return make_context("fewshot-test")


@pytest.fixture(scope="module")
def trained(storage: LocalModelStorage, context: ExecutionContext) -> Component:
    component = Component.create(TINY, storage, Resource("fewshot"), context)
    component.train(tiny_training_data())
    return component


@pytest.fixture
def fewshot(trained: Component) -> Iterator[Component]:
    """The trained component; config changes made by a test are undone after it."""
    saved = dict(trained.config)
    yield trained
    trained.config = saved
    trained._scorer.cache.clear()


def unsure(text: str, ranking: List[Dict[str, Any]]) -> Message:
    """A message as the previous classifier leaves it."""
    message = Message(data={"text": text})
    if ranking:
        message.set("intent", dict(ranking[0]), add_to_output=True)
        message.set("intent_ranking", [dict(r) for r in ranking], add_to_output=True)
    return message


def ranking(*pairs: Any) -> List[Dict[str, Any]]:
    return [{"name": n, "confidence": c} for n, c in pairs]


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "threshold",
            1.5,
            "GPT2FewShotIntentClassifier: `threshold` must be a number in [0, 1], got 1.5. Set `threshold` in config.yml.",
        ),
        (
            "ambiguity_threshold",
            -0.1,
            "GPT2FewShotIntentClassifier: `ambiguity_threshold` must be a number in [0, 1], got -0.1. Set `ambiguity_threshold` in config.yml.",
        ),
        (
            "max_candidates",
            0,
            "GPT2FewShotIntentClassifier: `max_candidates` must be an integer between 1 and 50, got 0. Set `max_candidates` in config.yml.",
        ),
        (
            "n_shot",
            True,
            "GPT2FewShotIntentClassifier: `n_shot` must be an integer between 1 and 10, got True. Set `n_shot` in config.yml.",
        ),
        (
            "example_selection",
            "closest",
            "GPT2FewShotIntentClassifier: `example_selection` must be one of nearest, nearest_to_message, random, got 'closest'. Set `example_selection` in config.yml.",
        ),
        (
            "template",
            "nope",
            "GPT2FewShotIntentClassifier: `template` must be a template name (few_shot_zh, few_shot_zh_backticks, intent_zh, few_shot_en), got 'nope'. Set `template` in config.yml.",
        ),
        (
            "not_applicable",
            "",
            "GPT2FewShotIntentClassifier: `not_applicable` must be a non-empty string, got ''. Set `not_applicable` in config.yml.",
        ),
        (
            "max_prompt_tokens",
            10,
            "GPT2FewShotIntentClassifier: `max_prompt_tokens` must be an integer between 64 and 8192, got 10. Set `max_prompt_tokens` in config.yml.",
        ),
        (
            "max_text_tokens",
            400,
            "GPT2FewShotIntentClassifier: `max_text_tokens` must be at most half of `max_prompt_tokens` (256), got 400. Set `max_text_tokens` in config.yml.",
        ),
        (
            "fine_tune_learning_rate",
            0,
            "GPT2FewShotIntentClassifier: `fine_tune_learning_rate` must be `auto` or a number > 0, got 0. Set `fine_tune_learning_rate` in config.yml.",
        ),
        (
            "fine_tune_precision",
            "fp16",
            "GPT2FewShotIntentClassifier: `fine_tune_precision` must be one of auto, fp32, bf16, got 'fp16'. Set `fine_tune_precision` in config.yml.",
        ),
        (
            "device",
            "tpu",
            "GPT2FewShotIntentClassifier: `device` must be one of auto, cpu, cuda, mps, got 'tpu'. Set `device` in config.yml.",
        ),
        (
            "inference",
            {"precision": "fp16"},
            "GPT2FewShotIntentClassifier: `inference.precision` must be one of auto, fp32, int8 with `inference.backend: onnxruntime`, got 'fp16'. Set `inference.precision` in config.yml.",
        ),
        (
            "inference",
            {"backend": "tensorrt"},
            "GPT2FewShotIntentClassifier: `inference.backend` must be one of onnxruntime, torch, got 'tensorrt'. Set `inference.backend` in config.yml.",
        ),
        (
            "inference",
            {"threads": -1},
            "GPT2FewShotIntentClassifier: `inference.threads` must be an integer >= 0 (0 = all cores), got -1. Set `inference.threads` in config.yml.",
        ),
        (
            "scratch_hidden_size",
            30,
            "GPT2FewShotIntentClassifier: `scratch_hidden_size` must be a multiple of `scratch_num_heads` (4), got 30. Set `scratch_hidden_size` in config.yml.",
        ),
        (
            "intent_labels",
            {"greet": ""},
            "GPT2FewShotIntentClassifier: `intent_labels` must be a mapping from intent names to non-empty label texts, got {'greet': ''}. Set `intent_labels` in config.yml.",
        ),
    ],
)
def test_invalid_values_name_key_value_and_fix(
    key: str, value: Any, message: str, model_storage, execution_context
) -> None:
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        Component.create({key: value}, model_storage, Resource("x"), execution_context)


@pytest.mark.parametrize("value", ["greet: 问候", ["greet", "问候"]])
def test_intent_labels_written_as_a_value_are_reported_through_rasas_graph(
    value: Any, model_storage, execution_context
) -> None:
    # Rasa's GraphNode merges config.yml into dict defaults with dict.update before the component runs
    from rasa.engine.graph import GraphNode

    message = (
        "GPT2FewShotIntentClassifier: `intent_labels` must be a mapping from intent names to non-empty label texts, "
        f"got {value!r}. Set `intent_labels` in config.yml."
    )
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        GraphNode(
            "gpt2",
            Component,
            "create",
            {"intent_labels": value},
            "train",
            {},
            True,
            model_storage,
            None,
            execution_context,
        )


def test_unknown_keys_are_an_error(model_storage, execution_context) -> None:
    allowed = ", ".join(sorted(Component.get_default_config()))
    message = f"GPT2FewShotIntentClassifier: unknown config key `treshold`. Did you mean `threshold`? Allowed keys: {allowed}."
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        Component.create({"treshold": 0.5}, model_storage, Resource("x"), execution_context)


def test_scratch_needs_fine_tuning(model_storage, execution_context) -> None:
    message = (
        "GPT2FewShotIntentClassifier: `model: scratch` starts from random weights, so `fine_tune` must be true, "
        "got False. Set `fine_tune: true` in config.yml."
    )
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        Component.create({"model": "scratch"}, model_storage, Resource("x"), execution_context)


# -- no-ops ----------------------------------------------------------------------------------
def test_untrained_component_is_a_logged_no_op(model_storage, execution_context) -> None:
    component = Component.create(TINY, model_storage, Resource("untrained"), execution_context)
    message = unsure("你好", ranking(("greet", 0.2), ("goodbye", 0.1)))
    component.process([message])
    assert message.get("few_shot") == {"acted": False, "reason": "untrained"}
    assert message.get("intent") == {"name": "greet", "confidence": 0.2}
    loaded = Component.load(TINY, model_storage, Resource("never-trained"), execution_context)
    assert not loaded.is_trained


def test_empty_text_and_missing_intent_are_no_ops(fewshot: Component) -> None:
    empty, no_intent = unsure("   ", ranking(("greet", 0.1))), unsure("你好", [])
    fewshot.process([empty, no_intent])
    assert empty.get("few_shot") == {"acted": False, "reason": "empty_text"}
    assert no_intent.get("few_shot") == {"acted": False, "reason": "no_intent"} and no_intent.get("intent") is None


@pytest.mark.parametrize("text", ["😀😀😀", "？？？", "!!! ..."])
def test_messages_without_content_are_left_to_the_fallback_classifier(
    text: str, fewshot: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fewshot._scorer, "score", lambda *a, **k: pytest.fail("scored a message without content"))
    message = unsure(text, ranking(("greet", 0.0), ("goodbye", 0.0)))
    fewshot.process([message])
    assert message.get("few_shot") == {"acted": False, "reason": "no_content"}
    assert message.get("intent") == {"name": "greet", "confidence": 0.0}


def test_messages_of_unknown_words_only_are_left_alone(fewshot: Component, monkeypatch: pytest.MonkeyPatch) -> None:
    scored: List[str] = []
    score = fewshot._scorer.score
    monkeypatch.setattr(fewshot._scorer, "score", lambda *a, **k: scored.append(a[1]) or score(*a, **k))
    mash, mixed = unsure("asdfghjkl", ranking(("greet", 0.0))), unsure("asdf 你好", ranking(("greet", 0.1)))
    fewshot.process([mash, mixed])
    assert mash.get("few_shot") == {"acted": False, "reason": "unknown_words"} and len(scored) == 1
    assert mixed.get("few_shot")["reason"] == "low_confidence"
    fewshot.config["unknown_words_rule"] = False
    fewshot.process([mash])
    assert mash.get("few_shot")["reason"] == "low_confidence" and len(scored) == 2


def test_confident_messages_cost_nothing(fewshot: Component, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fewshot._scorer, "score", lambda *a, **k: pytest.fail("scored a confident message"))
    message = unsure("你好", ranking(("greet", 0.9), ("goodbye", 0.05)))
    fewshot.process([message])
    few_shot = message.get("few_shot")
    assert few_shot["acted"] is False and few_shot["reason"] == "confident"
    assert few_shot["previous"] == {"name": "greet", "confidence": 0.9}
    assert message.get("intent") == {"name": "greet", "confidence": 0.9}


# -- when it acts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "top, second, acted, reason",
    [
        (0.5, 0.25, False, "confident"),  # exactly at both thresholds: not below
        (0.4999, 0.0, True, "low_confidence"),
        (0.75, 0.5, False, "confident"),  # margin exactly 0.25
        (0.75, 0.5001, True, "small_margin"),
        (0.5, 0.2501, True, "small_margin"),
    ],
)
def test_acts_exactly_below_the_thresholds(
    fewshot: Component, top: float, second: float, acted: bool, reason: str
) -> None:
    fewshot.config = {**fewshot.config, "threshold": 0.5, "ambiguity_threshold": 0.25}
    message = unsure("我想退货", ranking(("refund", top), ("check_order", second)))
    fewshot.process([message])
    assert (message.get("few_shot")["acted"], message.get("few_shot")["reason"]) == (acted, reason)


def test_answers_only_with_bot_intents_or_nlu_fallback(fewshot: Component) -> None:
    import random

    rng = random.Random(0)
    strangers = ["nlu_fallback", "out_of_scope", "chitchat"]
    fewshot.config["unknown_words_rule"] = False  # "hello" and "xxx…" are words the tiny bot does not have
    texts = ["天气怎么样", "hello", "我要退款!!", "订单", "好😀😀", "x" * 300, "再见了朋友", "退款" * 50_000]
    for text in texts:
        names = rng.sample(sorted(BOT_INTENTS) + strangers, 5)
        message = unsure(text, ranking(*[(n, 0.2 - 0.01 * i) for i, n in enumerate(names)]))
        fewshot.process([message])
        out = message.as_dict(only_output_properties=True)
        assert out["few_shot"]["acted"] is True
        cfg = fewshot.config
        assert_intent_contract(message, cfg["max_candidates"] + cfg["similarity_candidates"] + 1, allowed=ALLOWED)
        scored = out["few_shot"]["candidates"]
        assert sum(c["confidence"] for c in scored) == pytest.approx(1.0)
        assert {c["name"] for c in scored} <= ALLOWED and scored[-1]["confidence"] <= scored[0]["confidence"]
        assert json.dumps(out, ensure_ascii=False)  # JSON-serialisable for /model/parse


def test_not_applicable_maps_to_nlu_fallback(fewshot: Component, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlu_bert.fewshot.scoring import Scores

    monkeypatch.setattr(
        fewshot._scorer, "score", lambda prefix, query, options, mode: Scores([-3.0] * (len(options) - 1) + [-0.1])
    )
    message = unsure("今天天气", ranking(("greet", 0.3), ("refund", 0.2)))
    fewshot.process([message])
    assert message.get("intent")["name"] == "nlu_fallback"
    assert message.get("intent_ranking")[0]["name"] == "nlu_fallback"
    assert message.get("intent_ranking")[1]["name"] in BOT_INTENTS  # what undoing the fallback gives
    answer = message.get("few_shot")["answer"]
    assert answer["name"] == "nlu_fallback" and answer["confidence"] > 0.5


def test_candidate_set_not_order_hits_the_cache(fewshot: Component) -> None:
    fewshot.config = {**fewshot.config, "similarity_candidates": 0, "max_candidates": 3}
    fewshot._scorer.cache.clear()
    a = unsure("我的快递呢", ranking(("check_order", 0.3), ("refund", 0.2), ("greet", 0.1)))
    b = unsure("查一下", ranking(("greet", 0.3), ("check_order", 0.25), ("refund", 0.2)))
    fewshot.process([a, b])
    assert a.get("few_shot")["cache_hit"] is False and b.get("few_shot")["cache_hit"] is True
    assert {c["name"] for c in b.get("few_shot")["candidates"]} == {"check_order", "refund", "greet", "nlu_fallback"}


def test_nearest_to_message_examples_change_the_prefix_per_message(fewshot: Component) -> None:
    fewshot.config = {
        **fewshot.config,
        "similarity_candidates": 0,
        "max_candidates": 3,
        "example_selection": "nearest_to_message",
    }
    fewshot._scorer.cache.clear()
    a = unsure("我的快递呢", ranking(("check_order", 0.3), ("refund", 0.2), ("greet", 0.1)))
    b = unsure("退款多久", ranking(("check_order", 0.3), ("refund", 0.2), ("greet", 0.1)))
    fewshot.process([a, b])
    assert a.get("few_shot")["cache_hit"] is False and b.get("few_shot")["cache_hit"] is False


def test_similar_intents_join_the_candidates(fewshot: Component) -> None:
    fewshot.config = {**fewshot.config, "similarity_candidates": 1, "max_candidates": 2, "example_selection": "nearest"}
    message = unsure("申请退货退款", ranking(("greet", 0.3), ("goodbye", 0.2), ("refund", 0.01)))
    fewshot.process([message])
    names = {c["name"] for c in message.get("few_shot")["candidates"]}
    assert names == {"greet", "goodbye", "refund", "nlu_fallback"}


def test_an_intent_bert_has_not_learned_is_still_a_candidate(fewshot: Component) -> None:
    """A BERT trained before an intent was added ranks only its own intents; the few-shot path still offers the new
    one (its examples are the nearest) and may answer with it."""
    fewshot.config = {**fewshot.config, "similarity_candidates": 1, "max_candidates": 2, "example_selection": "nearest"}
    message = unsure("申请退货退款", ranking(("greet", 0.3), ("goodbye", 0.2)))
    fewshot.process([message])
    names = {c["name"] for c in message.get("few_shot")["candidates"]}
    assert names == {"greet", "goodbye", "refund", "nlu_fallback"}
    assert message.get("intent")["name"] in names


def test_fallback_classifier_after_it_keeps_working(fewshot: Component) -> None:
    fallback = FallbackClassifier({"threshold": 0.99, "ambiguity_threshold": 0.1})
    message = unsure("先走了", ranking(("goodbye", 0.3), ("greet", 0.29)))
    fewshot.process([message])
    ours = message.get("intent")["name"]
    fallback.process([message])
    assert message.get("intent")["name"] == "nlu_fallback"
    assert message.get("intent_ranking")[1]["name"] == ours


def test_colliding_labels_are_refused(model_storage, execution_context) -> None:
    config = {**TINY, "intent_labels": {"greet": "Goodbye"}}
    component = Component.create(config, model_storage, Resource("collide"), execution_context)
    with pytest.raises(RasaException, match="tokenizes like intent 'goodbye'"):
        component.train(tiny_training_data())


def test_a_model_the_onnx_export_cannot_take_is_refused_before_fine_tuning(
    tmp_path: Path, model_storage, execution_context
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2-inverse-scaling"
    tokenizer = tiny_tokenizer([t for texts in TINY_BOT.values() for t in texts] + list(TINY_BOT), folder)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=2, n_head=2, scale_attn_by_inverse_layer_idx=True
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    component = Component.create({**TINY, "model": str(folder)}, model_storage, Resource("inverse"), execution_context)
    with pytest.raises(
        InvalidConfigException,
        match=re.escape(
            "cannot be exported (unsupported GPT-2 settings: scale_attn_by_inverse_layer_idx). Set `inference: {backend: torch}` in config.yml."
        ),
    ):
        component.train(tiny_training_data())
    assert not component.is_trained


# -- persistence -----------------------------------------------------------------------------
def _answers(component: Component, texts: List[str]) -> List[Optional[Dict[str, Any]]]:
    out = []
    for text in texts:
        message = unsure(text, ranking(("refund", 0.3), ("check_order", 0.25), ("greet", 0.1)))
        component.process([message])
        few_shot = {k: v for k, v in message.get("few_shot").items() if k not in ("time_ms", "cache_hit")}
        out.append({"intent": message.get("intent"), "ranking": message.get("intent_ranking"), "few_shot": few_shot})
    return out


def test_round_trip_through_model_storage(fewshot: Component, storage, context) -> None:
    texts = ["我要退款", "订单到哪了", "你好呀"]
    loaded = Component.load(TINY, storage, Resource("fewshot"), context)
    assert loaded.is_trained and loaded._model is None  # served by onnxruntime, no torch model
    assert _answers(loaded, texts) == _answers(fewshot, texts)  # identical intent, ranking and few_shot
    with storage.read_from(Resource("fewshot")) as folder:
        files = {p.name for p in (folder / "model").iterdir()}
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    # only what onnxruntime loads: no torch weights
    assert {"scorer.int8.onnx", "config.json", "tokenizer.json", "vocab.txt"} <= files
    assert "scorer.onnx" not in files and not any(f.endswith((".safetensors", ".bin", ".pkl")) for f in files)
    assert meta["archive_format"] == 3 and set(meta["labels"]) == BOT_INTENTS
    assert meta["inference"]["backend"] == "onnxruntime" and meta["inference"]["precision"] == "int8"
    assert meta["inference"]["export"]["probe_max_abs_diff"] < 0.05


def test_other_archive_formats_are_refused(fewshot: Component, storage, context) -> None:
    resource = Resource("fewshot")
    with storage.read_from(resource) as folder:
        meta_path = folder / "meta.json"
        original = meta_path.read_text(encoding="utf-8")
    try:
        meta_path.write_text(json.dumps({**json.loads(original), "archive_format": 99}), encoding="utf-8")
        message = (
            f"GPT2FewShotIntentClassifier: this model was trained by nlu-bert {__version__} with archive format 99; "
            f"this nlu-bert ({__version__}) reads formats 1, 2, 3. Train the model again with `rasa train`, or install "
            "the nlu-bert version that trained it."
        )
        with pytest.raises(ModelArchiveError, match=re.escape(message)):
            Component.load(TINY, storage, resource, context)
    finally:
        meta_path.write_text(original, encoding="utf-8")


TORCH = {**TINY, "inference": {"backend": "torch"}}


@pytest.fixture(scope="module")
def trained_torch(storage: LocalModelStorage, context: ExecutionContext) -> Component:
    """The same model trained for the torch backend (same seed and data: the same weights)."""
    component = Component.create(TORCH, storage, Resource("fewshot-torch"), context)
    component.train(tiny_training_data())
    return component


def test_torch_backend_stores_the_weights(trained_torch: Component, storage, context) -> None:
    with storage.read_from(Resource("fewshot-torch")) as folder:
        files = {p.name for p in (folder / "model").iterdir()}
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert "model.safetensors" in files and "vocab.txt" in files and not any(f.endswith(".onnx") for f in files)
    assert meta["inference"]["backend"] == "torch"
    assert Component.load(TORCH, storage, Resource("fewshot-torch"), context)._model is not None


def test_scratch_fine_tuning_precision_and_attention_dropout(trained_torch: Component) -> None:
    """`fine_tune_precision: auto` trains in bf16 where the CPU computes it natively, and a scratch model
    has no attention dropout (its residual and embedding dropout stay)."""
    import torch

    from nlu_bert.fewshot.scoring import resolve_precision

    report = trained_torch._report["fine_tune"]
    assert report["precision"] == resolve_precision("auto", torch.device("cpu"))
    config = trained_torch._model.config
    assert config.attn_pdrop == 0.0 and config.resid_pdrop == 0.1 and config.embd_pdrop == 0.1


TEXTS = ["我要退款", "订单到哪了", "你好呀", "拜拜", "查一下物流"]


@pytest.fixture(scope="module")
def trained_fp32(
    trained_torch: Component, tmp_path_factory: pytest.TempPathFactory, context: ExecutionContext
) -> Component:
    """The same model with the fp32 onnxruntime scorer (trained after the torch one: same seed and data, same weights)."""
    storage = make_storage(tmp_path_factory.mktemp("fp32"))
    component = Component.create(
        {**TINY, "inference": {"precision": "fp32"}}, storage, Resource("fewshot-fp32"), context
    )
    component.train(tiny_training_data())
    with storage.read_from(Resource("fewshot-fp32")) as folder:
        files = {p.name for p in (folder / "model").iterdir()}
    assert "scorer.onnx" in files and "scorer.int8.onnx" not in files
    return component


def test_fp32_scorer_gives_torchs_scores(trained_fp32: Component, storage, context) -> None:
    torch_fp32 = Component.load(
        {**TINY, "inference": {"backend": "torch", "precision": "fp32"}}, storage, Resource("fewshot-torch"), context
    )
    for a, b in zip(_answers(trained_fp32, TEXTS), _answers(torch_fp32, TEXTS)):
        assert a["intent"]["name"] == b["intent"]["name"]
        for x, y in zip(a["few_shot"]["candidates"], b["few_shot"]["candidates"]):
            assert x["name"] == y["name"] and x["log_likelihood"] == pytest.approx(y["log_likelihood"], abs=1e-4)


def test_int8_scorer_decides_like_fp32(trained: Component, trained_fp32: Component) -> None:
    for a, b in zip(_answers(trained, TEXTS), _answers(trained_fp32, TEXTS)):
        assert a["intent"]["name"] == b["intent"]["name"]
        assert a["intent"]["confidence"] == pytest.approx(b["intent"]["confidence"], abs=0.05)


def test_bf16_inference_gives_the_same_decisions(trained_torch: Component, storage, context) -> None:
    texts = ["我要退款", "订单到哪了", "你好呀", "拜拜"]
    fp32 = _answers(
        Component.load(
            {**TINY, "inference": {"backend": "torch", "precision": "fp32"}},
            storage,
            Resource("fewshot-torch"),
            context,
        ),
        texts,
    )
    bf16 = _answers(
        Component.load(
            {**TINY, "inference": {"backend": "torch", "precision": "bf16"}},
            storage,
            Resource("fewshot-torch"),
            context,
        ),
        texts,
    )
    for a, b in zip(fp32, bf16):
        assert a["intent"]["name"] == b["intent"]["name"]
        assert a["intent"]["confidence"] == pytest.approx(b["intent"]["confidence"], abs=0.02)


@pytest.fixture
def meta_of(storage: LocalModelStorage) -> Iterator[Any]:
    """Edit a resource's meta.json for one test; the original is put back after it."""
    saved: List[Any] = []

    def edit(resource: str, change: Any) -> None:
        with storage.read_from(Resource(resource)) as folder:
            path = folder / "meta.json"
            original = path.read_text(encoding="utf-8")
            saved.append((path, original))
            path.write_text(json.dumps(change(json.loads(original))), encoding="utf-8")

    yield edit
    for path, original in saved:
        path.write_text(original, encoding="utf-8")


def test_archives_from_before_the_onnx_scorer_are_served_by_torch(
    trained_torch: Component, storage, context, meta_of
) -> None:
    texts = ["我要退款", "你好呀"]
    expected = _answers(
        Component.load(
            {**TINY, "inference": {"backend": "torch", "precision": "fp32"}},
            storage,
            Resource("fewshot-torch"),
            context,
        ),
        texts,
    )
    meta_of("fewshot-torch", lambda meta: {k: v for k, v in meta.items() if k != "inference"})
    with pytest.warns(UserWarning, match=re.escape("served with `inference.backend` 'torch' instead of 'onnxruntime'")):
        legacy = Component.load(
            {**TINY, "inference": {"precision": "fp32"}}, storage, Resource("fewshot-torch"), context
        )
    assert legacy._model is not None and _answers(legacy, texts) == expected


def test_a_format_1_archive_of_nlu_bert_0_1_0_is_still_served(
    trained: Component, trained_torch: Component, storage, context, meta_of, tmp_path: Path
) -> None:
    """nlu-bert 0.1.0 wrote archive format 1: its int8 scorer took and gave the key/value cache in fp32."""
    from nlu_bert import onnx_tools
    from nlu_bert.fewshot.export import export_scorer

    fp32 = tmp_path / "scorer.onnx"
    export_scorer(trained_torch._model, fp32, "fp32")
    onnx_tools.quantize_int8(fp32, tmp_path / "old.int8.onnx", ["MatMul", "Gemm"])  # 0.1.0's int8 scorer
    expected = _answers(trained, TEXTS)
    with storage.read_from(Resource("fewshot")) as folder:
        scorer = folder / "model" / "scorer.int8.onnx"
        kept = scorer.with_suffix(".kept")
        scorer.rename(kept)
    try:
        (tmp_path / "old.int8.onnx").rename(scorer)
        meta_of("fewshot", lambda meta: {**meta, "archive_format": 1, "nlu_bert_version": "0.1.0"})
        old = Component.load(TINY, storage, Resource("fewshot"), context)
        assert old._scorer.cache_dtype == np.float32
        for a, b in zip(_answers(old, TEXTS), expected):
            assert a["intent"]["name"] == b["intent"]["name"]
            assert a["intent"]["confidence"] == pytest.approx(b["intent"]["confidence"], abs=0.05)
    finally:
        kept.replace(scorer)


@pytest.mark.parametrize(
    "config, message",
    [
        (
            TORCH,
            "holds a scorer for `inference.backend: onnxruntime`, but the config says `inference.backend: torch`. Set `inference: {backend: onnxruntime}`",
        ),
        (
            {**TINY, "inference": {"precision": "fp32"}},
            "holds the int8 scorer, but the config says `inference.precision: fp32`. Set `inference: {precision: int8}` (or auto)",
        ),
    ],
)
def test_an_archive_for_another_backend_or_precision_is_refused(
    trained: Component, storage, context, config, message
) -> None:
    with pytest.raises(ModelArchiveError, match=re.escape(message)):
        Component.load(config, storage, Resource("fewshot"), context)


def test_a_missing_scorer_file_is_a_clear_error(trained: Component, storage, context) -> None:
    with storage.read_from(Resource("fewshot")) as folder:
        path = folder / "model" / "scorer.int8.onnx"
        kept = path.with_suffix(".kept")
        path.rename(kept)
    try:
        message = (
            "GPT2FewShotIntentClassifier: the model archive is damaged or incomplete: model/scorer.int8.onnx is missing"
        )
        with pytest.raises(ModelArchiveError, match=re.escape(message)):
            Component.load(TINY, storage, Resource("fewshot"), context)
    finally:
        kept.rename(path)


ORT_LOAD_WITHOUT_TORCH = """
import sys, pathlib
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.shared.nlu.training_data.message import Message
from nlu_bert import GPT2FewShotIntentClassifier
storage = LocalModelStorage(pathlib.Path({storage!r}))
component = GPT2FewShotIntentClassifier.load({config!r}, storage, Resource("fewshot"), ExecutionContext(GraphSchema({{}}), "x"))
message = Message(data={{"text": "我要退款"}})
message.set("intent", {{"name": "refund", "confidence": 0.3}})
message.set("intent_ranking", [{{"name": "refund", "confidence": 0.3}}, {{"name": "greet", "confidence": 0.2}}])
component.process([message])
print(message.get("few_shot")["acted"], "torch" in sys.modules, "transformers" in sys.modules)
"""


def test_onnxruntime_serving_imports_neither_torch_nor_transformers(trained: Component, storage) -> None:
    import subprocess
    import sys

    code = ORT_LOAD_WITHOUT_TORCH.format(storage=str(storage._storage_path), config=TINY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["True", "False", "False"]


# -- a real Rasa graph: train_nlu, Agent.load, parse_message -------------------------------------
NLU_CONFIG = """
recipe: default.v1
assistant_id: fewshot-test
language: zh
pipeline:
  - name: JiebaTokenizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 2
  - name: LogisticRegressionClassifier
  - name: nlu_bert.GPT2FewShotIntentClassifier
    model: scratch
    fine_tune: true
    fine_tune_epochs: 1
    threshold: 1.0
    max_prompt_tokens: 256
    scratch_hidden_size: 32
    min_confidence: 0.0
    scratch_num_layers: 2
    scratch_num_heads: 2
  - name: FallbackClassifier
    threshold: 0.05
"""


def _nlu_yaml() -> str:
    lines = ['version: "3.1"', "nlu:"]
    for intent, texts in TINY_BOT.items():
        lines += [f"- intent: {intent}", "  examples: |"] + [f"    - {t}" for t in texts]
    return "\n".join(lines) + "\n"


def test_real_graph_train_nlu_and_agent_parse(tmp_path: Path) -> None:
    import asyncio

    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu

    (tmp_path / "config.yml").write_text(NLU_CONFIG, encoding="utf-8")
    (tmp_path / "nlu.yml").write_text(_nlu_yaml(), encoding="utf-8")
    model_path = train_nlu(str(tmp_path / "config.yml"), str(tmp_path / "nlu.yml"), str(tmp_path / "models"))
    assert model_path and Path(model_path).exists()
    agent = Agent.load(model_path)

    async def parse_all(texts: List[str]) -> List[Dict[str, Any]]:
        return [await agent.parse_message(t) for t in texts]

    # (no empty text here: LogisticRegressionClassifier itself fails on a message with no features)
    results = asyncio.run(parse_all(["我要退款", "你好", "包裹到哪里了", "今天天气怎么样"]))
    for result in results:
        few_shot = result["few_shot"]
        assert few_shot["acted"] is True and few_shot["reason"] in ("low_confidence", "small_margin")
        assert few_shot["previous"]["name"] in BOT_INTENTS
        assert result["intent"]["name"] in ALLOWED
        assert {r["name"] for r in result["intent_ranking"]} <= ALLOWED


def test_an_unsure_fallback_keeps_the_previous_answer(fewshot: Component) -> None:
    fewshot.config = {**fewshot.config, "threshold": 0.9, "min_confidence": 1.0}
    before = ranking(("refund", 0.5), ("check_order", 0.3))
    message = unsure("我想退货", before)
    fewshot.process([message])
    report = message.get("few_shot")
    assert (report["acted"], report["reason"], report["why_consulted"]) == (False, "fallback_unsure", "low_confidence")
    assert report["answer"]["confidence"] < 1.0 and report["candidates"]
    assert message.get("intent")["name"] == "refund"
    assert [r["name"] for r in message.get("intent_ranking")] == ["refund", "check_order"]
