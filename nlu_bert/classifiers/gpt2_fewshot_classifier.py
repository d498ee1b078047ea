"""GPT2FewShotIntentClassifier: a GPT-2 few-shot fallback that re-decides unsure intents.

It runs after an intent classifier (normally ``nlu_bert.BertIntentClassifier``). When that
classifier is confident it does nothing. When the top confidence is below ``threshold`` or
the top-two margin below ``ambiguity_threshold``, it shows a causal LM a few_shot_intent_sft
prompt with a few real examples of each of the top candidates and scores every candidate's
label (plus the "none of these" answer, ``not_applicable``) as a continuation. The softmax of
the length-normalised log-likelihoods is the new confidence. It can only answer with an
intent of the bot or ``nlu_fallback``: it never generates free text.

Base usage (config.yml)::

    pipeline:
      - name: JiebaTokenizer
      - name: nlu_bert.BertIntentClassifier
      - name: nlu_bert.GPT2FewShotIntentClassifier
        model: qgyd2021/few_shot_intent_gpt2_base
      - name: FallbackClassifier
        threshold: 0.3
"""
from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Text, Tuple, Type

import rasa.shared.utils.io
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.exceptions import InvalidConfigException, RasaException
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import backbones
from nlu_bert.bert import predictors as runtime
from nlu_bert.config import DefaultsBlock, merge_blocks
from nlu_bert.fewshot.prompts import (
    EXAMPLE_SELECTIONS,
    ExampleBank,
    PromptEncoder,
    ScoringItem,
    encode_episode,
    normalize_text,
    resolve_template,
    sample_episode,
    template_problem,
)
from nlu_bert.version import GPT2_ARCHIVE_FORMAT, GPT2_ARCHIVE_FORMATS_READ, __version__

logger = logging.getLogger(__name__)

FEW_SHOT = "few_shot"
META_FILE = "fewshot.json"
MODEL_DIR = "model"
COMPONENT = "GPT2FewShotIntentClassifier"
MAX_VALIDATION_PROMPTS = 200
CHARS_PER_TOKEN = 16
INFERENCE_PRECISIONS = {"onnxruntime": ("auto", "fp32", "int8"), "torch": ("auto", "fp32", "bf16")}
FINE_TUNE_PRECISIONS = ("auto", "fp32", "bf16")
# onnxruntime's `auto`: int8 was 2-2.5x faster than fp32 and a quarter of its memory, and chose the same answer
# as fp32 for every one of 967 SMP2017 test messages (docs/inference.md); fp32 gives torch's scores to 1e-4
ONNX_AUTO_PRECISION = "int8"


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
        return ["torch", "transformers", "safetensors", "sklearn", "onnxruntime", "onnx"]

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
            "threshold": 0.6,
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
            # AdamW learning rate; None: 5e-4 for scratch, 5e-5 for a pretrained model
            "fine_tune_learning_rate": None,
            # prompts per optimisation step
            "fine_tune_batch_size": 8,
            # auto: bf16 mixed precision (autocast; weights stay fp32) where the hardware computes bf16
            # natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs with bf16), else fp32; or fp32, bf16
            "fine_tune_precision": "auto",
            # stop after this many epochs without a better validation accuracy (0: never)
            "fine_tune_patience": 3,
            # share of each intent's examples held out to validate the scored decision
            "fine_tune_validation_fraction": 0.1,
            # share of generated prompts where the true intent is left out (answer: not_applicable)
            "not_applicable_rate": 0.1,
            # scratch model: hidden size
            "scratch_n_embd": 256,
            # scratch model: transformer layers
            "scratch_n_layer": 4,
            # scratch model: attention heads (must divide scratch_n_embd)
            "scratch_n_head": 4,
            # auto (cuda, then mps, then cpu), cpu, cuda or mps
            "device": "auto",
            # how `rasa run` scores: onnxruntime (the scorer is exported to ONNX at train time; serving
            # imports neither torch nor transformers, ~0.5 GB less memory) or torch (the model as trained;
            # the one that runs on a GPU)
            "inference_backend": "onnxruntime",
            # onnxruntime: auto (= int8), int8 or fp32. torch: auto (bf16 where the CPU / GPU computes bf16
            # natively, else fp32), fp32 or bf16. See docs/inference.md for speed and agreement.
            "inference_precision": "auto",
            # how many few-shot prefixes keep their key/value cache across messages (0: none); one entry
            # holds ~37 kB (onnxruntime int8 and torch bf16: 16-bit caches) / ~74 kB (fp32) per prompt token of a
            # GPT-2 base model
            "prefix_cache_size": 8,
            # seed for example sampling and fine-tuning
            "random_seed": 42,
        }

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: Optional[ExecutionContext] = None,
    ) -> None:
        self.config = merge_blocks(self.get_default_config(), config)
        validate_config(self.config, set(config))
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
        labels = {intent: str(self.config["intent_labels"].get(intent, intent)) for intent in bank.intents}
        backbones.seed_everything(self.config["random_seed"])
        tokenizer, model = self._backbone(bank, labels)
        if self._backend() == "onnxruntime":
            from nlu_bert.fewshot.onnx_scorer import export_problem

            problem = export_problem(model.config)
            if problem:  # before any fine-tuning time is spent
                raise InvalidConfigException(
                    f"{COMPONENT}: `inference_backend: onnxruntime` exports GPT-2 models only, and {self.config['model']!r} "
                    f"cannot be exported ({problem}). Set `inference_backend: torch` in config.yml."
                )
        model.to(backbones.resolve_device(self.config["device"]))
        report = {"source": backbones.describe_source(self.config["model"])}
        # scratch models put the user's line at a fixed position (see nlu_bert.fewshot.scoring)
        self._install(model, tokenizer, bank, labels, report, anchored=backbones.is_scratch(self.config["model"]))
        if self.config["fine_tune"]:
            self._report["fine_tune"] = self._fine_tune(bank)
        self.persist()
        if self._backend() == "onnxruntime":
            # score from the exported graph, exactly as `rasa run` will
            with self._model_storage.read_from(self._resource) as folder:
                self._install_onnx(folder, self._stored_meta(folder))
        else:
            self._set_precision()
        return self._resource

    def _backbone(self, bank: ExampleBank, labels: Dict[str, str]) -> Tuple[Any, Any]:
        model_name = str(self.config["model"])
        logger.info(f"{COMPONENT}: model from {backbones.describe_source(model_name)}")
        if backbones.is_scratch(model_name):
            from transformers import GPT2Config, GPT2LMHeadModel

            from nlu_bert.vocab import build_char_vocab, make_tokenizer

            template = resolve_template(self.config["template"])
            texts = [t for intent in bank.intents for t in bank.examples[intent]] + list(labels.values())
            extra = [template.prompt, template.example, template.example_sep, self.config["not_applicable"]]
            with tempfile.TemporaryDirectory() as folder:
                tokenizer = make_tokenizer(build_char_vocab(texts, extra), Path(folder))
            config = GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=self.config["max_prompt_tokens"],
                n_embd=self.config["scratch_n_embd"],
                n_layer=self.config["scratch_n_layer"],
                n_head=self.config["scratch_n_head"],
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id,
                # no dropout on the attention weights: fine-tuning took 22% less time on SMP2017 with the
                # same validation accuracy (residual and embedding dropout stay at 0.1)
                attn_pdrop=0.0,
            )
            return tokenizer, GPT2LMHeadModel(config)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        revision, cache_dir = self.config["revision"], self.config["cache_dir"]
        tokenizer = backbones.load_pretrained(COMPONENT, model_name, AutoTokenizer.from_pretrained, revision, cache_dir)
        model = backbones.load_pretrained(
            COMPONENT, model_name, AutoModelForCausalLM.from_pretrained, revision, cache_dir
        )
        return tokenizer, model

    def _install(
        self,
        model: Any,
        tokenizer: Any,
        bank: ExampleBank,
        labels: Dict[str, str],
        report: Dict[str, Any],
        anchored: bool = False,
        anchor: Optional[int] = None,
        scorer: Any = None,
        model_config: Any = None,
    ) -> None:
        """Wire a model (or an ONNX ``scorer`` and the model's ``model_config``), tokenizer, examples and
        labels into a ready-to-score component."""
        from nlu_bert.fewshot.scoring import CandidateScorer

        if model is not None:
            model.eval()
            model_config = model.config
        max_tokens = self.config["max_prompt_tokens"]
        limit = _position_limit(model_config)
        if limit and max_tokens > limit:
            logger.warning(f"{COMPONENT}: `max_prompt_tokens` {max_tokens} exceeds the model's {limit} positions; using {limit}.")
            max_tokens = limit
        encoder = PromptEncoder(
            tokenizer,
            resolve_template(self.config["template"]),
            self.config["not_applicable"],
            max_tokens,
            self.config["max_text_tokens"],
            labels=[labels[i] for i in sorted(labels)],
        )
        _check_labels(encoder, labels)
        if anchored and anchor is None:
            anchor = encoder.prefix_budget()
        if anchor is not None and anchor != encoder.prefix_budget():
            raise RasaException(
                f"{COMPONENT}: this model was trained with its user line at position {anchor}, but the current "
                "`max_prompt_tokens`, `max_text_tokens` or `template` put it elsewhere. Use the values it was "
                "trained with, or train again."
            )
        # the answer ends with [SEP]: make generation (if anyone uses the saved model) stop there too
        for cfg in (model_config, getattr(model, "generation_config", None)):
            if cfg is not None and not isinstance(cfg, dict):
                cfg.eos_token_id = encoder.end_id
                cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else encoder.end_id
        self._model, self._tokenizer, self._encoder, self._bank, self._labels = model, tokenizer, encoder, bank, labels
        self._anchor = anchor
        if scorer is None:
            scorer = CandidateScorer(model, cache_size=self.config["prefix_cache_size"], position_anchor=anchor)
        scorer.position_anchor = anchor
        self._scorer = scorer
        self._report = dict(report)

    def _backend(self) -> str:
        return str(self.config["inference_backend"])

    def _precision(self) -> str:
        """The precision the configured backend serves in (``auto`` resolved)."""
        if self._backend() == "onnxruntime":
            setting = self.config["inference_precision"]
            return ONNX_AUTO_PRECISION if setting == "auto" else setting
        from nlu_bert.fewshot.scoring import resolve_precision

        return resolve_precision(self.config["inference_precision"], backbones.resolve_device(self.config["device"]))

    def _torch_precision(self) -> str:
        """The precision torch serves in: the configured one, or for an onnxruntime config served by
        torch (an archive from before the ONNX scorer) fp32 when asked for, else torch's ``auto``."""
        if self._backend() == "torch":
            return self._precision()
        from nlu_bert.fewshot.scoring import resolve_precision

        setting = "fp32" if self.config["inference_precision"] == "fp32" else "auto"
        return resolve_precision(setting, backbones.resolve_device(self.config["device"]))

    def _set_precision(self) -> None:
        from nlu_bert.fewshot.scoring import precision_dtype

        dtype = precision_dtype(self._torch_precision())
        if self._model is not None and self._model.dtype != dtype:
            self._model.to(dtype)
            self._scorer.cache.clear()

    def _fine_tune(self, bank: ExampleBank) -> Dict[str, Any]:
        from nlu_bert.fewshot.scoring import FineTuneSettings, fine_tune, resolve_precision

        assert self._encoder is not None
        encoder, labels, seed = self._encoder, self._labels, self.config["random_seed"]
        train, held_out = _split(bank, self.config["fine_tune_validation_fraction"], seed)
        train_bank = ExampleBank(train, seed=seed)
        pairs = [(t, i) for i in train_bank.intents for t in train_bank.examples[i]]
        rate = self.config["not_applicable_rate"]

        def make_epoch(epoch: int) -> List[ScoringItem]:
            rng = random.Random(f"{seed}:{epoch}")
            return [encode_episode(encoder, sample_episode(train_bank, t, i, rng, rate), labels) for t, i in pairs]

        val_rng = random.Random(f"{seed}:validation")
        val_pairs = [(t, i) for i in sorted(held_out) for t in held_out[i]] or pairs
        if not held_out:
            logger.info(f"{COMPONENT}: too few examples to hold any out; validating on training prompts.")
        val_pairs = val_rng.sample(val_pairs, min(len(val_pairs), MAX_VALIDATION_PROMPTS))
        val_items = [
            encode_episode(encoder, sample_episode(train_bank, t, i, val_rng, rate), labels) for t, i in val_pairs
        ]
        lr = self.config["fine_tune_learning_rate"]
        if lr is None:
            lr = 5e-4 if backbones.is_scratch(self.config["model"]) else 5e-5
        device = next(self._model.parameters()).device
        precision = resolve_precision(self.config["fine_tune_precision"], device)
        if precision == "bf16" and device.type not in ("cpu", "cuda"):
            raise InvalidConfigException(
                f"{COMPONENT}: `fine_tune_precision: bf16` runs on the CPU or a CUDA GPU, not on {device.type}. "
                "Set `fine_tune_precision: fp32` (or auto) in config.yml."
            )
        settings = FineTuneSettings(
            epochs=self.config["fine_tune_epochs"],
            learning_rate=float(lr),
            batch_size=self.config["fine_tune_batch_size"],
            patience=self.config["fine_tune_patience"],
            seed=seed,
            precision=precision,
        )
        logger.info(
            f"{COMPONENT}: fine-tuning on {len(pairs)} prompts per epoch ({len(train_bank.intents)} intents), "
            f"validating on {len(val_items)}, {precision}" + (" mixed precision" if precision == "bf16" else "")
        )
        pad_id = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else encoder.end_id
        report = fine_tune(
            self._model, make_epoch, val_items, settings, pad_id, progress=logger.info, position_anchor=self._anchor
        )
        self._scorer.cache.clear()
        return {
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "best_val_accuracy": report.best_val_accuracy,
            "history": report.history,
            "seconds": round(report.seconds, 2),
            "prompts_per_epoch": len(pairs),
            "validation_prompts": len(val_items),
            "learning_rate": float(lr),
            "precision": precision,
        }

    # -- persistence ---------------------------------------------------------------------------
    def persist(self) -> None:
        if not self.is_trained or self._model is None:  # a loaded component has nothing new to write
            return
        assert self._bank is not None
        backend, precision = self._backend(), self._precision()
        inference: Dict[str, Any] = {"backend": backend, "precision": precision}
        with self._model_storage.write_to(self._resource) as folder:
            model_dir = folder / MODEL_DIR
            if backend == "onnxruntime":
                from nlu_bert.fewshot import onnx_scorer as gpt2_onnx

                # only what onnxruntime loads: the scoring graph, the tokenizer and the model's config
                model_dir.mkdir(parents=True, exist_ok=True)
                self._model.config.save_pretrained(str(model_dir))
                name = gpt2_onnx.ONNX_FILES[precision]
                inference["export"] = gpt2_onnx.export_scorer(self._model, model_dir / name, precision)
                inference["files"] = [name]
            else:
                self._model.save_pretrained(str(model_dir), safe_serialization=True)
            self._tokenizer.save_pretrained(str(model_dir))
            meta = {
                "archive_format": GPT2_ARCHIVE_FORMAT,
                "component": COMPONENT,
                "nlu_bert_version": __version__,
                "labels": self._labels,
                "position_anchor": self._anchor,
                "bank": self._bank.to_json(),
                "report": self._report,
                "inference": inference,
            }
            (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")

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
        component._load_from(model_storage, resource)
        runtime.return_freed_memory()  # what loading read and converted goes back to the system
        return component

    def _load_from(self, model_storage: ModelStorage, resource: Resource) -> None:
        """Install the stored model: the onnxruntime scorer, or the torch model in its serving dtype. A resource
        without a trained model leaves the component untrained (it will not act)."""
        try:
            with model_storage.read_from(resource) as folder:
                meta = self._stored_meta(folder)
                if self._serving_backend(meta) == "onnxruntime":
                    self._install_onnx(folder, meta)
                    return
                from transformers import AutoModelForCausalLM, AutoTokenizer

                from nlu_bert.fewshot.scoring import precision_dtype

                path = str(folder / MODEL_DIR)
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                # straight into the serving dtype: no fp32 copy on the way (half the memory for bf16)
                model = AutoModelForCausalLM.from_pretrained(
                    path, local_files_only=True, torch_dtype=precision_dtype(self._torch_precision())
                )
        except ValueError as e:
            logger.debug(f"{COMPONENT}: resource '{resource.name}' holds no trained model ({e}); it will not act.")
            return
        model.to(backbones.resolve_device(self.config["device"]))
        self._install_stored(meta, model, tokenizer)
        self._set_precision()

    @staticmethod
    def _stored_meta(folder: Path) -> Dict[str, Any]:
        """The archive's metadata; ValueError when the resource holds no trained model."""
        meta_path = folder / META_FILE
        if not meta_path.exists():
            raise ValueError(f"no {META_FILE}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("archive_format") not in GPT2_ARCHIVE_FORMATS_READ:
            raise RasaException(
                f"{COMPONENT}: the model archive holds archive format {meta.get('archive_format')!r} "
                f"(written by nlu-bert {meta.get('nlu_bert_version', 'unknown')}); this nlu-bert "
                f"{__version__} reads formats {', '.join(map(str, GPT2_ARCHIVE_FORMATS_READ))}. Train the model again "
                "with `rasa train`, or install the nlu-bert version that trained it."
            )
        return meta

    def _serving_backend(self, meta: Dict[str, Any]) -> str:
        """The backend the archive was written for. Archives from before the ONNX scorer hold torch
        weights only: they are served by torch, with a warning when the config asks for onnxruntime."""
        stored = (meta.get("inference") or {}).get("backend")
        configured = self._backend()
        if stored is None:
            if configured != "torch":
                rasa.shared.utils.io.raise_warning(
                    f"{COMPONENT}: this model was trained before nlu-bert exported the GPT-2 scorer to ONNX, so it "
                    f"is served with `inference_backend` 'torch' instead of '{configured}'. Train the model again "
                    "with `rasa train` for the onnxruntime backend (about 0.5 GB less memory)."
                )
            return "torch"
        if stored != configured:
            raise RasaException(
                f"{COMPONENT}: the model archive holds a scorer for `inference_backend: {stored}`, but the config "
                f"says `inference_backend: {configured}`. Set `inference_backend: {stored}`, or train the model "
                "again with `rasa train`."
            )
        return stored

    def _install_onnx(self, folder: Path, meta: Dict[str, Any]) -> None:
        from nlu_bert.fewshot import onnx_scorer as gpt2_onnx

        model_dir = folder / MODEL_DIR
        precision = meta["inference"].get("precision")
        setting = self.config["inference_precision"]
        if setting not in ("auto", precision):
            raise RasaException(
                f"{COMPONENT}: the model archive holds the {precision} scorer, but the config says "
                f"`inference_precision: {setting}`. Set `inference_precision: {precision}` (or auto), or train "
                "the model again with `rasa train`."
            )
        path = model_dir / gpt2_onnx.ONNX_FILES.get(precision, "?")
        config_path = model_dir / "config.json"
        for needed in (path, config_path):
            if not needed.is_file():
                raise RasaException(
                    f"{COMPONENT}: the model archive is incomplete: {MODEL_DIR}/{needed.name} is missing. "
                    "Train the model again with `rasa train`."
                )
        try:
            tokenizer: Any = gpt2_onnx.TokenizerFile(model_dir)
        except FileNotFoundError:  # a slow (Python) tokenizer: only transformers can run it
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        scorer = gpt2_onnx.OnnxCandidateScorer(path, cache_size=self.config["prefix_cache_size"])
        model_config = json.loads(config_path.read_text(encoding="utf-8"))
        self._install_stored(meta, None, tokenizer, scorer=scorer, model_config=model_config)

    def _install_stored(self, meta: Dict[str, Any], model: Any, tokenizer: Any, **kwargs: Any) -> None:
        """``_install`` with the examples, labels, report and position anchor the archive stored."""
        bank = ExampleBank.from_json(meta["bank"])
        self._install(model, tokenizer, bank, meta["labels"], meta["report"], anchor=meta.get("position_anchor"), **kwargs)

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
        if not text:
            return {"acted": False, "reason": "empty_text"}
        intent = message.get(INTENT) or {}
        ranking = list(message.get(INTENT_RANKING_KEY) or ([intent] if intent.get(INTENT_NAME_KEY) else []))
        if not ranking:
            return {"acted": False, "reason": "no_intent"}
        top = float(ranking[0].get(PREDICTED_CONFIDENCE_KEY) or 0.0)
        second = float(ranking[1].get(PREDICTED_CONFIDENCE_KEY) or 0.0) if len(ranking) > 1 else 0.0
        previous = {"name": ranking[0].get(INTENT_NAME_KEY), "confidence": top}
        base = {"previous": previous, "margin": top - second}
        if top < self.config["threshold"]:
            reason = "low_confidence"
        elif top - second < self.config["ambiguity_threshold"]:
            reason = "small_margin"
        else:
            return {"acted": False, "reason": "confident", **base}
        started = time.perf_counter()
        candidates, prefix = self._prompt_for(ranking, text)
        assert self._encoder is not None
        encoder = self._encoder
        options = [encoder.answer_ids(self._labels[c]) for c in candidates] + [encoder.answer_ids(encoder.not_applicable)]
        scores = self._scorer.score(prefix, encoder.query_ids(text), options, mode="cached")
        from nlu_bert.fewshot.scoring import softmax

        probs = softmax(scores.log_likelihoods)
        names = candidates + [DEFAULT_NLU_FALLBACK_INTENT_NAME]
        labels = [self._labels[c] for c in candidates] + [encoder.not_applicable]
        scored = sorted(
            (
                {"name": n, "label": lbl, "log_likelihood": float(ll), "confidence": float(p)}
                for n, lbl, ll, p in zip(names, labels, scores.log_likelihoods, probs)
            ),
            key=lambda r: -r["confidence"],
        )
        answer = {INTENT_NAME_KEY: scored[0]["name"], PREDICTED_CONFIDENCE_KEY: scored[0]["confidence"]}
        if answer[PREDICTED_CONFIDENCE_KEY] < self.config["min_confidence"]:
            # too unsure to overrule the previous classifier: leave intent and ranking as they were
            return {
                "acted": False,
                "reason": "fallback_unsure",
                "why_consulted": reason,
                **base,
                "answer": {"name": answer[INTENT_NAME_KEY], "confidence": answer[PREDICTED_CONFIDENCE_KEY]},
                "candidates": scored,
                "cache_hit": scores.cache_hit,
                "time_ms": round(1000 * (time.perf_counter() - started), 2),
            }
        new_ranking = [{INTENT_NAME_KEY: r["name"], PREDICTED_CONFIDENCE_KEY: r["confidence"]} for r in scored]
        if answer[INTENT_NAME_KEY] != DEFAULT_NLU_FALLBACK_INTENT_NAME:
            # like Rasa's FallbackClassifier, nlu_fallback appears in the ranking only when it is the answer
            new_ranking = [r for r in new_ranking if r[INTENT_NAME_KEY] != DEFAULT_NLU_FALLBACK_INTENT_NAME]
        message.set(INTENT, answer, add_to_output=True)
        message.set(INTENT_RANKING_KEY, new_ranking, add_to_output=True)
        return {
            "acted": True,
            "reason": reason,
            **base,
            "answer": {"name": answer[INTENT_NAME_KEY], "confidence": answer[PREDICTED_CONFIDENCE_KEY]},
            "candidates": scored,
            "cache_hit": scores.cache_hit,
            "time_ms": round(1000 * (time.perf_counter() - started), 2),
        }

    def _prompt_for(self, ranking: List[Dict[str, Any]], text: str) -> Tuple[List[str], List[int]]:
        """The candidate intents (in prompt order) and the few-shot prefix's token ids.

        Candidates: the previous classifier's top ``max_candidates`` intents known to this
        component, then up to ``similarity_candidates`` intents with the most similar examples
        (topped up to two candidates when the ranking is short). They appear in the prompt in
        a fixed order (sorted by intent name), so the same candidate set always gives the
        same prefix and hits the key/value cache whatever order the ranking had.
        """
        assert self._bank is not None and self._encoder is not None
        bank, cfg = self._bank, self.config
        known = set(bank.intents)
        priority: List[str] = []
        for entry in ranking:
            name = entry.get(INTENT_NAME_KEY)
            if name in known and name not in priority and len(priority) < cfg["max_candidates"]:
                priority.append(name)
        added = 0
        for name in bank.similar_intents(text, len(priority) + cfg["similarity_candidates"]):
            if added >= cfg["similarity_candidates"]:
                break
            if name not in priority:
                priority.append(name)
                added += 1
        for name in bank.intents:
            if len(priority) >= min(2, len(bank.intents)):
                break
            if name not in priority:
                priority.append(name)
        ordered = sorted(priority)
        selection = cfg["example_selection"]
        groups = [(self._labels[c], bank.select(c, cfg["n_shot"], selection, text)) for c in ordered]
        prefix, shots = self._encoder.fit_prefix(groups, priority=[self._labels[c] for c in priority])
        shown = {label for _, label in shots}
        return [c for c in ordered if self._labels[c] in shown], prefix


def validate_config(config: Dict[Text, Any], given: Optional[set] = None) -> None:
    """Raise InvalidConfigException naming the key, the value received and what is allowed."""
    defaults = GPT2FewShotIntentClassifier.get_default_config()
    unknown = sorted(set(given if given is not None else config) - set(defaults))
    if unknown:
        raise InvalidConfigException(
            f"{COMPONENT}: unknown key(s) {', '.join(f'`{k}`' for k in unknown)}. "
            f"Allowed keys: {', '.join(sorted(defaults))}. Fix the keys in config.yml."
        )

    def fail(key: str, allowed: str) -> None:
        raise InvalidConfigException(
            f"{COMPONENT}: `{key}` must be {allowed}, got {config[key]!r}. Set `{key}` in config.yml."
        )

    def number(key: str, low: float, high: float, allowed: str) -> None:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            fail(key, allowed)

    def integer(key: str, low: int, high: int = 10**9) -> None:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(key, f"an integer ≥ {low}" if high == 10**9 else f"an integer from {low} to {high}")

    if not isinstance(config["model"], str) or not config["model"].strip():
        fail("model", "a hub id, a local folder or `scratch`")
    for key in ("revision", "cache_dir"):
        if config[key] is not None and not isinstance(config[key], str):
            fail(key, "a string or null")
    number("threshold", 0, 1, "between 0 and 1")
    number("ambiguity_threshold", 0, 1, "between 0 and 1")
    number("min_confidence", 0, 1, "between 0 and 1")
    integer("max_candidates", 1, 50)
    integer("similarity_candidates", 0, 10)
    integer("n_shot", 1, 10)
    if config["example_selection"] not in EXAMPLE_SELECTIONS:
        fail("example_selection", f"one of {', '.join(EXAMPLE_SELECTIONS)}")
    problem = template_problem(config["template"])
    if problem:
        fail("template", problem)
    if not isinstance(config["not_applicable"], str) or not config["not_applicable"].strip():
        fail("not_applicable", "a non-empty string such as 不知道")
    labels = config["intent_labels"]
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) and v.strip() for v in labels.values()):
        fail("intent_labels", "a mapping from intent names to non-empty label texts")
    integer("max_prompt_tokens", 64, 8192)
    integer("max_text_tokens", 1, 8192)
    if config["max_text_tokens"] > config["max_prompt_tokens"] // 2:
        fail("max_text_tokens", f"at most half of `max_prompt_tokens` ({config['max_prompt_tokens'] // 2})")
    if not isinstance(config["fine_tune"], bool):
        fail("fine_tune", "true or false")
    if backbones.is_scratch(config["model"]) and not config["fine_tune"]:
        raise InvalidConfigException(
            f"{COMPONENT}: `model: scratch` starts from random weights, so `fine_tune` must be true, "
            f"got {config['fine_tune']!r}. Set `fine_tune: true` in config.yml."
        )
    integer("fine_tune_epochs", 1)
    lr = config["fine_tune_learning_rate"]
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1):
        fail("fine_tune_learning_rate", "a number between 0 and 1 (exclusive) or null")
    integer("fine_tune_batch_size", 1)
    if config["fine_tune_precision"] not in FINE_TUNE_PRECISIONS:
        fail("fine_tune_precision", f"one of {', '.join(FINE_TUNE_PRECISIONS)}")
    integer("fine_tune_patience", 0)
    number("fine_tune_validation_fraction", 0, 0.5, "between 0 and 0.5")
    number("not_applicable_rate", 0, 0.9, "between 0 and 0.9")
    for key in ("scratch_n_embd", "scratch_n_layer", "scratch_n_head"):
        integer(key, 1)
    if config["scratch_n_embd"] % config["scratch_n_head"]:
        fail("scratch_n_embd", f"a multiple of `scratch_n_head` ({config['scratch_n_head']})")
    if config["device"] not in backbones.DEVICES:
        fail("device", f"one of {', '.join(backbones.DEVICES)}")
    if config["inference_backend"] not in INFERENCE_PRECISIONS:
        fail("inference_backend", f"one of {', '.join(INFERENCE_PRECISIONS)}")
    allowed = INFERENCE_PRECISIONS[config["inference_backend"]]
    if config["inference_precision"] not in allowed:
        fail("inference_precision", f"one of {', '.join(allowed)} with `inference_backend: {config['inference_backend']}`")
    integer("prefix_cache_size", 0, 4096)
    integer("random_seed", 0)


def _position_limit(model_config: Any) -> Optional[int]:
    """The model's longest sequence (config object or config.json dict)."""
    for key in ("n_positions", "max_position_embeddings"):
        value = model_config.get(key) if isinstance(model_config, dict) else getattr(model_config, key, None)
        if value:
            return int(value)
    return None


def _check_labels(encoder: PromptEncoder, labels: Dict[str, str]) -> None:
    """Every intent needs its own answer tokens, different from the not-applicable answer's."""
    seen: Dict[Tuple[int, ...], str] = {tuple(encoder.answer_ids(encoder.not_applicable)): "`not_applicable`"}
    unk = encoder.tokenizer.unk_token_id
    for intent in sorted(labels):
        ids = tuple(encoder.answer_ids(labels[intent]))
        if len(ids) < 2:
            raise RasaException(f"{COMPONENT}: the label of intent '{intent}' is empty once tokenized. Set `intent_labels`.")
        if ids in seen:
            raise RasaException(
                f"{COMPONENT}: intent '{intent}' (label '{labels[intent]}') tokenizes like {seen[ids]}, so the "
                "model cannot tell them apart. Give one of them another text in `intent_labels` in config.yml."
            )
        seen[ids] = f"intent '{intent}'"
        if unk is not None and unk in ids:
            logger.warning(f"{COMPONENT}: the label of intent '{intent}' has characters unknown to the tokenizer.")


def _split(bank: ExampleBank, fraction: float, seed: int) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """Stratified hold-out: each intent with 4+ examples gives ``fraction`` of them (at least 1)."""
    rng = random.Random(f"{seed}:split")
    train: Dict[str, List[str]] = {}
    held: Dict[str, List[str]] = {}
    for intent in bank.intents:
        texts = list(bank.examples[intent])
        n = max(1, round(len(texts) * fraction)) if fraction > 0 and len(texts) >= 4 else 0
        rng.shuffle(texts)
        held_texts, train[intent] = texts[:n], texts[n:]
        if held_texts:
            held[intent] = held_texts
    return train, held
