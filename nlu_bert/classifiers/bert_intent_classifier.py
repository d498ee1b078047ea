"""BertIntentClassifier: a Hugging Face BERT fine-tuned on the bot's NLU data inside ``rasa train``: its intents
and, where the data annotates them, its entities (one encoder, an intent head and a token-tagging head).

Base usage (config.yml)::

    pipeline:
      - name: JiebaTokenizer
      - name: nlu_bert.BertIntentClassifier
        model: hfl/chinese-bert-wwm-ext   # or a local folder, or `scratch`

The Rasa adapter only: defaults, validation, train, persist, load, process. The model, its training, export and
serving are in :mod:`nlu_bert.bert`; what goes into the archive in :mod:`nlu_bert.archive`. torch and transformers
are imported inside methods only, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert import archive, backbones, extras, onnx_tools
from nlu_bert.archive import ModelArchiveError  # noqa: F401 - the error this component raises for a bad archive
from nlu_bert.bert import predictors
from nlu_bert.classifiers import bert_config, bert_messages
from nlu_bert.confidence import fitting
from nlu_bert.confidence.scorer import ConfidenceModel
from nlu_bert.config import DefaultsBlock, merge_blocks, rename_old_keys
from nlu_bert.hardware import return_freed_memory
from nlu_bert.version import __version__

logger = logging.getLogger(__name__)

COMPONENT = archive.BERT
OLD_NAMES = {"seed": "random_seed"}  # nlu-bert 0.2.0 -> 0.3.0


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR],
    is_trainable=True,
)
class BertIntentClassifier(GraphComponent, IntentClassifier, EntityExtractorMixin):
    """Fine-tunes a BERT (hub id, local folder or `scratch`) to classify intents and extract entities."""

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
            "random_seed": 42,
            # Where to train and predict: auto (cuda, then mps, then cpu), cpu, cuda, mps.
            "device": "auto",
            # Intents in `intent_ranking` (0 = all).
            "ranking_length": 10,
            # dtype of the torch weights in the model archive: float16 (half the size) or float32.
            # Only the `torch` inference backend stores them; `onnxruntime` stores its ONNX graph instead,
            # `native` its int8 weights with the other tensors in this dtype.
            "save_dtype": "float16",
            # Warm starts (docs/bert-intent-classifier.md, "Warm starts"): keep the trainable weights in the archive
            # in `save_dtype` (+2 bytes a parameter in float16) so that `rasa train --finetune` and `warm_start_model`
            # can continue from this model; a previous model archive (.tar.gz, an unpacked model, or a folder of
            # models: the newest) to start from instead of the backbone, new intents and entities added (null = off);
            # the share of `epochs` it trains (Rasa's `rasa train --finetune --epoch-fraction` sets it there).
            "finetunable": True,
            "warm_start_model": None,
            "finetuning_epoch_fraction": 0.25,
            # Confidences (docs/confidence.md): a temperature fitted on the validation split (>= 50 examples);
            # confidences fall to 0 below the energy of this lowest share of held-out examples (0 = off; under 50
            # held out, of the TF-IDF model's cross-fitted energies, with background classes of everyday messages of
            # other domains); messages without a CJK character, letter or digit get 0, and so do messages without a
            # CJK character or digit whose words of letters the training examples lack (keyboard mash); a TF-IDF
            # model stacked with BERT (auto: on for `scratch` only).
            "calibrate": True,
            "out_of_scope_quantile": 0.3,
            "no_content_rule": True,
            "unknown_words_rule": True,
            "lexical_model": "auto",
            "out_of_scope_background": True,
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
            # DIET's names. Predict intents (false: entities only, the intent is left to other components).
            "intent_classification": True,
            # Learn and predict entities where the training data annotates them; a bot without annotations gets
            # the intent model alone, as if this were false.
            "entity_recognition": True,
            # Tag entities as BILOU (true) or BIO (false) over the model's tokens (characters for Chinese).
            "BILOU_flag": True,
            # The entity tagger: `crf` (a CRF layer, learned transitions) or `softmax` (independent tags); both
            # decode only valid tag sequences (Viterbi over the allowed transitions).
            "entity_tagger": "crf",
            # Weights of the two losses in joint training: intent cross-entropy and the entity head's loss.
            "intent_loss_weight": 1.0,
            "entity_loss_weight": 1.0,
            # How `rasa run` / `rasa shell` predict (docs/inference.md has the measurements):
            #   backend: auto (native for int8 BERT encoders, else onnxruntime; bf16: torch), native
            #   (nlu-bert's own int8 kernel, BERT encoders only: its C kernel on CPUs with AMX or AVX-512
            #   VNNI, onnxruntime on the same int8 weights elsewhere), onnxruntime (the model is exported to ONNX
            #   at train time), or torch;
            #   precision: int8 (dynamic quantization), fp32, or bf16 (torch only); native is int8 only;
            #   threads: CPU threads for one message (0 = OMP_NUM_THREADS if set, else every core this process may use);
            #   spinning: onnxruntime's idle threads busy-wait for the next op: 13-19% faster on cores of
            #   its own, about 2x slower where other busy processes share the cores (docs/inference.md).
            # The default is the fastest option whose top intent agreed with fp32 on >= 99.5% of test texts.
            "inference": DefaultsBlock(
                backend=predictors.DEFAULT_BACKEND,
                precision=predictors.DEFAULT_PRECISION,
                threads=predictors.DEFAULT_NUM_THREADS,
                spinning=onnx_tools.ALLOW_SPINNING,
            ),
        }

    @staticmethod
    def required_packages() -> List[Text]:
        return ["safetensors", "onnxruntime", "tokenizers", "sklearn"]  # serving; training: extras.TRAIN_PACKAGES

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        """The `inference` block as it will be used, defaults filled in: Rasa fingerprints only the keys
        config.yml gives, so a model is retrained when a default of this block changes."""
        return json.dumps(cls._merged(config, warn=False)["inference"], sort_keys=True, default=str)

    @classmethod
    def _merged(cls, config: Mapping[str, Any], warn: bool = True) -> Dict[str, Any]:
        defaults = cls.get_default_config()
        return merge_blocks(defaults, rename_old_keys(COMPONENT, config, defaults, OLD_NAMES, warn=warn))

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> None:
        self.config = self._merged(config)
        self.validate_config(self.config)
        self._model_storage = model_storage
        self._resource = resource
        self._execution_context = execution_context
        self.labels: List[str] = []
        self.model: Any = None  # the trained torch nlu_bert.bert.model.IntentModel (after train only)
        self.tokenizer: Any = None  # the transformers tokenizer (after train only)
        self.served: Any = None  # nlu_bert.bert.serving.ServedModel: what predicts, once trained or loaded
        self.meta: Dict[str, Any] = {}
        self._resolved_backend: Optional[str] = None  # what `inference.backend` auto became for this model
        self.confidence = ConfidenceModel()  # temperature, out-of-scope factor, lexical model (nlu_bert.confidence)
        self._finetune_from: Optional[Path] = None  # the previous model's folder, for `rasa train --finetune`

    @property
    def predictor(self) -> Optional[predictors.Predictor]:
        return self.served.predictor if self.served is not None else None

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        bert_config.validate(config, cls.get_default_config())

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "BertIntentClassifier":
        return cls(config, model_storage, resource, execution_context)

    # ------------------------------------------------------------------ training
    def train(self, training_data: TrainingData) -> Resource:
        classify = self.config["intent_classification"]
        pool = training_data.intent_examples if classify else training_data.nlu_examples
        examples = [m for m in pool if isinstance(m.get(TEXT), str) and m.get(TEXT).strip()]
        examples = [m for m in examples if m.get(INTENT) or not classify]
        texts = [bert_messages.strip(m.get(TEXT)) for m in examples]
        intents = [m.get(INTENT) or "" for m in examples]
        # Rasa's entity dicts, without those another extractor annotated; offsets follow the stripped text
        annotations = [
            bert_messages.shifted(m, self.filter_trainable_entities([m])[0].get(ENTITIES) or []) for m in examples
        ]
        if not texts or (not classify and not any(annotations)):
            what = "intent examples" if classify else "examples with entity annotations"
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: the training data has no {what}, so the component was not trained "
                "and will predict nothing. Add examples under `nlu:` in your data files."
            )
            return self._resource
        if classify and len(set(intents)) < 2:
            raise RasaException(
                f"{COMPONENT}: the training data has only one intent ('{intents[0]}'); an intent classifier "
                "needs at least two. Add examples of other intents, or remove the classifier from the pipeline."
            )
        extras.require_train(COMPONENT)
        import torch

        from nlu_bert.bert import model, training, warm_start

        started = time.perf_counter()
        backbones.seed_everything(self.config["random_seed"])
        if self.config["num_threads"]:
            torch.set_num_threads(self.config["num_threads"])
        device = backbones.resolve_device(self.config["device"])
        logger.info(f"{COMPONENT}: backbone {backbones.describe_source(self.config['model'])}, device {device}")
        if self._execution_context.is_finetuning and self._finetune_from is None:
            logger.info(f"{COMPONENT}: `rasa train --finetune`: the previous model has no BERT; training from `model`")
        start = warm_start.begin(self.config, self._finetune_from, self._resource.name, texts)
        backbone = start.backbone if start else model.build_backbone(COMPONENT, self.config, texts)
        self._resolve_backend(backbone.encoder.config.to_dict())
        config, hook = (start.config, start.transfer) if start else (self.config, None)
        trained = training.train(COMPONENT, backbone, texts, intents, config, device, annotations, hook)
        self.model, self.tokenizer, self.labels, self.meta = (
            trained.model,
            backbone.tokenizer,
            trained.labels,
            trained.meta,
        )
        report = {
            "nlu_bert_version": __version__,
            **trained.report,
            "total_seconds": round(time.perf_counter() - started, 2),
            "config": dict(self.config),
        }
        self.persist(report)
        # predict exactly as `rasa run` will: from what the archive holds, with the configured backend
        with self._model_storage.read_from(self._resource) as folder:
            self._load_from(Path(folder))
        if self._precision != "fp32":
            served_as = f"{self._backend} {self._precision}"
            batch_size = self.config["batch_size"]
            report["served_agreement"] = training.served_agreement(
                COMPONENT, trained, self.served.predict, served_as, batch_size
            )
        if self.config["intent_classification"]:  # an entities-only model ranks no intents
            self.confidence, report["confidence"] = fitting.fit_trained(trained, self.served.logits, self.config)
        with self._model_storage.write_to(self._resource) as folder:
            self.meta = self.confidence.write(Path(folder), self.meta, report)
        return self._resource

    # ------------------------------------------------------------------ persistence
    @property
    def _backend(self) -> str:
        """The configured backend, or what `auto` became for this model (set by train and load)."""
        return self._resolved_backend or self.config["inference"]["backend"]

    @property
    def _precision(self) -> str:
        return self.config["inference"]["precision"]

    def _resolve_backend(self, encoder_config: Dict[str, Any]) -> None:
        """Settle `inference.backend` for this encoder; `native` is refused before training, not after it."""
        self._resolved_backend = bert_config.resolve_backend(self.config, encoder_config)

    def persist(self, report: Optional[Dict[str, Any]] = None) -> None:
        """Write the trained model into the archive, as the configured `inference` backend loads it
        (:func:`nlu_bert.bert.export.write_model`), with the training report."""
        from safetensors import SafetensorError

        from nlu_bert.bert.export import ExportError, write_model

        if self._backend == predictors.AUTO:  # a model given to a component that did not train it
            self._resolve_backend(self.model.encoder.config.to_dict())
        backend, precision, save_dtype = self._backend, self._precision, self.config["save_dtype"]
        meta = {**self.meta, **self.confidence.to_meta()}
        try:
            with self._model_storage.write_to(self._resource) as folder:
                finetunable = self.config["finetunable"]
                write_model(Path(folder), self.model, self.tokenizer, backend, precision, save_dtype, meta, finetunable)
                self.confidence.save_files(Path(folder))
                if report is not None:
                    archive.write_report(Path(folder), report)
        except (OSError, SafetensorError) as e:
            raise RasaException(
                f"{COMPONENT}: could not write the trained model into the Rasa model archive "
                f"({type(e).__name__}: {getattr(e, 'strerror', None) or e}). Free disk space (or point "
                "`rasa train --out` at a disk with room) and train again."
            ) from None
        except ExportError as e:
            other = "onnxruntime" if backend == "native" else "torch"
            raise RasaException(
                f"{COMPONENT}: exporting the trained model for `inference.backend` '{backend}' failed ({e}). "
                f"Set `inference: {{backend: {other}}}` in config.yml to serve the model with {other} instead."
            ) from None

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
        with contextlib.ExitStack() as stack:
            try:
                folder = stack.enter_context(model_storage.read_from(resource))
            except ValueError:  # Rasa's answer for a resource never written: not trained (no intent examples)
                logger.debug(f"{COMPONENT}: no trained model in the archive for resource '{resource.name}'.")
                return component
            component._load_from(Path(folder))
            if execution_context.is_finetuning:  # Rasa calls train() next: it continues from this model
                component._finetune_from = Path(folder)
        return_freed_memory()
        return component

    def _load_from(self, folder: Path) -> None:
        """Set up the served model from the archive. The onnxruntime and native backends import neither torch nor
        transformers."""
        from nlu_bert.bert import serving

        meta = archive.read_meta(folder, COMPONENT)
        backend, precision = self._serving_backend(meta)
        archive.require_bert_files(folder, meta, backend, precision)

        def device() -> Any:
            return backbones.resolve_device(self.config["device"])

        inference, batch_size = self.config["inference"], self.config["batch_size"]
        self.served = serving.load(folder, meta, backend, precision, inference, device, batch_size, self.name)
        self.labels, self.meta = self.served.labels, meta
        rules = self.config["no_content_rule"], folder, self.config["unknown_words_rule"]
        self.confidence = ConfidenceModel.from_meta(meta, *rules)

    def _serving_backend(self, meta: Dict[str, Any]) -> Tuple[str, str]:
        """The configured backend (`auto`: the archive's own); torch for archives older than the `inference` block."""
        made = meta.get("inference")
        if isinstance(made, dict) and self.config["inference"]["backend"] == predictors.AUTO:
            self._resolved_backend = str(made.get("backend"))
        return bert_config.serving_backend(meta, self._backend, self._precision), self._precision

    # ------------------------------------------------------------------ inference
    def process(self, messages: List[Message]) -> List[Message]:
        """Sets ``intent`` and ``intent_ranking`` (unless `intent_classification` is false) and appends this
        component's entities to ``entities`` (those of other extractors are kept)."""
        raw = [m.get(TEXT) if isinstance(m.get(TEXT), str) else "" for m in messages]
        texts = [bert_messages.strip(t) for t in raw]
        todo = [i for i, t in enumerate(texts) if t]
        pending = set(todo)
        classify = self.config["intent_classification"]
        for i, message in enumerate(messages):
            if classify and (i not in pending or self.served is None):
                message.set(INTENT, {"name": None, "confidence": 0.0}, add_to_output=True)
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
        if self.served is None or not todo:
            if self.served is None and todo:
                logger.debug(f"{COMPONENT}: not trained; nothing predicted.")
            return messages
        batch = [texts[i] for i in todo]
        logits, entities = self.served.predict(batch)
        rankings = (
            self.confidence(logits, batch).rankings(self.labels, self.config["ranking_length"]) if classify else []
        )
        for n, i in enumerate(todo):
            if classify:
                messages[i].set(INTENT, dict(rankings[n][0]), add_to_output=True)
                messages[i].set(INTENT_RANKING_KEY, rankings[n], add_to_output=True)
            if entities is not None:
                bert_messages.set_entities(messages[i], raw[i], entities[n], self.served.encoder)
        return messages

    def predict_proba(self, texts: List[str]) -> np.ndarray:
        """The served confidences of all intents (columns in the order of ``self.labels``), for non-empty texts."""
        if self.served is None:
            raise RasaException(f"{COMPONENT}: the model is not trained; train it with `rasa train` first.")
        return self.confidence(self.served.logits(texts), texts).scaled
