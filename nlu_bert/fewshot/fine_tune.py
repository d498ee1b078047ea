"""Fine-tuning the few-shot model on prompts generated from the bot's own examples, the way the
few_shot_intent_sft data set makes them (2-7 intents, 1-3 examples each, ~10% with the true intent left out).

The loss is on the answer tokens only; after each epoch the held-out prompts are scored exactly as at inference
(:class:`~nlu_bert.fewshot.scoring.CandidateScorer`), and the weights of the best epoch are kept. Imported at train
time only (it imports torch when it runs).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from rasa.shared.exceptions import InvalidConfigException

from nlu_bert import backbones, splits
from nlu_bert.fewshot.prompts import ExampleBank, PromptEncoder, ScoringItem, encode_episode, sample_episode
from nlu_bert.fewshot.scoring import CandidateScorer, first_position, resolve_precision

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

MAX_VALIDATION_PROMPTS = 200
# `fine_tune_learning_rate: auto`
AUTO_LEARNING_RATE = {"scratch": 5e-4, "pretrained": 5e-5}


def fine_tune_on_bank(
    component: str,
    model: Any,
    tokenizer: Any,
    encoder: PromptEncoder,
    bank: ExampleBank,
    labels: Dict[str, str],
    config: Mapping[str, Any],
    position_anchor: Optional[int],
) -> Dict[str, Any]:
    """Fine-tune ``model`` on prompts generated from ``bank`` with the settings of the component's ``config``;
    returns the report stored in the archive."""
    seed = config["random_seed"]
    train, held_out = split_bank(bank, config["fine_tune_validation_split"], seed)
    train_bank = ExampleBank(train, seed=seed)
    pairs = [(t, i) for i in train_bank.intents for t in train_bank.examples[i]]
    rate = config["not_applicable_rate"]

    def make_epoch(epoch: int) -> List[ScoringItem]:
        rng = random.Random(f"{seed}:{epoch}")
        return [encode_episode(encoder, sample_episode(train_bank, t, i, rng, rate), labels) for t, i in pairs]

    val_rng = random.Random(f"{seed}:validation")
    val_pairs = [(t, i) for i in sorted(held_out) for t in held_out[i]] or pairs
    if not held_out:
        logger.info(f"{component}: too few examples to hold any out; validating on training prompts.")
    val_pairs = val_rng.sample(val_pairs, min(len(val_pairs), MAX_VALIDATION_PROMPTS))
    val_items = [encode_episode(encoder, sample_episode(train_bank, t, i, val_rng, rate), labels) for t, i in val_pairs]
    lr = config["fine_tune_learning_rate"]
    if lr == "auto":
        lr = AUTO_LEARNING_RATE["scratch" if backbones.is_scratch(config["model"]) else "pretrained"]
    device = next(model.parameters()).device
    precision = resolve_precision(config["fine_tune_precision"], device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise InvalidConfigException(
            f"{component}: `fine_tune_precision: bf16` runs on the CPU or a CUDA GPU, not on {device.type}. "
            "Set `fine_tune_precision: fp32` (or auto) in config.yml."
        )
    settings = FineTuneSettings(
        epochs=config["fine_tune_epochs"],
        learning_rate=float(lr),
        batch_size=config["fine_tune_batch_size"],
        patience=config["fine_tune_early_stopping_patience"],
        seed=seed,
        precision=precision,
    )
    logger.info(
        f"{component}: fine-tuning on {len(pairs)} prompts per epoch ({len(train_bank.intents)} intents), "
        f"validating on {len(val_items)}, {precision}" + (" mixed precision" if precision == "bf16" else "")
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else encoder.end_id
    report = fine_tune(
        model, make_epoch, val_items, settings, pad_id, progress=logger.info, position_anchor=position_anchor
    )
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


def split_bank(bank: ExampleBank, fraction: float, seed: int) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """(train, held out) examples per intent: :func:`nlu_bert.splits.stratified_split`."""
    pairs = [(intent, text) for intent in bank.intents for text in bank.examples[intent]]
    kept, held = splits.stratified_split([intent for intent, _ in pairs], fraction, f"{seed}:split")
    train: Dict[str, List[str]] = {}
    held_out: Dict[str, List[str]] = {}
    for indices, out in ((kept, train), (held, held_out)):
        for i in indices:
            out.setdefault(pairs[i][0], []).append(pairs[i][1])
    return train, held_out


@dataclass
class FineTuneSettings:
    epochs: int
    learning_rate: float
    batch_size: int
    patience: int
    seed: int
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    # "bf16": forward and backward under bf16 autocast (weights, gradients and AdamW stay fp32)
    precision: str = "fp32"


@dataclass
class FineTuneReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def accuracy(scorer: CandidateScorer, items: Sequence[ScoringItem], mode: str = "packed") -> float:
    """The share of items where the best-scored option is the right one."""
    if not items:
        return 0.0
    right = 0
    for item in items:
        values = scorer.score(item.prefix, item.query, item.options, mode=mode).log_likelihoods
        right += int(max(range(len(values)), key=values.__getitem__) == item.correct)
    return right / len(items)


def fine_tune(
    model: Any,
    make_epoch: Callable[[int], List[ScoringItem]],
    val_items: Sequence[ScoringItem],
    settings: FineTuneSettings,
    pad_id: int,
    progress: Optional[Callable[[str], None]] = None,
    position_anchor: Optional[int] = None,
) -> FineTuneReport:
    """Train on the answer tokens only; keep the weights of the epoch with the best validation accuracy.

    ``make_epoch(epoch)`` returns that epoch's freshly sampled prompts. Early stopping: after
    ``patience`` epochs without a better validation accuracy of the scored decision (0: off).
    ``settings.precision`` "bf16" trains under bf16 autocast (CPU or CUDA); validation scores in fp32.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    device = next(model.parameters()).device
    mixed = settings.precision == "bf16"
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    first = make_epoch(0)
    steps_per_epoch = max(1, -(-len(first) // settings.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    total = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_fraction), total)
    scorer = CandidateScorer(model, cache_size=0, position_anchor=position_anchor)
    report = FineTuneReport()
    best_state: Optional[Dict[str, "torch.Tensor"]] = None
    stale = 0
    for epoch in range(settings.epochs):
        items = first if epoch == 0 else make_epoch(epoch)
        rng.shuffle(items)
        model.train()
        losses = []
        for b in range(0, len(items), settings.batch_size):
            ids, mask, labels, positions = _batch(items[b : b + settings.batch_size], pad_id, device, position_anchor)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed):
                loss = answer_loss(model, ids, mask, labels, positions)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        model.eval()
        val_acc = accuracy(scorer, val_items)
        row = {"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)), "val_accuracy": val_acc}
        report.history.append(row)
        report.epochs_run = epoch + 1
        if progress:
            progress(f"epoch {epoch + 1}/{settings.epochs}: loss {row['loss']:.4f}, val accuracy {val_acc:.3f}")
        if best_state is None or val_acc > report.best_val_accuracy:
            report.best_val_accuracy, report.best_epoch, stale = val_acc, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if settings.patience and stale >= settings.patience:
                if progress:
                    progress(f"early stop: no better validation accuracy for {stale} epochs")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - started
    return report


def answer_loss(model: Any, ids: Any, mask: Any, labels: Any, positions: Any) -> "torch.Tensor":
    """The causal-LM loss on the answer tokens, with the output layer applied to those positions only.

    Equal to ``model(..., labels=labels).loss`` (mean cross-entropy over the tokens whose label is
    not -100, logits at ``i`` predicting token ``i + 1``), but a prompt of a few hundred tokens has
    only a few answer tokens, so the ``tokens x vocabulary`` logits at every prompt token are wasted
    work (a training step at 420 tokens, batch 8, on the CPU: 1.25x faster for GPT-2 base, 1.1-1.24x
    for a scratch model with a 1,500-4,000 character vocabulary). Models without a separate body
    and output layer take the plain path.
    """
    import torch.nn.functional as F

    body, head = getattr(model, "base_model", None), model.get_output_embeddings()
    if body is None or body is model or head is None:
        return model(input_ids=ids, attention_mask=mask, labels=labels, position_ids=positions).loss
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    return F.cross_entropy(head(hidden[keep]).float(), target[keep])


def _batch(
    items: Sequence[ScoringItem], pad_id: int, device: Any, anchor: Optional[int] = None
) -> Tuple[Any, Any, Any, Any]:
    """Right-padded ``prompt + answer``, labels on the answer tokens only (-100 elsewhere), positions."""
    import torch

    width = max(len(it.prefix) + len(it.query) + len(it.options[it.correct]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    lab = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    pos = torch.zeros((len(items), width), dtype=torch.long)
    for i, item in enumerate(items):
        prompt, answer = item.prefix + item.query, list(item.options[item.correct])
        n = len(prompt) + len(answer)
        start = first_position(len(item.prefix), anchor)
        ids[i, :n] = torch.tensor(prompt + answer)
        lab[i, len(prompt) : n] = torch.tensor(answer)
        mask[i, :n] = 1
        pos[i, :n] = torch.arange(start, start + n)
    return ids.to(device), mask.to(device), lab.to(device), pos.to(device)
