"""When the fallback acts, which candidates its prompt shows, and what it answers.

Small named functions of the previous classifier's ranking and the candidates' scores, as Rasa's
``FallbackClassifier`` keeps its own logic; the component calls them in this order:

1. :func:`consult`: act when the top confidence is below ``threshold`` or the top-two margin below
   ``ambiguity_threshold`` (a confidence exactly at a threshold does not count as below);
2. :func:`prompt_for`: the candidates and the few-shot prefix of their examples;
3. :func:`scored_candidates`: the softmax over the candidates' log-likelihoods and the not-applicable answer;
4. :func:`ranking_from`: the new ``intent_ranking`` when the answer is confident enough to replace the old one.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY
from scipy.special import softmax

from nlu_bert.confidence.content import has_content, readable
from nlu_bert.fewshot.prompts import ExampleBank, PromptEncoder

Ranking = List[Dict[str, Any]]


def ranking_of(intent: Optional[Mapping[str, Any]], ranking: Optional[Ranking]) -> Ranking:
    """The previous classifier's ranking (or its one intent, for a classifier that sets no ranking)."""
    intent = intent or {}
    return list(ranking or ([intent] if intent.get(INTENT_NAME_KEY) else []))


def unreadable(text: str, bank: ExampleBank, unknown_words_rule: bool) -> Optional[str]:
    """Why no intent of the bot can fit ``text`` (docs/confidence.md), or None: ``empty_text``, ``no_content`` (emoji
    or punctuation only), ``unknown_words`` (no CJK character or digit, and no word of letters of the bank's
    examples)."""
    if not text:
        return "empty_text"
    if not has_content(text):
        return "no_content"
    if unknown_words_rule and not readable(text, bank.known_words):
        return "unknown_words"
    return None


def consult(ranking: Ranking, threshold: float, ambiguity_threshold: float) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(reason, facts)``: reason ``low_confidence``, ``small_margin`` or None (confident: do nothing); the facts
    (``previous`` answer and ``margin``) go into the ``few_shot`` report either way."""
    top = float(ranking[0].get(PREDICTED_CONFIDENCE_KEY) or 0.0)
    second = float(ranking[1].get(PREDICTED_CONFIDENCE_KEY) or 0.0) if len(ranking) > 1 else 0.0
    facts = {"previous": {"name": ranking[0].get(INTENT_NAME_KEY), "confidence": top}, "margin": top - second}
    if top < threshold:
        return "low_confidence", facts
    if top - second < ambiguity_threshold:
        return "small_margin", facts
    return None, facts


def prompt_for(
    ranking: Ranking,
    text: str,
    bank: ExampleBank,
    encoder: PromptEncoder,
    labels: Mapping[str, str],
    config: Mapping[str, Any],
) -> Tuple[List[str], List[int]]:
    """The candidate intents (in prompt order) and the few-shot prefix's token ids.

    Candidates: the previous classifier's top ``max_candidates`` intents known to the bank, then up to
    ``similarity_candidates`` intents with the most similar examples (topped up to two candidates when the ranking
    is short). They appear in the prompt in a fixed order (sorted by intent name), so the same candidate set always
    gives the same prefix and hits the key/value cache whatever order the ranking had. When the prefix is too long,
    the candidates lowest in that priority are dropped first.
    """
    known = set(bank.intents)
    priority: List[str] = []
    for entry in ranking:
        name = entry.get(INTENT_NAME_KEY)
        if name in known and name not in priority and len(priority) < config["max_candidates"]:
            priority.append(name)
    added = 0
    for name in bank.similar_intents(text, len(priority) + config["similarity_candidates"]):
        if added >= config["similarity_candidates"]:
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
    selection = config["example_selection"]
    groups = [(labels[c], bank.select(c, config["n_shot"], selection, text)) for c in ordered]
    prefix, shots = encoder.fit_prefix(groups, priority=[labels[c] for c in priority])
    shown = {label for _, label in shots}
    return [c for c in ordered if labels[c] in shown], prefix


def scored_candidates(
    candidates: Sequence[str], labels: Sequence[str], not_applicable: str, log_likelihoods: Sequence[float]
) -> Ranking:
    """Every candidate and the not-applicable answer (as ``nlu_fallback``) with its label, log-likelihood and
    confidence (the softmax over all of them), best first."""
    names = list(candidates) + [DEFAULT_NLU_FALLBACK_INTENT_NAME]
    shown = list(labels) + [not_applicable]
    confidences = softmax(np.asarray(log_likelihoods, dtype=np.float64))
    return sorted(
        (
            {"name": n, "label": lbl, "log_likelihood": float(ll), "confidence": float(p)}
            for n, lbl, ll, p in zip(names, shown, log_likelihoods, confidences)
        ),
        key=lambda r: -r["confidence"],
    )


def ranking_from(scored: Ranking) -> Ranking:
    """The new ``intent_ranking``: like Rasa's FallbackClassifier, ``nlu_fallback`` is in it only when it is the
    answer."""
    ranking = [{INTENT_NAME_KEY: r["name"], PREDICTED_CONFIDENCE_KEY: r["confidence"]} for r in scored]
    if ranking[0][INTENT_NAME_KEY] != DEFAULT_NLU_FALLBACK_INTENT_NAME:
        ranking = [r for r in ranking if r[INTENT_NAME_KEY] != DEFAULT_NLU_FALLBACK_INTENT_NAME]
    return ranking
