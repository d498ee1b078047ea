"""The few-shot model: a small GPT-2 built from the bot's data (``scratch``) or a causal LM from the hub or a folder,
and the prompt encoder that fits it (length limits, labels the model can tell apart, answers that end with
``[SEP]``)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from rasa.shared.exceptions import RasaException

from nlu_bert import backbones, vocab
from nlu_bert.fewshot.prompts import ExampleBank, PromptEncoder, resolve_template

logger = logging.getLogger(__name__)


def build(component: str, config: Mapping[str, Any], bank: ExampleBank, labels: Dict[str, str]) -> Tuple[Any, Any]:
    """(tokenizer, model): for ``scratch`` a GPT-2 with random weights and a character vocabulary of the examples,
    labels, template and not-applicable answer; else ``config["model"]`` from the hub or a folder (failures raise
    ``ModelUnavailableError``)."""
    model_name = str(config["model"])
    logger.info(f"{component}: model from {backbones.describe_source(model_name)}")
    if backbones.is_scratch(model_name):
        from transformers import GPT2Config, GPT2LMHeadModel

        template = resolve_template(config["template"])
        texts = [t for intent in bank.intents for t in bank.examples[intent]] + list(labels.values())
        extra = [template.prompt, template.example, template.example_sep, config["not_applicable"]]
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = vocab.make_tokenizer(vocab.build_char_vocab(texts, extra), Path(folder))
        gpt2_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config["max_prompt_tokens"],
            n_embd=config["scratch_hidden_size"],
            n_layer=config["scratch_num_layers"],
            n_head=config["scratch_num_heads"],
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
            # no dropout on the attention weights: fine-tuning took 22% less time on SMP2017 with the
            # same validation accuracy (residual and embedding dropout stay at 0.1)
            attn_pdrop=0.0,
        )
        return tokenizer, GPT2LMHeadModel(gpt2_config)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    revision, cache_dir = config["revision"], config["cache_dir"]
    tokenizer = backbones.load_pretrained(component, model_name, AutoTokenizer.from_pretrained, revision, cache_dir)
    model = backbones.load_pretrained(component, model_name, AutoModelForCausalLM.from_pretrained, revision, cache_dir)
    return tokenizer, model


def install(
    component: str,
    config: Mapping[str, Any],
    model: Any,
    tokenizer: Any,
    labels: Dict[str, str],
    anchored: bool = False,
    anchor: Optional[int] = None,
    scorer: Any = None,
    model_config: Any = None,
) -> Tuple[PromptEncoder, Optional[int], Any]:
    """(prompt encoder, position anchor, scorer) for a torch ``model``, or an ONNX ``scorer`` and the model's
    ``model_config``. A scratch model (``anchored``) reads the user's line at a fixed position: the one it was
    trained with, which the current prompt settings must give again."""
    from nlu_bert.fewshot.scoring import CandidateScorer

    if model is not None:
        model.eval()
        model_config = model.config
    encoder = prompt_encoder(component, config, tokenizer, model_config, labels)
    if anchored and anchor is None:
        anchor = encoder.prefix_budget()
    if anchor is not None and anchor != encoder.prefix_budget():
        raise RasaException(
            f"{component}: this model was trained with its user line at position {anchor}, but the current "
            "`max_prompt_tokens`, `max_text_tokens` or `template` put it elsewhere. Use the values it was "
            "trained with, or train again."
        )
    end_answers_at_sep(encoder, tokenizer, model, model_config)
    if scorer is None:
        scorer = CandidateScorer(model, cache_size=config["prefix_cache_size"], position_anchor=anchor)
    scorer.position_anchor = anchor
    return encoder, anchor, scorer


def prompt_encoder(
    component: str, config: Mapping[str, Any], tokenizer: Any, model_config: Any, labels: Dict[str, str]
) -> PromptEncoder:
    """The prompt encoder for ``labels`` (intent -> label text) within the model's positions; labels that tokenize
    alike are a clear error."""
    max_tokens = config["max_prompt_tokens"]
    limit = position_limit(model_config)
    if limit and max_tokens > limit:
        logger.warning(
            f"{component}: `max_prompt_tokens` {max_tokens} exceeds the model's {limit} positions; using {limit}."
        )
        max_tokens = limit
    encoder = PromptEncoder(
        tokenizer,
        resolve_template(config["template"]),
        config["not_applicable"],
        max_tokens,
        config["max_text_tokens"],
        labels=[labels[i] for i in sorted(labels)],
    )
    check_labels(component, encoder, labels)
    return encoder


def end_answers_at_sep(encoder: PromptEncoder, tokenizer: Any, model: Any, model_config: Any) -> None:
    """The answer ends with [SEP]: make generation (if anyone uses the saved model) stop there too."""
    for cfg in (model_config, getattr(model, "generation_config", None)):
        if cfg is not None and not isinstance(cfg, dict):
            cfg.eos_token_id = encoder.end_id
            cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else encoder.end_id


def position_limit(model_config: Any) -> Optional[int]:
    """The model's longest sequence (config object or config.json dict)."""
    for key in ("n_positions", "max_position_embeddings"):
        value = model_config.get(key) if isinstance(model_config, dict) else getattr(model_config, key, None)
        if value:
            return int(value)
    return None


def check_labels(component: str, encoder: PromptEncoder, labels: Dict[str, str]) -> None:
    """Every intent needs its own answer tokens, different from the not-applicable answer's."""
    seen: Dict[Tuple[int, ...], str] = {tuple(encoder.answer_ids(encoder.not_applicable)): "`not_applicable`"}
    unk = encoder.tokenizer.unk_token_id
    for intent in sorted(labels):
        ids = tuple(encoder.answer_ids(labels[intent]))
        if len(ids) < 2:
            raise RasaException(
                f"{component}: the label of intent '{intent}' is empty once tokenized. Set `intent_labels`."
            )
        if ids in seen:
            raise RasaException(
                f"{component}: intent '{intent}' (label '{labels[intent]}') tokenizes like {seen[ids]}, so the "
                "model cannot tell them apart. Give one of them another text in `intent_labels` in config.yml."
            )
        seen[ids] = f"intent '{intent}'"
        if unk is not None and unk in ids:
            logger.warning(f"{component}: the label of intent '{intent}' has characters unknown to the tokenizer.")
