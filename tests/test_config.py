"""One config vocabulary for both components: Rasa's names, the same `inference:` block and `scratch_*` keys, old
names accepted for one release with a warning that names the new key, unknown keys refused with a "did you mean"
that also knows Rasa's names, and one comment per default."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Dict

import pytest
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException

from nlu_bert import BertIntentClassifier, GPT2FewShotIntentClassifier
from nlu_bert.config import INFERENCE_KEYS, OLD_NAMES_REMOVED_IN

COMPONENTS = [BertIntentClassifier, GPT2FewShotIntentClassifier]
SCRATCH_KEYS = {"scratch_hidden_size", "scratch_num_layers", "scratch_num_heads"}


def _create(cls: Any, config: Dict[str, Any], model_storage: Any, execution_context: Any) -> Any:
    return cls.create(config, model_storage, Resource("x"), execution_context)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_both_components_share_the_vocabulary(cls: Any) -> None:
    defaults = cls.get_default_config()
    assert {"model", "revision", "cache_dir", "device", "random_seed", "inference"} <= set(defaults)
    assert SCRATCH_KEYS <= set(defaults)
    assert tuple(defaults["inference"]) == INFERENCE_KEYS
    assert not {"seed", "inference_backend", "inference_precision", "scratch_n_embd"} & set(defaults)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_every_default_has_a_comment(cls: Any) -> None:
    """A key's line follows a comment, or a key of the same group (``scratch_*`` sizes under one comment)."""
    source = Path(__import__(cls.__module__, fromlist=["x"]).__file__).read_text(encoding="utf-8")
    block = source.split("def get_default_config")[1].split("\n    @")[0]
    for key in cls.get_default_config():
        preceding = block[: block.index(f'"{key}":')].rstrip().splitlines()
        assert preceding[-1].strip().startswith(("#", '"')), f"{cls.__name__}: `{key}` has no comment"


OLD = [
    (BertIntentClassifier, {"seed": 7}, "seed", "random_seed", {"random_seed": 7}),
    (GPT2FewShotIntentClassifier, {"scratch_n_embd": 64}, "scratch_n_embd", "scratch_hidden_size", {"scratch_hidden_size": 64}),
    (GPT2FewShotIntentClassifier, {"scratch_n_layer": 3}, "scratch_n_layer", "scratch_num_layers", {"scratch_num_layers": 3}),
    (GPT2FewShotIntentClassifier, {"scratch_n_head": 8}, "scratch_n_head", "scratch_num_heads", {"scratch_num_heads": 8}),
    (GPT2FewShotIntentClassifier, {"fine_tune_patience": 0}, "fine_tune_patience", "fine_tune_early_stopping_patience",
     {"fine_tune_early_stopping_patience": 0}),
    (GPT2FewShotIntentClassifier, {"fine_tune_validation_fraction": 0.2}, "fine_tune_validation_fraction",
     "fine_tune_validation_split", {"fine_tune_validation_split": 0.2}),
    (GPT2FewShotIntentClassifier, {"inference_backend": "torch"}, "inference_backend", "inference.backend",
     {"inference": {"backend": "torch", "precision": "auto", "threads": 0, "spinning": True}}),
    (GPT2FewShotIntentClassifier, {"inference_precision": "fp32"}, "inference_precision", "inference.precision",
     {"inference": {"backend": "onnxruntime", "precision": "fp32", "threads": 0, "spinning": True}}),
]  # fmt: skip


@pytest.mark.parametrize("cls, given, old, new, expected", OLD, ids=[o[2] for o in OLD])
def test_old_names_still_work_with_a_warning_that_names_the_new_key(
    cls: Any, given: Dict[str, Any], old: str, new: str, expected: Dict[str, Any], model_storage, execution_context
) -> None:
    message = (
        f"{cls.__name__}: `{old}` is the old name of `{new}`; rename it in config.yml. "
        f"(will be removed in {OLD_NAMES_REMOVED_IN})"
    )
    with pytest.warns(FutureWarning, match=re.escape(message)):
        component = _create(cls, given, model_storage, execution_context)
    assert {k: component.config[k] for k in expected} == expected
    assert old not in component.config


def test_the_old_null_learning_rate_means_auto(model_storage, execution_context) -> None:
    with pytest.warns(
        FutureWarning,
        match=re.escape("`fine_tune_learning_rate: null` is the old spelling of `fine_tune_learning_rate: auto`"),
    ):
        component = _create(
            GPT2FewShotIntentClassifier, {"fine_tune_learning_rate": None}, model_storage, execution_context
        )
    assert component.config["fine_tune_learning_rate"] == "auto"


def test_an_old_and_a_new_name_with_different_values_are_refused(model_storage, execution_context) -> None:
    message = (
        "BertIntentClassifier: both `seed` and `random_seed` are set (to 1 and 2); `seed` is the old name of "
        "`random_seed`. Remove `seed` from config.yml."
    )
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        _create(BertIntentClassifier, {"seed": 1, "random_seed": 2}, model_storage, execution_context)


def test_rasa_hands_the_defaults_merged_in_and_the_old_name_still_wins(model_storage, execution_context) -> None:
    """Rasa's GraphNode merges config.yml into the defaults before the component sees it."""
    from rasa.engine.graph import GraphNode

    with pytest.warns(FutureWarning):
        node = GraphNode(
            "bert",
            BertIntentClassifier,
            "create",
            {"seed": 7},
            "train",
            {},
            True,
            model_storage,
            None,
            execution_context,
        )
    assert node._component.config["random_seed"] == 7


def test_new_names_give_no_warning(model_storage, execution_context) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        _create(BertIntentClassifier, {"random_seed": 7}, model_storage, execution_context)
        _create(
            GPT2FewShotIntentClassifier,
            {"inference": {"backend": "torch"}, "scratch_hidden_size": 64},
            model_storage,
            execution_context,
        )


@pytest.mark.parametrize(
    "cls, key, hint",
    [
        (BertIntentClassifier, "transformer_size", "Did you mean `scratch_hidden_size` (Rasa's DIETClassifier calls it `transformer_size`)?"),
        (GPT2FewShotIntentClassifier, "number_of_transformer_layers", "Did you mean `scratch_num_layers` (Rasa's DIETClassifier calls it `number_of_transformer_layers`)?"),
        (BertIntentClassifier, "model_weights", "Did you mean `model` (Rasa's LanguageModelFeaturizer calls it `model_weights`)?"),
        (GPT2FewShotIntentClassifier, "seed", "Did you mean `random_seed`?"),
        (BertIntentClassifier, "epoch", "Did you mean `epochs`?"),
        (GPT2FewShotIntentClassifier, "inference_threads", "Did you mean `inference`?"),
    ],
)  # fmt: skip
def test_unknown_keys_get_a_did_you_mean_that_knows_rasas_names(
    cls: Any, key: str, hint: str, model_storage, execution_context
) -> None:
    with pytest.raises(InvalidConfigException, match=re.escape(f"{cls.__name__}: unknown config key `{key}`. {hint}")):
        _create(cls, {key: 1}, model_storage, execution_context)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_the_inference_block_refuses_unknown_keys_alike(cls: Any, model_storage, execution_context) -> None:
    message = f"{cls.__name__}: unknown config key `inference.thread`. Did you mean `inference.threads`?"
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        _create(cls, {"inference": {"thread": 1}}, model_storage, execution_context)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_the_scratch_sizes_follow_the_same_rules(cls: Any, model_storage, execution_context) -> None:
    message = f"{cls.__name__}: `scratch_num_layers` must be an integer between 1 and 24, got 30."
    with pytest.raises(InvalidConfigException, match=re.escape(message)):
        _create(cls, {"scratch_num_layers": 30}, model_storage, execution_context)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_the_fingerprint_follows_the_inference_block_whatever_its_spelling(cls: Any) -> None:
    """Rasa retrains when the block as used changes, and an old spelling of the same block is the same model."""
    default = cls.fingerprint_addon({})
    assert cls.fingerprint_addon({"inference": {"threads": 0}}) == default
    assert cls.fingerprint_addon({"inference": {"threads": 2}}) != default
    if cls is GPT2FewShotIntentClassifier:
        assert cls.fingerprint_addon({"inference_backend": "torch"}) == cls.fingerprint_addon(
            {"inference": {"backend": "torch"}}
        )
