"""Data checks, stratified splits and the fine-tuning loop of the intent model.

Imported only at train time (it imports torch).
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class DataSummary:
    intents: int
    examples: int
    examples_per_intent: Dict[str, int]
    duplicates: int
    conflicting_texts: Dict[str, List[str]]
    truncated: int
    max_length: int
    longest_tokens: int
    singleton_intents: List[str] = field(default_factory=list)

    def lines(self) -> List[str]:
        counts = sorted(self.examples_per_intent.values())
        out = [
            f"{self.intents} intents, {self.examples} examples "
            f"(per intent: min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]})",
            f"{self.duplicates} duplicate examples (same text, same intent) were dropped",
            f"{len(self.conflicting_texts)} texts appear under more than one intent",
            f"{self.truncated} texts are longer than max_length={self.max_length} tokens and will be truncated "
            f"(longest: {self.longest_tokens} tokens)",
        ]
        return out

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def summarize(
    texts: Sequence[str], labels: Sequence[str], token_lengths: Sequence[int], max_length: int
) -> Tuple[DataSummary, List[int]]:
    """Summary of the data and the indices to keep (exact duplicates dropped, first one kept)."""
    seen: Dict[Tuple[str, str], int] = {}
    by_text: Dict[str, set] = defaultdict(set)
    keep: List[int] = []
    for i, (t, y) in enumerate(zip(texts, labels)):
        key = (t.strip(), y)
        by_text[t.strip()].add(y)
        if key in seen:
            continue
        seen[key] = i
        keep.append(i)
    counts = Counter(labels[i] for i in keep)
    conflicts = {t: sorted(ys) for t, ys in by_text.items() if len(ys) > 1}
    summary = DataSummary(
        intents=len(counts),
        examples=len(keep),
        examples_per_intent=dict(sorted(counts.items())),
        duplicates=len(texts) - len(keep),
        conflicting_texts=conflicts,
        truncated=sum(1 for n in token_lengths if n > max_length),
        max_length=max_length,
        longest_tokens=max(token_lengths) if token_lengths else 0,
        singleton_intents=sorted(y for y, n in counts.items() if n == 1),
    )
    return summary, keep


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Indices (train, validation): ``fraction`` of each class, rounded, none from classes of < 3 examples."""
    rng = random.Random(seed)
    by_label: Dict[int, List[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    train, val = [], []
    for y in sorted(by_label):
        idx = by_label[y][:]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fraction)) if len(idx) >= 3 else 0
        if fraction > 0 and len(idx) >= 3:
            n_val = max(1, min(n_val, len(idx) - 2))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return sorted(train), sorted(val)


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
    classes = sorted(set(y_true))
    if not classes:
        return 0.0
    f1s = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


Batch = Dict[str, torch.Tensor]
BatchFn = Callable[[List[int]], Batch]


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
    """No weight decay on biases and LayerNorms; the n-gram table and the head learn at ``fast_lr``."""
    groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        fast = name.startswith(("ngrams.", "classifier."))
        no_decay = p.ndim < 2 or "LayerNorm" in name or name.startswith("ngrams.")
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
) -> FitResult:
    """Fine-tune; keep the weights of the epoch with the best validation macro-F1 (ties: accuracy, then loss).

    On a small validation split many epochs tie on macro-F1 and accuracy; the validation loss then prefers the
    epoch whose right answers are also confident, instead of the first epoch that got them right."""
    start = time.perf_counter()
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, learning_rate, weight_decay, head_learning_rate))
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total = steps_per_epoch * epochs
    scheduler = _linear_schedule(optimizer, int(total * warmup_ratio), total)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None, label_smoothing=label_smoothing)
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
                logits = model(**batch)
            loss = loss_fn(logits.float(), train_labels[chunk].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(chunk)
        row: Dict[str, float] = {"epoch": epoch, "loss": total_loss / max(1, len(order))}
        if val_idx:
            val_logits = predict(model, make_batch, val_idx, batch_size, device)
            preds = val_logits.argmax(-1).tolist()
            row["val_accuracy"] = float(np.mean([p == t for p, t in zip(preds, val_labels)]))
            row["val_macro_f1"] = macro_f1(val_labels, preds)
            row["val_loss"] = float(nn.functional.cross_entropy(val_logits, torch.tensor(val_labels)))
            score = (round(row["val_macro_f1"], 6), round(row["val_accuracy"], 6), -row["val_loss"])
            if score > best:
                best, best_epoch, bad_epochs = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            log(
                f"epoch {epoch}/{epochs}  loss {row['loss']:.4f}  val accuracy {row['val_accuracy']:.3f}  "
                f"val macro-F1 {row['val_macro_f1']:.3f}" + ("  *" if best_epoch == epoch else "")
            )
        else:
            best_epoch = epoch
            log(f"epoch {epoch}/{epochs}  loss {row['loss']:.4f}  (no validation split)")
        history.append(row)
        if val_idx and patience > 0 and bad_epochs >= patience:
            log(f"early stopping: no better validation macro-F1 for {patience} epochs; best epoch {best_epoch}")
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
def predict(model: nn.Module, make_batch: BatchFn, idx: List[int], batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    out = []
    for b in range(0, len(idx), batch_size):
        batch = {k: v.to(device) for k, v in make_batch(idx[b : b + batch_size]).items()}
        out.append(model(**batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


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
                input_ids=input_ids.to(device), attention_mask=enc["attention_mask"].to(device), labels=labels.to(device)
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
