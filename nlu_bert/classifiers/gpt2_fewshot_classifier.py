"""GPT2FewShotIntentClassifier: a GPT-2 few-shot fallback that re-decides unsure intents.

When the intent classifier before it is unsure, it scores each top candidate's label (and the "none of these"
answer) after a few_shot_intent_sft prompt with real examples of each: it can only answer with an intent of the
bot or ``nlu_fallback``, never with free text. docs/gpt2-fewshot-classifier.md has the whole story.

Base usage (config.yml)::

    pipeline:
      - name: JiebaTokenizer
      - name: nlu_bert.BertIntentClassifier
      - name: nlu_bert.GPT2FewShotIntentClassifier
        model: qgyd2021/few_shot_intent_gpt2_base
      - name: FallbackClassifier
        threshold: 0.3

The Rasa adapter only: defaults, validation, train, persist, load, process. Prompts, the decision, scoring,
fine-tuning and the ONNX scorer are in :mod:`nlu_bert.fewshot`; what goes into the archive in :mod:`nlu_bert.archive`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Text, Type

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import archive, backbones, extras, onnx_tools
from nlu_bert.confidence.fitting import GPT2_THRESHOLD
from nlu_bert.config import ConfigChecker, DefaultsBlock, merge_blocks, rename_old_keys
from nlu_bert.fewshot import decision, serving
from nlu_bert.fewshot import model as fewshot_model
from nlu_bert.fewshot.prompts import EXAMPLE_SELECTIONS, ExampleBank, PromptEncoder, template_problem
from nlu_bert.hardware import return_freed_memory
from nlu_bert.text import normalize_text

logger = logging.getLogger(__name__)

COMPONENT = archive.GPT2
FEW_SHOT = "few_shot"
CHARS_PER_TOKEN = 16
INFERENCE_PRECISIONS = {"onnxruntime": ("auto", "fp32", "int8"), "torch": ("auto", "fp32", "bf16")}
FINE_TUNE_PRECISIONS = ("auto", "fp32", "bf16")
# nlu-bert 0.2.0 -> 0.3.0: the names BertIntentClassifier uses for the same settings
OLD_NAMES = {
    "scratch_n_embd": "scratch_hidden_size",
    "scratch_n_layer": "scratch_num_layers",
    "scratch_n_head": "scratch_num_heads",
    "inference_backend": "inference.backend",
    "inference_precision": "inference.precision",
    "fine_tune_patience": "fine_tune_early_stopping_patience",
    "fine_tune_validation_fraction": "fine_tune_validation_split",
}
OLD_VALUES = {"fine_tune_learning_rate": (None, "auto")}


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class GPT2FewShotIntentClassifier(GraphComponent, IntentClassifier):
    """Re-decides unsure intents by scoring a GPT-2 few-shot prompt over the top candidates."""

    @classmethod
    def required_components(cls) -> List[Type]:
        # It reads the intent of the classifier before it at inference time, but Rasa checks
        # requirements in the training graph too, where trainable classifiers do not feed each
        # other; requiring IntentClassifier here would reject every valid pipeline.
        return []

    @staticmethod
    def required_packages() -> List[Text]:
        return ["safetensors", "onnxruntime", "tokenizers", "sklearn"]  # serving; training: extras.TRAIN_PACKAGES

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            # hub id, a local folder holding a causal LM + tokenizer, or "scratch" (a small GPT-2
            # trained on the bot's own data; needs `fine_tune: true`)
            "model": "qgyd2021/few_shot_intent_gpt2_base",
            # hub revision (branch, tag or commit) of `model`; None: the default branch
            "revision": None,
            # where hub downloads are cached; None: the Hugging Face default (HF_HOME)
            "cache_dir": None,
            # act when the previous classifier's top confidence is below this
            "threshold": GPT2_THRESHOLD,
            # ... or when its top-two confidence margin is below this
            "ambiguity_threshold": 0.1,
            # its answer replaces the previous one only when its own confidence is at least this;
            # below it the previous answer stays (reason `fallback_unsure`), so a weak model cannot
            # lower accuracy. With 5 candidates + "none of these", a uniform guess is ~0.17.
            "min_confidence": 0.4,
            # how many of the previous classifier's top intents become candidates
            "max_candidates": 5,
            # extra candidates: the intents whose examples look most like the message (TF-IDF),
            # so a rare intent the previous classifier under-ranks can still be chosen
            "similarity_candidates": 1,
            # examples shown per candidate intent
            "n_shot": 2,
            "unknown_words_rule": True,  # leave alone messages of letters only, of words no example has (asdf)
            # nearest: each intent's most typical examples (nearest to its centroid; cacheable);
            # nearest_to_message: the examples most like the message; random: a fixed seeded sample
            "example_selection": "nearest",
            # a template name (few_shot_zh, few_shot_zh_backticks, intent_zh, few_shot_en) or a
            # mapping {prompt, example, example_sep} in the few_shot_intent_sft format
            "template": "few_shot_zh",
            # the answer meaning "none of these"; chosen, it maps to Rasa's `nlu_fallback`
            "not_applicable": "不知道",
            # {intent: text shown to the model instead of the intent's name}
            "intent_labels": DefaultsBlock(),
            # most tokens of [CLS] prompt [SEP] answer [SEP]; bounds the time per message
            "max_prompt_tokens": 512,
            # the user's text is cut to this many tokens
            "max_text_tokens": 64,
            # fine-tune the model on prompts generated from the training data (needed for scratch)
            "fine_tune": False,
            # at most this many passes over the training examples (one prompt per example each)
            "fine_tune_epochs": 10,
            # AdamW learning rate; auto: 5e-4 for scratch, 5e-5 for a pretrained model
            "fine_tune_learning_rate": "auto",
            # prompts per optimisation step
            "fine_tune_batch_size": 8,
            # auto: bf16 mixed precision (autocast; weights stay fp32) where the hardware computes bf16
            # natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs with bf16), else fp32; or fp32, bf16
            "fine_tune_precision": "auto",
            # stop after this many epochs without a better validation accuracy (0: never)
            "fine_tune_early_stopping_patience": 3,
            # share of each intent's examples held out to validate the scored decision (stratified; intents
            # with < 3 examples are never held out)
            "fine_tune_validation_split": 0.1,
            # share of generated prompts where the true intent is left out (answer: not_applicable)
            "not_applicable_rate": 0.1,
            # `scratch` model size: hidden width, layers, attention heads (must divide the width)
            "scratch_hidden_size": 256,
            "scratch_num_layers": 4,
            "scratch_num_heads": 4,
            # auto (cuda, then mps, then cpu), cpu, cuda or mps
            "device": "auto",
            # How `rasa run` scores (docs/inference.md has speed and agreement):
            #   backend: onnxruntime (the scorer is exported to ONNX at train time; serving imports neither torch
            #   nor transformers, ~0.5 GB less memory) or torch (the model as trained; the one that runs on a GPU);
            #   precision: onnxruntime: auto (= int8), int8 or fp32; torch: auto (bf16 where the CPU / GPU computes
            #   bf16 natively, else fp32), fp32 or bf16;
            #   threads: CPU threads for one message (0 = OMP_NUM_THREADS if set, else every core);
            #   spinning: onnxruntime's idle threads busy-wait for the next op of a message.
            "inference": DefaultsBlock(
                backend="onnxruntime", precision="auto", threads=0, spinning=onnx_tools.ALLOW_SPINNING
            ),
            # how many few-shot prefixes keep their key/value cache across messages (0: none); one entry
            # holds ~37 kB (onnxruntime int8 and torch bf16: 16-bit caches) / ~74 kB (fp32) per prompt token of a
            # GPT-2 base model
            "prefix_cache_size": 8,
            # seed for example sampling and fine-tuning
            "random_seed": 42,
        }

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        """The `inference` block as it will be used (see BertIntentClassifier.fingerprint_addon)."""
        return json.dumps(cls._merged(config, warn=False)["inference"], sort_keys=True, default=str)

    @classmethod
    def _merged(cls, config: Mapping[str, Any], warn: bool = True) -> Dict[str, Any]:
        defaults = cls.get_default_config()
        renamed = rename_old_keys(COMPONENT, config, defaults, OLD_NAMES, OLD_VALUES, warn=warn)
        return merge_blocks(defaults, renamed)

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: Optional[ExecutionContext] = None,
    ) -> None:
        self.config = self._merged(config)
        self.validate_config(self.config)
        self._model_storage = model_storage
        self._resource = resource
        self._model: Any = None
        self._tokenizer: Any = None
        self._encoder: Optional[PromptEncoder] = None
        self._scorer: Any = None
        self._bank: Optional[ExampleBank] = None
        self._labels: Dict[str, str] = {}
        self._anchor: Optional[int] = None
        self._report: Dict[str, Any] = {}

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        """Raise InvalidConfigException naming the key, the value received and what is allowed."""
        check = ConfigChecker(COMPONENT, config)
        check.known_keys(cls.get_default_config())
        check.text("model")
        check.text("revision", optional=True)
        check.text("cache_dir", optional=True)
        for key in ("threshold", "ambiguity_threshold", "min_confidence"):
            check.number(key, 0, 1)
        check.integer("max_candidates", 1, 50)
        check.integer("similarity_candidates", 0, 10)
        check.integer("n_shot", 1, 10)
        check.choice("example_selection", EXAMPLE_SELECTIONS)
        problem = template_problem(config["template"])
        if problem:
            check.fail("template", f"must be {problem}")
        check.text("not_applicable")
        labels = config["intent_labels"]
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) and v.strip() for v in labels.values()):
            check.fail("intent_labels", "must be a mapping from intent names to non-empty label texts")
        check.integer("max_prompt_tokens", 64, 8192)
        check.integer("max_text_tokens", 1, 8192)
        if config["max_text_tokens"] > config["max_prompt_tokens"] // 2:
            check.fail(
                "max_text_tokens", f"must be at most half of `max_prompt_tokens` ({config['max_prompt_tokens'] // 2})"
            )
        check.boolean("fine_tune")
        check.boolean("unknown_words_rule")
        if backbones.is_scratch(config["model"]) and not config["fine_tune"]:
            raise InvalidConfigException(
                f"{COMPONENT}: `model: scratch` starts from random weights, so `fine_tune` must be true, "
                f"got {config['fine_tune']!r}. Set `fine_tune: true` in config.yml."
            )
        check.integer("fine_tune_epochs", 1)
        check.positive_or_auto("fine_tune_learning_rate")
        check.integer("fine_tune_batch_size", 1)
        check.choice("fine_tune_precision", FINE_TUNE_PRECISIONS)
        check.integer("fine_tune_early_stopping_patience", 0)
        check.number("fine_tune_validation_split", 0, 0.5)
        check.number("not_applicable_rate", 0, 0.9)
        check.scratch_sizes()
        check.choice("device", backbones.DEVICES)
        inference = check.inference_block()
        block = ConfigChecker(COMPONENT, inference, prefix="inference.")
        block.choice("backend", list(INFERENCE_PRECISIONS))
        allowed = INFERENCE_PRECISIONS[inference["backend"]]
        if inference["precision"] not in allowed:
            block.fail(
                "precision", f"must be one of {', '.join(allowed)} with `inference.backend: {inference['backend']}`"
            )
        check.integer("prefix_cache_size", 0, 4096)
        check.integer("random_seed", 0)

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> GPT2FewShotIntentClassifier:
        return cls(config, model_storage, resource, execution_context)

    @property
    def is_trained(self) -> bool:
        return self._scorer is not None

    # -- training ------------------------------------------------------------------------------
    def train(self, training_data: TrainingData) -> Resource:
        examples: Dict[str, List[str]] = defaultdict(list)
        for message in training_data.intent_examples:
            if message.get(TEXT) and message.get(INTENT):
                examples[message.get(INTENT)].append(message.get(TEXT))
        bank = ExampleBank(dict(examples), seed=self.config["random_seed"])
        if not bank.intents:
            logger.warning(f"{COMPONENT}: no intent examples in the training data; nothing to train.")
            return self._resource
        extras.require_train(COMPONENT)
        labels = {intent: str(self.config["intent_labels"].get(intent, intent)) for intent in bank.intents}
        backbones.seed_everything(self.config["random_seed"])
        tokenizer, model = fewshot_model.build(COMPONENT, self.config, bank, labels)
        if self._backend() == "onnxruntime":
            from nlu_bert.fewshot.export import export_problem

            problem = export_problem(model.config)
            if problem:  # before any fine-tuning time is spent
                raise InvalidConfigException(
                    f"{COMPONENT}: `inference.backend: onnxruntime` exports GPT-2 models only, and "
                    f"{self.config['model']!r} cannot be exported ({problem}). Set `inference: {{backend: torch}}` "
                    "in config.yml."
                )
        model.to(backbones.resolve_device(self.config["device"]))
        self._report = {"source": backbones.describe_source(self.config["model"])}
        # scratch models put the user's line at a fixed position (see nlu_bert.fewshot.scoring)
        self._install(model, tokenizer, bank, labels, anchored=backbones.is_scratch(self.config["model"]))
        if self.config["fine_tune"]:
            from nlu_bert.fewshot.fine_tune import fine_tune_on_bank

            assert self._encoder is not None
            self._report["fine_tune"] = fine_tune_on_bank(
                COMPONENT, model, tokenizer, self._encoder, bank, labels, self.config, self._anchor
            )
            self._scorer.cache.clear()
        self.persist()
        if self._backend() == "onnxruntime":
            # score from the exported graph, exactly as `rasa run` will
            with self._model_storage.read_from(self._resource) as folder:
                self._load_from(folder)
        else:
            self._set_precision()
        return self._resource

    def _install(self, model: Any, tokenizer: Any, bank: ExampleBank, labels: Dict[str, str], **kwargs: Any) -> None:
        """Wire a model (or an ONNX ``scorer`` and the model's ``model_config``), tokenizer, examples and labels into
        a ready-to-score component (:func:`nlu_bert.fewshot.model.install`)."""
        installed = fewshot_model.install(COMPONENT, self.config, model, tokenizer, labels, **kwargs)
        self._encoder, self._anchor, self._scorer = installed
        self._model, self._tokenizer, self._bank, self._labels = model, tokenizer, bank, labels

    def _backend(self) -> str:
        return str(self.config["inference"]["backend"])

    def _set_precision(self) -> None:
        from nlu_bert.fewshot.scoring import precision_dtype

        dtype = precision_dtype(serving.torch_precision(self.config))
        if self._model is not None and self._model.dtype != dtype:
            self._model.to(dtype)
            self._scorer.cache.clear()

    # -- persistence ---------------------------------------------------------------------------
    def persist(self) -> None:
        if not self.is_trained or self._model is None:  # a loaded component has nothing new to write
            return
        from nlu_bert.fewshot.export import write_model

        assert self._bank is not None
        with self._model_storage.write_to(self._resource) as folder:
            backend, precision = self._backend(), serving.precision(self.config)
            inference = write_model(folder, self._model, self._tokenizer, backend, precision)
            meta = {"labels": self._labels, "position_anchor": self._anchor, "bank": self._bank.to_json()}
            archive.write_meta(folder, COMPONENT, {**meta, "inference": inference})
            archive.write_report(folder, self._report)

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> GPT2FewShotIntentClassifier:
        component = cls(config, model_storage, resource, execution_context)
        with contextlib.ExitStack() as stack:
            try:
                folder = stack.enter_context(model_storage.read_from(resource))
            except ValueError as e:  # Rasa's answer for a resource that was never written (no intent examples)
                logger.debug(f"{COMPONENT}: resource '{resource.name}' holds no trained model ({e}); it will not act.")
                return component
            component._load_from(folder)
        return_freed_memory()  # what loading read and converted goes back to the system
        return component

    def _load_from(self, folder: Path) -> None:
        """Install the stored model: the onnxruntime scorer, or the torch model in its serving dtype."""
        meta = archive.read_meta(folder, COMPONENT)
        loaded = serving.load(folder, meta, self.config)
        self._install_stored(
            meta, loaded.model, loaded.tokenizer, scorer=loaded.scorer, model_config=loaded.model_config
        )
        if loaded.model is not None:  # the onnxruntime scorer has its precision in its graph (and needs no torch)
            self._set_precision()

    def _install_stored(self, meta: Dict[str, Any], model: Any, tokenizer: Any, **kwargs: Any) -> None:
        """``_install`` with the examples, labels and position anchor the archive stored."""
        bank = ExampleBank.from_json(meta["bank"])
        self._install(model, tokenizer, bank, meta["labels"], anchor=meta.get("position_anchor"), **kwargs)

    # -- inference -----------------------------------------------------------------------------
    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            message.set(FEW_SHOT, self._decide(message), add_to_output=True)
        return messages

    def _decide(self, message: Message) -> Dict[str, Any]:
        """Re-decide the message's intent if the previous classifier is unsure; report what happened."""
        if not self.is_trained:
            logger.debug(f"{COMPONENT}: not trained; leaving the intent as it is.")
            return {"acted": False, "reason": "untrained"}
        # cut long texts before any tokenizing or TF-IDF (a token spans at most a few characters)
        text = normalize_text(message.get(TEXT) or "")[: CHARS_PER_TOKEN * self.config["max_text_tokens"]]
        assert self._bank is not None and self._encoder is not None
        unreadable = decision.unreadable(text, self._bank, self.config["unknown_words_rule"])
        if unreadable:  # empty; emoji, punctuation, keyboard mash: left to FallbackClassifier
            return {"acted": False, "reason": unreadable}
        ranking = decision.ranking_of(message.get(INTENT), message.get(INTENT_RANKING_KEY))
        if not ranking:
            return {"acted": False, "reason": "no_intent"}
        reason, facts = decision.consult(ranking, self.config["threshold"], self.config["ambiguity_threshold"])
        if reason is None:
            return {"acted": False, "reason": "confident", **facts}
        started = time.perf_counter()
        encoder, labels = self._encoder, self._labels
        candidates, prefix = decision.prompt_for(ranking, text, self._bank, encoder, labels, self.config)
        options = [encoder.answer_ids(labels[c]) for c in candidates] + [encoder.answer_ids(encoder.not_applicable)]
        scores = self._scorer.score(prefix, encoder.query_ids(text), options, mode="cached")
        shown = [labels[c] for c in candidates]
        scored = decision.scored_candidates(candidates, shown, encoder.not_applicable, scores.log_likelihoods)
        answer = {INTENT_NAME_KEY: scored[0]["name"], PREDICTED_CONFIDENCE_KEY: scored[0]["confidence"]}
        result = {
            "answer": {"name": scored[0]["name"], "confidence": scored[0]["confidence"]},
            "candidates": scored,
            "cache_hit": scores.cache_hit,
            "time_ms": round(1000 * (time.perf_counter() - started), 2),
        }
        if answer[PREDICTED_CONFIDENCE_KEY] < self.config["min_confidence"]:
            # too unsure to overrule the previous classifier: leave intent and ranking as they were
            return {"acted": False, "reason": "fallback_unsure", "why_consulted": reason, **facts, **result}
        message.set(INTENT, answer, add_to_output=True)
        message.set(INTENT_RANKING_KEY, decision.ranking_from(scored), add_to_output=True)
        return {"acted": True, "reason": reason, **facts, **result}
