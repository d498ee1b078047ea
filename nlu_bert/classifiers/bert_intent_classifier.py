"""BertIntentClassifier: a Hugging Face BERT fine-tuned on the bot's NLU data inside ``rasa train``.

Base usage (config.yml)::

    pipeline:
      - name: JiebaTokenizer
      - name: nlu_bert.BertIntentClassifier
        model: hfl/chinese-bert-wwm-ext   # or a local folder, or `scratch`

torch and transformers are imported inside methods only, so importing this module is cheap.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Text, Tuple

import numpy as np
import rasa.shared.utils.io
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.exceptions import InvalidConfigException, RasaException
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import backbones
from nlu_bert.bert import predictors as runtime
from nlu_bert.config import ConfigChecker, DefaultsBlock, merge_blocks
from nlu_bert.version import BERT_ARCHIVE_FORMAT, __version__

logger = logging.getLogger(__name__)

COMPONENT = "BertIntentClassifier"
WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "encoder_config.json"
TOKENIZER_DIR = "tokenizer"
META_FILE = "meta.json"
REPORT_FILE = "training_report.json"
# after training, a served int8 / bf16 model is compared with fp32 on this many training texts
AGREEMENT_TEXTS = 1000
MIN_AGREEMENT = 0.995

# learning rates chosen by `auto`: (backbone, head + n-gram table)
AUTO_LR = {"pretrained": (3e-5, 1e-3), "scratch": (5e-4, 5e-3)}
MLM_LEARNING_RATE = 1e-3


class ModelArchiveError(RasaException):
    """The component's files in the Rasa model archive are missing, damaged or of another version."""


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class BertIntentClassifier(GraphComponent, IntentClassifier):
    """Fine-tunes a BERT (hub id, local folder or `scratch`) to classify intents."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            # Backbone: a hub id (honours HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE), a local folder with
            # config.json + weights + tokenizer, or `scratch` (small BERT, random weights, char vocabulary).
            "model": "hfl/chinese-bert-wwm-ext",
            # Hub revision (branch, tag or commit) of `model`; null = the default branch.
            "revision": None,
            # Where hub downloads are cached; null = HF_HOME / the huggingface_hub default.
            "cache_dir": None,
            # Longest input in tokens; longer texts are truncated (and counted in the data summary).
            "max_length": 64,
            # Most training epochs; early stopping usually ends sooner.
            "epochs": 30,
            # Examples per training step; also the inference batch size.
            "batch_size": 32,
            # Backbone learning rate; `auto` = 3e-5 for pre-trained backbones, 5e-4 for `scratch`.
            "learning_rate": "auto",
            # Learning rate of the classification head and n-gram table; `auto` = 1e-3 / 5e-3 (scratch).
            "head_learning_rate": "auto",
            # AdamW weight decay (not applied to biases, LayerNorm and the n-gram table).
            "weight_decay": 0.01,
            # Fraction of the training steps with a linear learning-rate warm-up.
            "warmup_ratio": 0.1,
            # Label smoothing of the cross-entropy loss (0 = off).
            "label_smoothing": 0.0,
            # Fraction of each intent held out for early stopping (stratified; intents with < 3 examples
            # are never held out). 0 = no validation: all `epochs` run.
            "validation_split": 0.1,
            # Stop after this many epochs without a better validation macro-F1 (0 = never stop early).
            "early_stopping_patience": 4,
            # Class imbalance: `balanced` weights the loss by 1/sqrt(examples per intent); `none`.
            "class_weight": "balanced",
            # Seed of weights init, data order and split: same data + seed gives the same model on CPU.
            "seed": 42,
            # Where to train and predict: auto (cuda, then mps, then cpu), cpu, cuda, mps.
            "device": "auto",
            # Intents in `intent_ranking` (0 = all).
            "ranking_length": 10,
            # dtype of the torch weights in the model archive: float16 (half the size) or float32.
            # Only the `torch` inference backend stores them; `onnxruntime` stores its ONNX graph instead,
            # `native` its int8 weights with the other tensors in this dtype.
            "save_dtype": "float16",
            # `scratch` backbone size: hidden width, layers, attention heads.
            "scratch_hidden_size": 256,
            "scratch_num_layers": 4,
            "scratch_num_heads": 4,
            # `scratch`: epochs of masked-language-model pre-training on the bot's own texts (0 = off;
            # on SMP2017 10 epochs lowered test accuracy from 0.894 to 0.865, so it is off by default).
            "scratch_mlm_epochs": 0,
            # Hashed character 1..3-gram features beside the encoder: `auto` (on for `scratch` only), true, false.
            "ngram_features": "auto",
            # Hash buckets and width of the n-gram table.
            "ngram_buckets": 50000,
            "ngram_dim": 128,
            # Threads for training on CPU (0 = torch's default, all cores).
            "num_threads": 0,
            # How `rasa run` / `rasa shell` predict (docs/inference.md has the measurements):
            #   backend: auto (native for int8 BERT encoders, else onnxruntime; bf16: torch), native
            #   (nlu-bert's own int8 kernel, BERT encoders only: its C kernel on CPUs with AMX or AVX-512
            #   VNNI, onnxruntime on the same int8 weights elsewhere), onnxruntime (the model is exported to ONNX
            #   at train time), or torch;
            #   precision: int8 (dynamic quantization), fp32, or bf16 (torch only); native is int8 only;
            #   threads: CPU threads for one message (0 = every core this process may use);
            #   spinning: onnxruntime's idle threads busy-wait for the next op: 13-19% faster on cores of
            #   its own, about 2x slower where other busy processes share the cores (docs/inference.md).
            # The default is the fastest option whose top intent agreed with fp32 on >= 99.5% of test texts.
            "inference": DefaultsBlock(
                backend=runtime.DEFAULT_BACKEND,
                precision=runtime.DEFAULT_PRECISION,
                threads=runtime.DEFAULT_NUM_THREADS,
                spinning=runtime.ORT_ALLOW_SPINNING,
            ),
        }

    @staticmethod
    def required_packages() -> List[Text]:
        return ["torch", "transformers", "safetensors", "onnxruntime", "onnx"]

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        """The `inference` block as it will be used, defaults filled in: Rasa fingerprints only the keys
        config.yml gives, so a model is retrained when a default of this block changes."""
        inference = merge_blocks(cls.get_default_config(), config)["inference"]
        return json.dumps(inference, sort_keys=True, default=str)

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> None:
        self.config = merge_blocks(self.get_default_config(), config)
        self.validate_config(self.config)
        self._model_storage = model_storage
        self._resource = resource
        self._execution_context = execution_context
        self.labels: List[str] = []
        self.model: Any = None  # the trained torch nlu_bert.bert.model.IntentModel (after train only)
        self.tokenizer: Any = None  # the transformers tokenizer (after train only)
        self.predictor: Optional[runtime.Predictor] = None  # what predicts, once trained or loaded
        self.encoder: Any = None  # texts -> (input_ids, attention_mask)
        self.meta: Dict[str, Any] = {}
        self._device: Any = None
        self._resolved_backend: Optional[str] = None  # what `inference.backend` auto became for this model

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        check = ConfigChecker(COMPONENT, config)
        check.known_keys(cls.get_default_config())
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
        check.integer("seed", 0)
        check.choice("device", list(backbones.DEVICES))
        check.integer("ranking_length", 0)
        check.choice("save_dtype", ["float32", "float16"])
        check.integer("scratch_hidden_size", 8)
        check.integer("scratch_num_layers", 1, 24)
        check.integer("scratch_num_heads", 1)
        if config["scratch_hidden_size"] % config["scratch_num_heads"]:
            check.fail("scratch_hidden_size", f"must be a multiple of `scratch_num_heads` ({config['scratch_num_heads']})")
        check.integer("scratch_mlm_epochs", 0)
        check.choice("ngram_features", ["auto", True, False])
        check.integer("ngram_buckets", 2)
        check.integer("ngram_dim", 1)
        check.integer("num_threads", 0)
        cls._validate_inference(check, config)

    @staticmethod
    def _validate_inference(check: ConfigChecker, config: Dict[Text, Any]) -> None:
        inference = config.get("inference")
        if not isinstance(inference, Mapping):
            check.fail("inference", "must be a mapping of `backend`, `precision`, `threads`, `spinning`, e.g. "
                       "`inference: {backend: torch}`")
        ConfigChecker(COMPONENT, inference).known_keys(["backend", "precision", "threads", "spinning"], prefix="inference.")
        if not isinstance(inference["spinning"], bool):
            raise InvalidConfigException(
                f"{COMPONENT}: `inference.spinning` must be true or false, got {inference['spinning']!r}. "
                "Set `inference.spinning` in config.yml."
            )
        try:
            runtime.validate_inference(inference["backend"], inference["precision"], inference["threads"])
        except ValueError as e:
            key = next((k for k in runtime.DEFAULT_KEY_NAMES.values() if str(e).startswith(f"`{k}`")), "inference")
            raise InvalidConfigException(f"{COMPONENT}: {e} Set `{key}` in config.yml.") from None

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "BertIntentClassifier":
        return cls(config, model_storage, resource, execution_context)

    @property
    def is_scratch(self) -> bool:
        return backbones.is_scratch(self.config["model"])

    def _use_ngrams(self) -> bool:
        setting = self.config["ngram_features"]
        return self.is_scratch if setting == "auto" else bool(setting)

    def _learning_rates(self) -> Tuple[float, float]:
        auto_lr, auto_head = AUTO_LR["scratch" if self.is_scratch else "pretrained"]
        lr = auto_lr if self.config["learning_rate"] == "auto" else float(self.config["learning_rate"])
        head = auto_head if self.config["head_learning_rate"] == "auto" else float(self.config["head_learning_rate"])
        return lr, head

    # ------------------------------------------------------------------ training
    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if (m.get(TEXT) or "").strip() and m.get(INTENT)]
        texts = [m.get(TEXT).strip() for m in examples]
        intents = [m.get(INTENT) for m in examples]
        if not texts:
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: the training data has no intent examples, so the classifier was not trained "
                "and will predict no intent. Add examples under `nlu:` in your data files."
            )
            return self._resource
        if len(set(intents)) < 2:
            raise RasaException(
                f"{COMPONENT}: the training data has only one intent ('{intents[0]}'); an intent classifier "
                "needs at least two. Add examples of other intents, or remove the classifier from the pipeline."
            )

        import torch

        from nlu_bert.bert import model as modeling
        from nlu_bert.bert import training

        started = time.perf_counter()
        backbones.seed_everything(self.config["seed"])
        if self.config["num_threads"]:
            torch.set_num_threads(self.config["num_threads"])
        self._device = backbones.resolve_device(self.config["device"])
        logger.info(f"{COMPONENT}: backbone {backbones.describe_source(self.config['model'])}, device {self._device}")

        self.tokenizer, encoder, mlm_model = self._build_backbone(texts)
        self._resolve_backend(encoder.config.to_dict())
        token_lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        summary, keep = training.summarize(texts, intents, token_lengths, self.config["max_length"])
        self._warn_about_data(summary)
        texts = [texts[i] for i in keep]
        self.labels = sorted(set(intents))
        label_ids = [self.labels.index(intents[i]) for i in keep]

        use_ngrams = self._use_ngrams()
        self.meta = self._meta(use_ngrams)
        max_length = self.config["max_length"]

        def encode(batch_texts: List[str]) -> Dict[str, torch.Tensor]:
            enc = self.tokenizer(
                batch_texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

        if mlm_model is not None:
            training.pretrain_mlm(
                mlm_model,
                encode,
                texts,
                epochs=self.config["scratch_mlm_epochs"],
                batch_size=self.config["batch_size"],
                learning_rate=MLM_LEARNING_RATE,
                mask_token_id=self.tokenizer.mask_token_id,
                special_ids=self.tokenizer.all_special_ids,
                vocab_size=len(self.tokenizer),
                seed=self.config["seed"],
                device=self._device,
                log=lambda line: logger.info(f"{COMPONENT}: {line}"),
            )

        self.model = modeling.IntentModel(
            encoder,
            num_labels=len(self.labels),
            ngram_buckets=self.config["ngram_buckets"] if use_ngrams else 0,
            ngram_dim=self.config["ngram_dim"],
        )

        def make_batch(idx: List[int]) -> Dict[str, torch.Tensor]:
            batch = encode([texts[i] for i in idx])
            if use_ngrams:
                batch["ngram_ids"] = torch.from_numpy(self._ngram_ids([texts[i] for i in idx]))
            return batch

        train_idx, val_idx = training.stratified_split(label_ids, self.config["validation_split"], self.config["seed"])
        lr, head_lr = self._learning_rates()
        logger.info(
            f"{COMPONENT}: fine-tuning on {len(train_idx)} examples, validating on {len(val_idx)}, "
            f"{len(self.labels)} intents, up to {self.config['epochs']} epochs"
        )
        result = training.fit(
            self.model,
            make_batch,
            train_idx,
            torch.tensor(label_ids),
            val_idx,
            [label_ids[i] for i in val_idx],
            epochs=self.config["epochs"],
            batch_size=self.config["batch_size"],
            learning_rate=lr,
            head_learning_rate=head_lr,
            weight_decay=self.config["weight_decay"],
            warmup_ratio=self.config["warmup_ratio"],
            weights=training.class_weights([label_ids[i] for i in train_idx], len(self.labels), self.config["class_weight"]),
            label_smoothing=self.config["label_smoothing"],
            patience=self.config["early_stopping_patience"],
            seed=self.config["seed"],
            device=self._device,
            log=lambda line: logger.info(f"{COMPONENT}: {line}"),
        )
        self.model.to("cpu").eval()
        report = {
            "nlu_bert_version": __version__,
            "backbone": backbones.describe_source(self.config["model"]),
            "data": summary.to_dict(),
            "train_examples": len(train_idx),
            "validation_examples": len(val_idx),
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "best_val_macro_f1": result.best_val_macro_f1,
            "history": result.history,
            "fit_seconds": round(result.seconds, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
            "config": {k: v for k, v in self.config.items()},
        }
        self.persist(report)
        # predict exactly as `rasa run` will: from what the archive holds, with the configured backend
        with self._model_storage.read_from(self._resource) as folder:
            self._load_from(Path(folder))
        if self._precision != "fp32":
            report["served_agreement"] = self._served_agreement(make_batch, val_idx + train_idx, texts)
            with self._model_storage.write_to(self._resource) as folder:
                _write_report(Path(folder), report)
        return self._resource

    def _served_agreement(self, make_batch: Any, idx: List[int], texts: List[str]) -> Dict[str, Any]:
        """Top intent of the served model (int8 / bf16) against the fp32 model it was made from, on up to
        `AGREEMENT_TEXTS` examples, the held-out validation texts first. Below 99.5% it warns."""
        import torch

        from nlu_bert.bert import training

        idx = idx[:AGREEMENT_TEXTS]
        reference = training.predict(self.model, make_batch, idx, self.config["batch_size"], torch.device("cpu"))
        served = self.predict_proba([texts[i] for i in idx]).argmax(-1)
        differ = int((reference.argmax(-1).numpy() != served).sum())
        result = {"texts": len(idx), "differ": differ, "agreement": round(1.0 - differ / max(len(idx), 1), 6)}
        logger.info(
            f"{COMPONENT}: {self._backend} {self._precision} picks the same intent as fp32 on "
            f"{result['agreement']:.2%} of {len(idx)} training texts ({differ} differ)"
        )
        if result["agreement"] < MIN_AGREEMENT:
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: the {self._precision} model picks another intent than fp32 for {differ} of "
                f"{len(idx)} training texts ({result['agreement']:.2%} agree; the default aims at "
                f"{MIN_AGREEMENT:.1%}). Set `inference: {{precision: fp32}}` in config.yml to serve fp32."
            )
        return result

    def _build_backbone(self, texts: List[str]) -> Tuple[Any, Any, Any]:
        """(tokenizer, encoder, mlm_model or None). Hub and folder failures raise ModelUnavailableError."""
        from transformers import AutoModel, AutoTokenizer, BertForMaskedLM

        from nlu_bert import vocab
        from nlu_bert.bert import model as modeling

        if self.is_scratch:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="nlu_bert_vocab_") as folder:
                tokenizer = vocab.make_tokenizer(vocab.build_char_vocab(texts), Path(folder))
            bert_config = modeling.scratch_bert_config(
                vocab_size=len(tokenizer),
                hidden_size=self.config["scratch_hidden_size"],
                num_layers=self.config["scratch_num_layers"],
                num_heads=self.config["scratch_num_heads"],
                max_length=self.config["max_length"],
            )
            mlm = BertForMaskedLM(bert_config) if self.config["scratch_mlm_epochs"] > 0 else None
            encoder = mlm.bert if mlm is not None else AutoModel.from_config(bert_config, add_pooling_layer=False)
            return tokenizer, encoder, mlm
        hub = {"revision": self.config["revision"], "cache_dir": self.config["cache_dir"]}
        tokenizer = backbones.load_pretrained(COMPONENT, self.config["model"], AutoTokenizer.from_pretrained, **hub)
        encoder = backbones.load_pretrained(COMPONENT, self.config["model"], AutoModel.from_pretrained, **hub)
        _drop_pooler(encoder)
        return tokenizer, encoder, None

    def _warn_about_data(self, summary: Any) -> None:
        for line in summary.lines():
            logger.info(f"{COMPONENT}: data: {line}")
        if summary.conflicting_texts:
            shown = "; ".join(f"'{t}' → {', '.join(ys)}" for t, ys in list(summary.conflicting_texts.items())[:5])
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: {len(summary.conflicting_texts)} texts appear under more than one intent "
                f"(e.g. {shown}). The model cannot tell these apart; keep each text under one intent."
            )
        if summary.truncated:
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: {summary.truncated} training texts are longer than `max_length` "
                f"({summary.max_length} tokens; longest {summary.longest_tokens}) and were truncated. "
                "Raise `max_length` if the end of long texts matters."
            )
        odd = [label for label in summary.examples_per_intent if any(c.isspace() or c in "/{}[]()" for c in label)]
        if odd:
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: intent names with spaces, slashes or brackets ({', '.join(repr(o) for o in odd[:5])}) "
                "work for classification but break Rasa's `/intent` message syntax and story files. "
                "Rename them, e.g. 'check order' → 'check_order'."
            )
        if summary.singleton_intents:
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: {len(summary.singleton_intents)} intents have a single example "
                f"({', '.join(summary.singleton_intents[:5])}); they cannot be validated and will be "
                "recognised poorly. Add a few more examples to each."
            )

    def _meta(self, use_ngrams: bool) -> Dict[str, Any]:
        return {
            "archive_format": BERT_ARCHIVE_FORMAT,
            "nlu_bert_version": __version__,
            "labels": self.labels,
            "max_length": self.config["max_length"],
            "ngram_buckets": self.config["ngram_buckets"] if use_ngrams else 0,
            "ngram_dim": self.config["ngram_dim"],
            "ngram_range": [1, 3],
            "max_ngrams": self.config["max_length"] * 3,
        }

    def _ngram_ids(self, texts: List[str]) -> np.ndarray:
        from nlu_bert.bert.ngrams import batch_ngram_ids

        return batch_ngram_ids(
            texts, self.meta["ngram_buckets"], tuple(self.meta["ngram_range"]), self.meta["max_ngrams"]
        )

    # ------------------------------------------------------------------ persistence
    @property
    def _backend(self) -> str:
        """The configured backend, or what `auto` became for this model (set by train and load)."""
        return self._resolved_backend or self.config["inference"]["backend"]

    def _resolve_backend(self, encoder_config: Dict[str, Any]) -> None:
        """Settle `inference.backend` for this encoder; `native` is refused before training, not after it."""
        configured = self.config["inference"]["backend"]
        if configured == "native":
            from nlu_bert.bert import native

            reason = native.check_shape(encoder_config)
            if reason:
                raise InvalidConfigException(
                    f"{COMPONENT}: `inference.backend` 'native' cannot serve the backbone {self.config['model']!r}: "
                    f"{reason}. Set `inference: {{backend: auto}}` (or onnxruntime) in config.yml."
                )
        self._resolved_backend = runtime.resolve_backend(configured, self._precision, encoder_config)
        if configured == runtime.AUTO:
            logger.info(f"{COMPONENT}: `inference.backend` auto: {self._resolved_backend} ({self._precision})")

    @property
    def _precision(self) -> str:
        return self.config["inference"]["precision"]

    def _archive_files(self, backend: Optional[str] = None, precision: Optional[str] = None) -> List[str]:
        """What a backend loads (besides meta.json; default: the configured one): only these go into the archive."""
        backend = backend or self._backend
        if backend == "onnxruntime":
            return [runtime.ONNX_FILES[precision or self._precision], TOKENIZER_DIR]
        if backend == "native":
            from nlu_bert.bert import native

            return [native.NATIVE_FILE, TOKENIZER_DIR]
        return [WEIGHTS_FILE, ENCODER_CONFIG_FILE, TOKENIZER_DIR]

    def persist(self, report: Optional[Dict[str, Any]] = None) -> None:
        """Write the trained model into the archive, as the configured `inference` backend loads it:
        onnxruntime gets the exported (and for int8 quantized) ONNX graph, torch the safetensors weights."""
        from safetensors import SafetensorError

        try:
            with self._model_storage.write_to(self._resource) as folder:
                self._write(Path(folder), report)
        except (OSError, SafetensorError) as e:
            raise RasaException(
                f"{COMPONENT}: could not write the trained model into the Rasa model archive "
                f"({type(e).__name__}: {getattr(e, 'strerror', None) or e}). Free disk space (or point `rasa train --out` at a disk "
                "with room) and train again."
            ) from None

    def _write(self, folder: Path, report: Optional[Dict[str, Any]]) -> None:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        if self._backend == runtime.AUTO:  # a model given to a component that did not train it
            self._resolve_backend(self.model.encoder.config.to_dict())
        files = self._archive_files()
        meta = {**self.meta, "inference": {"backend": self._backend, "precision": self._precision}, "files": files}
        if WEIGHTS_FILE in files:
            dtype = torch.float16 if self.config["save_dtype"] == "float16" else torch.float32
            state = {
                k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
                for k, v in self.model.state_dict().items()
            }
            save_file(state, str(folder / WEIGHTS_FILE), metadata={"nlu_bert_version": __version__})
            self.model.encoder.config.to_json_file(str(folder / ENCODER_CONFIG_FILE))
        else:
            started = time.perf_counter()
            try:
                runtime.export_for_inference(
                    self.model, folder, self._backend, self._precision, save_dtype=self.config["save_dtype"]
                )
            except (OSError, SafetensorError):  # a full disk: persist() names that fix
                raise
            except Exception as e:  # noqa: BLE001 - any export failure has the same way out
                other = "onnxruntime" if self._backend == "native" else "torch"
                raise RasaException(
                    f"{COMPONENT}: exporting the trained model for `inference.backend` '{self._backend}' failed "
                    f"({type(e).__name__}: {e}). Set `inference: {{backend: {other}}}` in config.yml to serve the "
                    f"model with {other} instead."
                ) from None
            meta["export_seconds"] = round(time.perf_counter() - started, 2)
            logger.info(f"{COMPONENT}: exported the model for {self._backend} ({self._precision}) in {meta['export_seconds']} s")
        self.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        if report is not None:
            _write_report(folder, report)

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "BertIntentClassifier":
        component = cls(config, model_storage, resource, execution_context)
        try:
            with model_storage.read_from(resource) as folder:
                component._load_from(Path(folder))
        except ValueError:
            # Rasa raises ValueError when the resource does not exist: the component was not trained
            # (no intent examples), so it predicts no intent.
            logger.debug(f"{COMPONENT}: no trained model in the archive for resource '{resource.name}'.")
        runtime.return_freed_memory()
        return component

    def _load_from(self, folder: Path) -> None:
        """Set up the predictor from the archive. The onnxruntime backend imports neither torch nor transformers."""
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise ModelArchiveError(_archive_message(folder, f"{META_FILE} is missing"))
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelArchiveError(_archive_message(folder, f"{META_FILE} is unreadable ({e})")) from None
        if not isinstance(meta, dict) or meta.get("archive_format") != BERT_ARCHIVE_FORMAT:
            meta = meta if isinstance(meta, dict) else {}
            raise ModelArchiveError(
                f"{COMPONENT}: this model was trained by nlu-bert {meta.get('nlu_bert_version', '?')} with archive "
                f"format {meta.get('archive_format')!r}; this nlu-bert ({__version__}) reads format {BERT_ARCHIVE_FORMAT}. "
                "Train the model again with `rasa train`, or install the nlu-bert version that trained it."
            )
        backend, precision = self._serving_backend(meta)
        for name in self._archive_files(backend, precision):
            if not (folder / name).exists():
                made = meta.get("inference") or {}
                if made and (made.get("backend"), made.get("precision")) != (backend, precision):
                    raise ModelArchiveError(
                        f"{COMPONENT}: this model was exported for `inference.backend` '{made.get('backend')}' "
                        f"with `inference.precision` '{made.get('precision')}', but the config asks for "
                        f"'{backend}' / '{precision}' ({name} is not in the archive). Train again with "
                        "this inference config, or set it back."
                    )
                raise ModelArchiveError(_archive_message(folder, f"{name} is missing"))
        labels = list(meta.get("labels") or [])
        threads = self.config["inference"]["threads"]
        try:
            if backend == "onnxruntime":
                spinning = self.config["inference"]["spinning"]
                predictor: runtime.Predictor = runtime.load_predictor(
                    folder, backend, precision, threads, allow_spinning=spinning
                )
                outputs = predictor.session.get_outputs()[0].shape[-1]  # type: ignore[attr-defined]
            elif backend == "native":  # CPU only: resolving `device` would import torch
                spinning = self.config["inference"]["spinning"]  # where onnxruntime serves the file
                predictor = runtime.load_predictor(folder, backend, precision, threads, allow_spinning=spinning)
                outputs = predictor.num_labels
            else:
                model = self._load_torch_model(folder, meta, labels)
                outputs = model.classifier.out_features
                predictor = runtime.load_predictor(
                    folder, backend, precision, threads, model=model, device=self._resolve_device()
                )
            encoder = self._text_encoder(folder / TOKENIZER_DIR, int(meta["max_length"]))
        except ModelArchiveError:
            raise
        except Exception as e:  # noqa: BLE001 - any damage to these files gets the same message
            raise ModelArchiveError(_archive_message(folder, f"{type(e).__name__}: {e}")) from None
        if outputs != len(labels):
            raise ModelArchiveError(
                _archive_message(folder, f"the weights have {outputs} outputs but {META_FILE} lists {len(labels)} intents")
            )
        self.predictor, self.encoder, self.labels, self.meta = predictor, encoder, labels, meta

    def _serving_backend(self, meta: Dict[str, Any]) -> Tuple[str, str]:
        """The configured backend (for `auto`: the one the archive was made for), except for archives written
        before the `inference` block (nlu-bert 0.1.0 without it): they hold torch weights only, so they are
        served by torch (every precision runs there)."""
        made = meta.get("inference")
        if isinstance(made, dict) and self.config["inference"]["backend"] == runtime.AUTO:
            self._resolved_backend = str(made.get("backend"))
        if "inference" in meta or self._backend == "torch":
            return self._backend, self._precision
        rasa.shared.utils.io.raise_warning(
            f"{COMPONENT}: this model was trained before nlu-bert stored ONNX graphs, so it is served with "
            f"`inference.backend` 'torch' ({self._precision}) instead of '{self._backend}'. Train the model again "
            "with `rasa train` for a faster backend."
        )
        return "torch", self._precision

    def _resolve_device(self) -> Any:
        return backbones.resolve_device(self.config["device"])

    def _load_torch_model(self, folder: Path, meta: Dict[str, Any], labels: List[str]) -> Any:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        from nlu_bert.bert import model as modeling

        try:
            encoder_config = AutoConfig.from_pretrained(str(folder / ENCODER_CONFIG_FILE), local_files_only=True)
            state = load_file(str(folder / WEIGHTS_FILE))
        except Exception as e:  # noqa: BLE001
            raise ModelArchiveError(_archive_message(folder, f"{type(e).__name__}: {e}")) from None
        head = state.get("classifier.weight")
        if head is None or head.shape[0] != len(labels):
            raise ModelArchiveError(
                _archive_message(
                    folder,
                    f"the weights have {None if head is None else head.shape[0]} outputs but {META_FILE} "
                    f"lists {len(labels)} intents",
                )
            )
        encoder = AutoModel.from_config(encoder_config)
        _drop_pooler(encoder)
        model = modeling.IntentModel(
            encoder, num_labels=len(labels), ngram_buckets=meta["ngram_buckets"], ngram_dim=meta["ngram_dim"]
        )
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except RuntimeError as e:
            raise ModelArchiveError(_archive_message(folder, f"the weights do not fit the model: {e}")) from None
        return model.eval()

    @staticmethod
    def _text_encoder(folder: Path, max_length: int) -> Any:
        """``runtime.TextEncoder`` (the `tokenizers` library only) when the tokenizer was saved as
        tokenizer.json; a transformers tokenizer otherwise (slow tokenizers)."""
        if (folder / "tokenizer.json").is_file():
            return runtime.TextEncoder(folder, max_length=max_length)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

        def encode(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
            enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
            return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

        return encode

    # ------------------------------------------------------------------ inference
    def process(self, messages: List[Message]) -> List[Message]:
        texts = [_clean(m.get(TEXT)) for m in messages]
        todo = [i for i, t in enumerate(texts) if t]
        pending = set(todo)
        for i, message in enumerate(messages):
            if i not in pending or self.predictor is None:
                message.set(INTENT, {"name": None, "confidence": 0.0}, add_to_output=True)
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
        if self.predictor is None or not todo:
            if self.predictor is None and todo:
                logger.debug(f"{COMPONENT}: not trained; no intent predicted.")
            return messages
        probabilities = self.predict_proba([texts[i] for i in todo])
        ranking_length = self.config["ranking_length"] or len(self.labels)
        for row, i in zip(probabilities, todo):
            order = np.argsort(-row, kind="stable")[:ranking_length]
            ranking = [{"name": self.labels[j], "confidence": float(row[j])} for j in order]
            messages[i].set(INTENT, dict(ranking[0]), add_to_output=True)
            messages[i].set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages

    def predict_proba(self, texts: List[str]) -> np.ndarray:
        """Softmax over all intents (columns in the order of ``self.labels``), for non-empty texts."""
        if self.predictor is None:
            raise RasaException(f"{COMPONENT}: the model is not trained; train it with `rasa train` first.")
        max_length = self.meta["max_length"]
        # cheap guard against huge inputs: the tokenizer never needs more than this many characters
        texts = [t[: max_length * 8] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        batch_size = self.config["batch_size"]
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            chunk = [texts[i] for i in idx]
            input_ids, attention_mask = self.encoder(chunk)
            ngram_ids = self._ngram_ids(chunk) if self.meta["ngram_buckets"] else None
            logits = self.predictor(input_ids, attention_mask, ngram_ids)
            out[idx] = _softmax(np.asarray(logits, dtype=np.float64))
        return out


def _write_report(folder: Path, report: Dict[str, Any]) -> None:
    (folder / REPORT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")


def _clean(text: Any) -> str:
    return text.strip() if isinstance(text, str) else ""


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _drop_pooler(encoder: Any) -> None:
    """The intent model mean-pools the last hidden states; BERT's pooler would be dead weight."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def _archive_message(folder: Path, problem: str) -> str:
    return (
        f"{COMPONENT}: the model archive is damaged or incomplete: {problem} (in {folder}). "
        "Train the model again with `rasa train`."
    )
