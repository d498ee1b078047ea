"""Fine-tuning the intent model: :func:`train` takes a backbone and the bot's examples to a trained
:class:`~nlu_bert.bert.model.IntentModel` (data summary, optional MLM pre-training of a scratch encoder, a stratified
validation split, the fit with early stopping on macro-F1, or with entities on the mean of intent macro-F1 and
entity F1); :func:`served_agreement` compares the served model with fp32 afterwards. The entity side of the joint
training is in :mod:`nlu_bert.bert.entity_training`.

Imported only at train time (it imports torch).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import rasa.shared.utils.io
import torch
from sklearn.metrics import f1_score
from torch import nn

from nlu_bert import backbones, splits
from nlu_bert.bert import data, entity_metrics, entity_training, ngrams
from nlu_bert.bert.entity_training import EntityTraining
from nlu_bert.bert.model import Backbone, IntentModel, entity_head

logger = logging.getLogger(__name__)

# learning rates chosen by `auto`: (backbone, head + n-gram table)
AUTO_LR = {"pretrained": (3e-5, 1e-3), "scratch": (5e-4, 5e-3)}
MLM_LEARNING_RATE = 1e-3
# after training, a served int8 / bf16 model is compared with fp32 on this many training texts
AGREEMENT_TEXTS = 1000
MIN_AGREEMENT = 0.995

Batch = Dict[str, torch.Tensor]
BatchFn = Callable[[List[int]], Batch]


@dataclass
class TrainedIntentModel:
    model: IntentModel  # on the CPU, in eval mode
    labels: List[str]
    meta: Dict[str, Any]  # what serving needs: labels, max_length, the n-gram settings
    report: Dict[str, Any]  # data summary, split sizes, epochs, timings
    texts: List[str]  # the training texts kept (duplicates dropped)
    make_batch: BatchFn  # indices into ``texts`` -> model inputs
    check_idx: List[int]  # the validation texts first, then the training texts (for served_agreement)
    label_ids: List[int]  # the intent (index into ``labels``) of each of ``texts``
    entities: Optional[EntityTraining] = None  # the entity side, where the data annotates entities


def learning_rates(config: Mapping[str, Any]) -> Tuple[float, float]:
    """(backbone, head + n-gram table), ``auto`` resolved for a scratch or a pre-trained backbone."""
    auto_lr, auto_head = AUTO_LR["scratch" if backbones.is_scratch(config["model"]) else "pretrained"]
    lr = auto_lr if config["learning_rate"] == "auto" else float(config["learning_rate"])
    head = auto_head if config["head_learning_rate"] == "auto" else float(config["head_learning_rate"])
    return lr, head


def uses_ngrams(config: Mapping[str, Any]) -> bool:
    setting = config["ngram_features"]
    return backbones.is_scratch(config["model"]) if setting == "auto" else bool(setting)


def train(
    component: str,
    backbone: Backbone,
    texts: List[str],
    intents: List[str],
    config: Mapping[str, Any],
    device: torch.device,
    annotations: Optional[Sequence[Sequence[Mapping[str, Any]]]] = None,
    warm_start: Optional[Callable[..., Dict[str, Any]]] = None,
) -> TrainedIntentModel:
    """Fine-tune on ``texts`` / ``intents`` (and the entity ``annotations`` of each text: Rasa entity dicts) with the
    settings of the component's ``config``; log as ``component``. ``warm_start(model, labels, label_ids, make_batch,
    train_idx, val_idx, entities)`` fills the new model's heads from a previous model before the fit
    (:mod:`nlu_bert.bert.warm_start`) and returns what it did for the report."""

    def log(line: str) -> None:
        logger.info(f"{component}: {line}")

    tokenizer, max_length = backbone.tokenizer, config["max_length"]
    token_lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    summary, keep = data.summarize(texts, intents, token_lengths, max_length)
    data.warn_about_data(summary, component)
    texts = [texts[i] for i in keep]
    annotations = [annotations[i] for i in keep] if annotations is not None else [[] for _ in texts]
    labels = sorted(set(intents))
    label_ids = [labels.index(intents[i]) for i in keep]
    use_ngrams = uses_ngrams(config)
    meta = {
        "labels": labels,
        "backbone": config["model"],
        "max_length": max_length,
        "ngram_buckets": config["ngram_buckets"] if use_ngrams else 0,
        "ngram_dim": config["ngram_dim"],
        "ngram_range": [1, 3],
        "max_ngrams": max_length * 3,
    }

    def encode(batch_texts: List[str]) -> Dict[str, torch.Tensor]:
        enc = tokenizer(batch_texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    if backbone.mlm_model is not None:
        pretrain_mlm(
            backbone.mlm_model,
            encode,
            texts,
            epochs=config["scratch_mlm_epochs"],
            batch_size=config["batch_size"],
            learning_rate=MLM_LEARNING_RATE,
            mask_token_id=tokenizer.mask_token_id,
            special_ids=tokenizer.all_special_ids,
            vocab_size=len(tokenizer),
            seed=config["random_seed"],
            device=device,
            log=log,
        )
    entities = entity_training.prepare(component, tokenizer, texts, annotations, config, use_ngrams)
    hidden_size = int(backbone.encoder.config.hidden_size)
    model = IntentModel(
        backbone.encoder,
        num_labels=len(labels),
        ngram_buckets=meta["ngram_buckets"],
        ngram_dim=config["ngram_dim"],
        entities=entity_head(entities.spec, hidden_size) if entities is not None else None,
    )

    def make_batch(idx: List[int]) -> Batch:
        batch = encode([texts[i] for i in idx])
        if use_ngrams:
            batch["ngram_ids"] = torch.from_numpy(ngrams.ids_for([texts[i] for i in idx], meta))
        if entities is not None and entities.spec.ngram_buckets:
            batch["token_ngram_ids"] = entities.token_ngram_ids(idx, batch["input_ids"].shape[1])
        return batch

    train_idx, val_idx = splits.stratified_split(label_ids, config["validation_split"], config["random_seed"])
    lr, head_lr = learning_rates(config)
    warm = warm_start(model, labels, label_ids, make_batch, train_idx, val_idx, entities) if warm_start else None
    log(
        f"fine-tuning on {len(train_idx)} examples, validating on {len(val_idx)}, "
        f"{len(labels)} intents, up to {config['epochs']} epochs"
    )
    result = fit(
        model,
        make_batch,
        train_idx,
        torch.tensor(label_ids),
        val_idx,
        [label_ids[i] for i in val_idx],
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        learning_rate=lr,
        head_learning_rate=head_lr,
        weight_decay=config["weight_decay"],
        warmup_ratio=config["warmup_ratio"],
        weights=class_weights([label_ids[i] for i in train_idx], len(labels), config["class_weight"]),
        label_smoothing=config["label_smoothing"],
        patience=config["early_stopping_patience"],
        seed=config["random_seed"],
        device=device,
        log=log,
        entities=entities,
        intent_weight=float(config["intent_loss_weight"]) if config["intent_classification"] else 0.0,
    )
    model.to("cpu").eval()
    report = {
        "backbone": backbones.describe_source(config["model"]),
        "data": summary.to_dict(),
        "train_examples": len(train_idx),
        "validation_examples": len(val_idx),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "best_val_macro_f1": result.best_val_macro_f1,
        "history": result.history,
        "fit_seconds": round(result.seconds, 2),
        **({"warm_start": warm} if warm is not None else {}),
    }
    if entities is not None:
        meta["entities"] = entities.trained_spec(model).to_meta()
        report["entities"] = {"labels": [label.describe() for label in entities.spec.tags.labels]}
        if val_idx:
            _, tag_scores = predict_outputs(model, make_batch, val_idx, config["batch_size"], torch.device("cpu"))
            scores = entities.scores(val_idx, entities.predicted(model, val_idx, tag_scores))
            report["entities"]["validation"] = entity_training.report(scores)
            for line in entity_metrics.report_lines(scores, limit=20):
                log(f"validation entities: {line}")
    return TrainedIntentModel(model, labels, meta, report, texts, make_batch, val_idx + train_idx, label_ids, entities)


def served_agreement(
    component: str,
    trained: TrainedIntentModel,
    served_predict: Callable[[List[str]], Tuple[np.ndarray, Optional[List[List[Dict[str, Any]]]]]],
    served_as: str,
    batch_size: int,
) -> Dict[str, Any]:
    """Top intent (and entity spans) of the served model (int8 / bf16, ``served_as`` e.g. "native int8") against the
    fp32 model it was made from, on up to ``AGREEMENT_TEXTS`` examples, the held-out validation texts first.
    ``served_predict(texts)`` gives the served probabilities and entities. Below 99.5% it warns."""
    idx = trained.check_idx[:AGREEMENT_TEXTS]
    reference, tag_scores = predict_outputs(trained.model, trained.make_batch, idx, batch_size, torch.device("cpu"))
    proba, served_entities = served_predict([trained.texts[i] for i in idx])
    differ = int((reference.argmax(-1).numpy() != proba.argmax(-1)).sum())
    result: Dict[str, Any] = {
        "texts": len(idx),
        "differ": differ,
        "agreement": round(1.0 - differ / max(len(idx), 1), 6),
    }
    logger.info(
        f"{component}: {served_as} picks the same intent as fp32 on "
        f"{result['agreement']:.2%} of {len(idx)} training texts ({differ} differ)"
    )
    precision = served_as.split()[-1]
    fix = "Set `inference: {precision: fp32}` in config.yml to serve fp32."
    if result["agreement"] < MIN_AGREEMENT:
        rasa.shared.utils.io.raise_warning(
            f"{component}: the {precision} model picks another intent than fp32 for {differ} of "
            f"{len(idx)} training texts ({result['agreement']:.2%} agree; the default aims at "
            f"{MIN_AGREEMENT:.1%}). {fix}"
        )
    if trained.entities is not None and served_entities is not None:
        fp32_entities = trained.entities.predicted(trained.model, idx, tag_scores)
        spans = entity_training.span_agreement(fp32_entities, served_entities)
        result["entities"] = spans
        logger.info(
            f"{component}: {served_as} finds the same entity spans as fp32 for {spans['agreement']:.2%} of "
            f"{spans['spans']} spans ({spans['differ']} differ)"
        )
        if spans["agreement"] < MIN_AGREEMENT:
            rasa.shared.utils.io.raise_warning(
                f"{component}: the {precision} model finds other entity spans than fp32 for {spans['differ']} of "
                f"{spans['spans']} spans ({spans['agreement']:.2%} agree; the default aims at {MIN_AGREEMENT:.1%}). "
                f"{fix}"
            )
    return result


def class_weights(labels: Sequence[int], num_labels: int, mode: str) -> Optional[torch.Tensor]:
    """``balanced``: inverse square-root frequency, normalised to mean 1 (full inverse frequency
    over-weights rare intents with 1–2 examples and hurts accuracy); ``none``: no weights."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels), minlength=num_labels).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    w = w / w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Macro-F1 over the classes present in ``y_true`` (scikit-learn's; 0 for a class never predicted right)."""
    classes = sorted(set(y_true))
    if not classes:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))


@dataclass
class FitResult:
    history: List[Dict[str, float]]
    best_epoch: int
    best_val_accuracy: Optional[float]
    best_val_macro_f1: Optional[float]
    seconds: float


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _param_groups(model: nn.Module, lr: float, weight_decay: float, fast_lr: float) -> List[Dict[str, Any]]:
    """No weight decay on biases, LayerNorms, n-gram tables and the CRF; the n-gram table and the heads learn at
    ``fast_lr``."""
    groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        fast = name.startswith(("ngrams.", "classifier.", "entities."))
        no_decay = (
            p.ndim < 2 or "LayerNorm" in name or name.startswith(("ngrams.", "entities.ngrams.", "entities.crf."))
        )
        groups[(fast, no_decay)].append(p)
    return [
        {"params": ps, "lr": fast_lr if fast else lr, "weight_decay": 0.0 if no_decay else weight_decay}
        for (fast, no_decay), ps in groups.items()
    ]


def fit(
    model: nn.Module,
    make_batch: BatchFn,
    train_idx: List[int],
    train_labels: torch.Tensor,
    val_idx: List[int],
    val_labels: List[int],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    weights: Optional[torch.Tensor],
    label_smoothing: float,
    patience: int,
    seed: int,
    device: torch.device,
    log: Callable[[str], None],
    entities: Optional[EntityTraining] = None,
    intent_weight: float = 1.0,
) -> FitResult:
    """Fine-tune; keep the weights of the epoch with the best validation macro-F1 (ties: accuracy, then loss).
    With ``entities`` the loss is ``intent_weight`` x the intent loss + the entity loss x its weight, and the score
    the mean of macro-F1 and the entity micro-F1 (the entity F1 alone with ``intent_weight`` 0).

    On a small validation split many epochs tie on macro-F1 and accuracy; the validation loss then prefers the
    epoch whose right answers are also confident, instead of the first epoch that got them right."""
    start = time.perf_counter()
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, learning_rate, weight_decay, head_learning_rate))
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total = steps_per_epoch * epochs
    scheduler = _linear_schedule(optimizer, int(total * warmup_ratio), total)
    loss_fn = nn.CrossEntropyLoss(
        weight=weights.to(device) if weights is not None else None, label_smoothing=label_smoothing
    )
    rng = random.Random(seed)
    use_autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()

    history: List[Dict[str, float]] = []
    best: Tuple[float, float, float] = (-1.0, -1.0, -math.inf)
    best_state: Optional[Dict[str, torch.Tensor]] = None
    best_epoch, bad_epochs = 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = train_idx[:]
        rng.shuffle(order)
        total_loss = 0.0
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            batch = {k: v.to(device) for k, v in make_batch(chunk).items()}
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_autocast):
                outputs = model(**batch)
            logits = outputs[0] if entities is not None else outputs
            loss = intent_weight * loss_fn(logits.float(), train_labels[chunk].to(device))
            if entities is not None:
                targets = {k: v.to(device) for k, v in entities.targets(chunk).items()}
                entity_loss = model.entities.loss(outputs[1], targets["positions"], targets["tags"], targets["mask"])
                loss = loss + entities.weight * entity_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(chunk)
        row: Dict[str, float] = {"epoch": epoch, "loss": total_loss / max(1, len(order))}
        if val_idx:
            val_logits, tag_scores = predict_outputs(model, make_batch, val_idx, batch_size, device)
            preds = val_logits.argmax(-1).tolist()
            row["val_accuracy"] = float(np.mean([p == t for p, t in zip(preds, val_labels)]))
            row["val_macro_f1"] = macro_f1(val_labels, preds)
            row["val_loss"] = float(nn.functional.cross_entropy(val_logits, torch.tensor(val_labels)))
            first = row["val_macro_f1"]
            if entities is not None:
                predicted = entities.predicted(model, val_idx, tag_scores)
                row["val_entity_f1"] = entities.scores(val_idx, predicted)["f1"]
                first = row["val_entity_f1"] if intent_weight == 0 else (first + row["val_entity_f1"]) / 2
            score = (round(first, 6), round(row["val_accuracy"], 6), -row["val_loss"])
            if score > best:
                best, best_epoch, bad_epochs = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            log(
                f"epoch {epoch}/{epochs}  loss {row['loss']:.4f}  val accuracy {row['val_accuracy']:.3f}  "
                f"val macro-F1 {row['val_macro_f1']:.3f}"
                + (f"  val entity F1 {row['val_entity_f1']:.3f}" if "val_entity_f1" in row else "")
                + ("  *" if best_epoch == epoch else "")
            )
        else:
            best_epoch = epoch
            log(f"epoch {epoch}/{epochs}  loss {row['loss']:.4f}  (no validation split)")
        history.append(row)
        if val_idx and patience > 0 and bad_epochs >= patience:
            what = "macro-F1" if entities is None else "score (intent macro-F1 and entity F1)"
            log(f"early stopping: no better validation {what} for {patience} epochs; best epoch {best_epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best[1] if val_idx else None,  # (macro-F1, accuracy, -loss)
        best_val_macro_f1=best[0] if val_idx else None,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def predict(
    model: nn.Module, make_batch: BatchFn, idx: List[int], batch_size: int, device: torch.device
) -> torch.Tensor:
    """The intent logits of examples ``idx``."""
    return predict_outputs(model, make_batch, idx, batch_size, device)[0]


@torch.no_grad()
def predict_outputs(
    model: nn.Module, make_batch: BatchFn, idx: List[int], batch_size: int, device: torch.device
) -> Tuple[torch.Tensor, List[np.ndarray]]:
    """The intent logits of examples ``idx`` and, for a model with an entity head, each one's tag scores
    ``[tokens, tags]`` (empty list without one)."""
    model.eval()
    logits, tag_scores = [], []
    for b in range(0, len(idx), batch_size):
        batch = {k: v.to(device) for k, v in make_batch(idx[b : b + batch_size]).items()}
        outputs = model(**batch)
        if isinstance(outputs, tuple):
            outputs, scores = outputs
            tag_scores.extend(scores.float().cpu().numpy())
        logits.append(outputs.float().cpu())
    return (torch.cat(logits) if logits else torch.empty(0)), tag_scores


def pretrain_mlm(
    mlm_model: nn.Module,
    encode: Callable[[List[str]], Dict[str, torch.Tensor]],
    texts: List[str],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mask_token_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    seed: int,
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Masked-language-model pre-training of a scratch encoder on the bot's own texts (BERT's 80/10/10 masking)."""
    if epochs <= 0 or not texts:
        return
    mlm_model.to(device).train()
    optimizer = torch.optim.AdamW(mlm_model.parameters(), lr=learning_rate, weight_decay=0.01)
    total = math.ceil(len(texts) / batch_size) * epochs
    scheduler = _linear_schedule(optimizer, int(0.06 * total), total)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    special = torch.tensor(sorted(set(special_ids)))
    for epoch in range(1, epochs + 1):
        order = texts[:]
        rng.shuffle(order)
        total_loss, n = 0.0, 0
        for b in range(0, len(order), batch_size):
            enc = encode(order[b : b + batch_size])
            input_ids = enc["input_ids"].clone()
            labels = input_ids.clone()
            candidates = (enc["attention_mask"] == 1) & ~torch.isin(input_ids, special)
            chosen = (torch.rand(input_ids.shape, generator=gen) < 0.15) & candidates
            labels[~chosen] = -100
            if not chosen.any():
                continue
            roll = torch.rand(input_ids.shape, generator=gen)
            input_ids[chosen & (roll < 0.8)] = mask_token_id
            rand_pos = chosen & (roll >= 0.8) & (roll < 0.9)
            input_ids[rand_pos] = torch.randint(len(special_ids), vocab_size, input_ids.shape, generator=gen)[rand_pos]
            out = mlm_model(
                input_ids=input_ids.to(device),
                attention_mask=enc["attention_mask"].to(device),
                labels=labels.to(device),
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(mlm_model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += out.loss.item()
            n += 1
        log(f"MLM pre-training epoch {epoch}/{epochs}  loss {total_loss / max(1, n):.4f}")
    mlm_model.eval()
