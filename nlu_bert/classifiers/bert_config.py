"""BertIntentClassifier's config checks: every key of its defaults, with messages that say what to change."""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping

import rasa.shared.utils.io
from rasa.shared.exceptions import InvalidConfigException

from nlu_bert import archive, backbones
from nlu_bert.bert import predictors
from nlu_bert.confidence import fitting
from nlu_bert.config import ConfigChecker

COMPONENT = archive.BERT
logger = logging.getLogger(__name__)


def validate(config: Dict[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raises InvalidConfigException naming the key and the fix."""
    check = ConfigChecker(COMPONENT, config)
    check.known_keys(defaults)
    check.text("model")
    check.text("revision", optional=True)
    check.text("cache_dir", optional=True)
    check.integer("max_length", 4, 512)
    check.integer("epochs", 1)
    check.integer("batch_size", 1)
    check.positive_or_auto("learning_rate")
    check.positive_or_auto("head_learning_rate")
    check.number("weight_decay", 0, 1)
    check.number("warmup_ratio", 0, 1, high_open=True)
    check.number("label_smoothing", 0, 1, high_open=True)
    check.number("validation_split", 0, 0.5)
    check.integer("early_stopping_patience", 0)
    check.choice("class_weight", ["balanced", "none"])
    check.integer("random_seed", 0)
    check.choice("device", list(backbones.DEVICES))
    check.integer("ranking_length", 0)
    check.choice("save_dtype", ["float32", "float16"])
    check.boolean("finetunable")
    check.text("warm_start_model", optional=True)
    check.number("finetuning_epoch_fraction", 0, 100, low_open=True)
    fitting.check_config(check)
    check.scratch_sizes()
    check.integer("scratch_mlm_epochs", 0)
    check.choice("ngram_features", ["auto", True, False])
    check.integer("ngram_buckets", 2)
    check.integer("ngram_dim", 1)
    check.integer("num_threads", 0)
    for key in ("intent_classification", "entity_recognition", "BILOU_flag"):
        check.boolean(key)
    if not (config["intent_classification"] or config["entity_recognition"]):
        raise InvalidConfigException(
            f"{COMPONENT}: `intent_classification` and `entity_recognition` are both false, so there is nothing "
            "to learn. Set one of them to true in config.yml."
        )
    check.choice("entity_tagger", ["crf", "softmax"])
    check.number("intent_loss_weight", 0, 100)
    check.number("entity_loss_weight", 0, 100, low_open=True)
    inference = check.inference_block()
    try:
        predictors.validate_inference(inference["backend"], inference["precision"], inference["threads"])
    except ValueError as e:
        key = next((k for k in predictors.DEFAULT_KEY_NAMES.values() if str(e).startswith(f"`{k}`")), "inference")
        raise InvalidConfigException(f"{COMPONENT}: {e} Set `{key}` in config.yml.") from None


def resolve_backend(config: Mapping[str, Any], encoder_config: Dict[str, Any]) -> str:
    """What `inference.backend` is for this encoder (`auto` settled); `native` for an encoder it cannot serve is an
    InvalidConfigException (raised before training, not after it)."""
    from nlu_bert.bert import native

    configured, precision = config["inference"]["backend"], config["inference"]["precision"]
    if configured == "native":
        reason = native.check_shape(encoder_config)
        if reason:
            raise InvalidConfigException(
                f"{COMPONENT}: `inference.backend` 'native' cannot serve the backbone {config['model']!r}: "
                f"{reason}. Set `inference: {{backend: auto}}` (or onnxruntime) in config.yml."
            )
    resolved = predictors.resolve_backend(configured, precision, encoder_config)
    if configured == predictors.AUTO:
        logger.info(f"{COMPONENT}: `inference.backend` auto: {resolved} ({precision})")
    return resolved


def serving_backend(meta: Mapping[str, Any], backend: str, precision: str) -> str:
    """``backend``, except for archives written before the `inference` block (nlu-bert 0.1.0 without it): they hold
    torch weights only, so they are served by torch (every precision runs there)."""
    if "inference" in meta or backend == "torch":
        return backend
    rasa.shared.utils.io.raise_warning(
        f"{COMPONENT}: this model was trained before nlu-bert stored ONNX graphs, so it is served with "
        f"`inference.backend` 'torch' ({precision}) instead of '{backend}'. Train the model again "
        "with `rasa train` for a faster backend."
    )
    return "torch"
