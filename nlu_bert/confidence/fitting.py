"""What `rasa train` fits on the held-out (validation) examples of the intent classifier, and reports: the
temperature, the out-of-scope reference energies, the expected calibration error before and after with its
reliability bins, a check on synthetic negatives, and the fallback thresholds recommended for the bot."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.special import softmax

from nlu_bert.confidence import background, calibration, content, lexical, out_of_scope
from nlu_bert.confidence.scorer import LEXICAL_ENERGY, ConfidenceModel, Confidences

logger = logging.getLogger(__name__)

MIN_CALIBRATION_EXAMPLES = 50  # fewer held-out examples: temperature 1 (a fit on a handful is noise)
MIN_REFERENCE_EXAMPLES = 10  # fewer: no out-of-scope factor
# fewer held-out examples (a small bot) and a lexical model: the out-of-scope reference is the lexical model's
# energy cross-fitted on every training example (measured on 10-intent bots: docs/confidence.md)
MIN_HELD_OUT_REFERENCE = 50
# Rasa's FallbackClassifier defaults (rasa/core/constants.py), and the GPT-2 fallback's
FALLBACK_THRESHOLD, AMBIGUITY_THRESHOLD = 0.3, 0.1
# the GPT-2 fallback's default threshold: the highest of 0.3-0.8 at which it meets at least half of BERT's errors and
# at most 15% of its right answers on each of the five full public sets (docs/confidence.md)
GPT2_THRESHOLD = 0.45
THRESHOLD_GRID = [round(x, 2) for x in np.arange(0.1, 0.951, 0.05)]
MAX_CORRECT_CONSULTED = 0.15  # the GPT-2 fallback may re-decide at most this share of right answers
MAX_CORRECT_LOST = 0.05  # FallbackClassifier may turn at most this share of right answers into nlu_fallback
SYNTHETIC_NEGATIVES = 50  # of each kind

Logits = Callable[[List[str]], np.ndarray]


def fit(
    logits: np.ndarray,
    labels: Sequence[int],
    *,
    calibrate: bool,
    quantile: float,
    no_content_rule: bool,
    log: Callable[[str], None],
    lexical_energies: Optional[np.ndarray] = None,
    background_log_odds: Optional[np.ndarray] = None,
) -> Tuple[ConfidenceModel, Dict[str, Any]]:
    """The confidence model fitted on held-out ``logits`` / ``labels``, and its report (for training_report.json).
    ``lexical_energies``: cross-fitted energies of the lexical model on every training example (NaN: not scored),
    the out-of-scope reference instead of the held-out logits (small bots); ``background_log_odds``: their
    cross-fitted background log-odds, a second reference (:mod:`nlu_bert.confidence.background`)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = len(labels)
    model = ConfidenceModel(no_content_rule=no_content_rule)
    report: Dict[str, Any] = {"held_out_examples": n, "temperature": 1.0, "out_of_scope_quantile": quantile}
    if calibrate and n >= MIN_CALIBRATION_EXAMPLES:
        model.temperature = calibration.fit_temperature(logits, labels)
        before = softmax(logits, axis=-1)
        after = calibration.cross_fitted_probabilities(logits, labels)
        report.update(
            temperature=round(model.temperature, 4),
            nll_before=round(calibration.nll(logits, labels), 4),
            nll_after=round(calibration.nll(logits, labels, model.temperature), 4),
            ece_before=round(_ece(before, labels), 4),
            ece_after=round(_ece(after, labels), 4),
            ece_after_note="cross-fitted: each half of the held-out split at the temperature fitted on the other",
            reliability_before=calibration.reliability_bins(before.max(-1), before.argmax(-1) == labels),
            reliability_after=calibration.reliability_bins(after.max(-1), after.argmax(-1) == labels),
        )
        log(
            f"confidence calibration: temperature {model.temperature:.2f} fitted on {n} held-out examples; "
            f"expected calibration error {report['ece_before']:.3f} -> {report['ece_after']:.3f}"
        )
    elif calibrate:
        report["skipped"] = (
            f"temperature 1: {n} held-out examples, calibration needs {MIN_CALIBRATION_EXAMPLES} "
            "(more examples per intent, or a larger `validation_split`)"
        )
        log(f"confidence calibration skipped: {report['skipped']}")
    scored = None if lexical_energies is None else ~np.isnan(lexical_energies)
    if quantile > 0 and scored is not None and scored.sum() >= MIN_REFERENCE_EXAMPLES:
        share, count = quantile, int(scored.sum())
        what = f"energy of the lowest {share:.0%} of {count}"
        if background_log_odds is not None and not np.isnan(background_log_odds).all():
            scored &= ~np.isnan(background_log_odds)
            count = int(scored.sum())
            share = background.shared_quantile(lexical_energies[scored], background_log_odds[scored], quantile)
            model.background_reference = out_of_scope.reference(background_log_odds[scored], share)
            what = (
                f"energy or background log-odds of the lowest {share:.0%} of {count} ({quantile:.0%} of the "
                "examples in all)"
            )
        model.energy_reference = out_of_scope.reference(lexical_energies[scored], share)
        model.energy_source = LEXICAL_ENERGY
        report["out_of_scope_reference"] = f"TF-IDF {what} cross-fitted training examples"
        log(
            f"out-of-scope factor: confidences scaled down below the TF-IDF {what} training examples (cross-fitted: "
            f"{n} held-out examples are too few for a reference of BERT's energies, {MIN_HELD_OUT_REFERENCE} or "
            "more are)"
        )
    elif quantile > 0 and n >= MIN_REFERENCE_EXAMPLES:
        model.energy_reference = out_of_scope.reference(out_of_scope.energy(logits, model.temperature), quantile)
        log(
            f"out-of-scope factor: confidences scaled down below the energy of the lowest {quantile:.0%} of "
            f"{n} held-out in-scope examples"
        )
    elif quantile > 0:
        report["out_of_scope_skipped"] = (
            f"no out-of-scope factor: {n} held-out examples, it needs {MIN_REFERENCE_EXAMPLES}"
        )
        log(report["out_of_scope_skipped"])
    return model, report


def _ece(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return calibration.expected_calibration_error(probabilities.max(-1), probabilities.argmax(-1) == labels)


def consulted(scaled: np.ndarray, threshold: float, ambiguity_threshold: float = AMBIGUITY_THRESHOLD) -> np.ndarray:
    """Which messages a fallback with these thresholds acts on: top confidence below ``threshold`` or the top two
    closer than ``ambiguity_threshold`` (the rule of Rasa's FallbackClassifier and of the GPT-2 fallback)."""
    top2 = -np.sort(-scaled, axis=-1)[:, :2]
    second = top2[:, 1] if scaled.shape[1] > 1 else np.zeros(len(scaled))
    return (top2[:, 0] < threshold) | (top2[:, 0] - second < ambiguity_threshold)


def consulted_shares(hit: np.ndarray, right: np.ndarray) -> Dict[str, Optional[float]]:
    """The shares of the errors and of the right answers (``right``) that a fallback acts on (``hit``)."""
    return {
        "errors_consulted": round(float(hit[~right].mean()), 4) if (~right).any() else None,
        "correct_consulted": round(float(hit[right].mean()), 4) if right.any() else None,
    }


def shares(scaled: np.ndarray, labels: np.ndarray, threshold: float) -> Dict[str, Any]:
    """Of the held-out errors and right answers, the shares (and counts) a fallback at ``threshold`` acts on."""
    right = scaled.argmax(-1) == labels
    counts = {"errors": int((~right).sum()), "correct": int(right.sum())}
    return {"threshold": threshold, **counts, **consulted_shares(consulted(scaled, threshold), right)}


def recommend_thresholds(confidences: Confidences, labels: Sequence[int], log: Callable[[str], None]) -> Dict[str, Any]:
    """The highest thresholds that keep the cost on right answers bounded, on the held-out split: the GPT-2
    fallback's (re-decides at most 15% of them) and FallbackClassifier's (turns at most 5% into nlu_fallback)."""
    scaled, labels = confidences.scaled, np.asarray(labels)
    right = scaled.argmax(-1) == labels
    if not right.any():
        return {}

    def highest(limit: float) -> float:
        ok = [t for t in THRESHOLD_GRID if consulted(scaled, t)[right].mean() <= limit]
        return max(ok) if ok else THRESHOLD_GRID[0]

    result = {
        "gpt2_threshold": highest(MAX_CORRECT_CONSULTED),
        "fallback_classifier_threshold": highest(MAX_CORRECT_LOST),
        "rule": f"highest thresholds (ambiguity_threshold {AMBIGUITY_THRESHOLD}) that act on at most "
        f"{MAX_CORRECT_CONSULTED:.0%} (GPT-2 fallback) / {MAX_CORRECT_LOST:.0%} (FallbackClassifier) "
        "of the held-out right answers",
    }
    result["at_recommended"] = {
        "gpt2": shares(scaled, labels, result["gpt2_threshold"]),
        "fallback_classifier": shares(scaled, labels, result["fallback_classifier_threshold"]),
    }
    result["at_defaults"] = {
        "gpt2": shares(scaled, labels, GPT2_THRESHOLD),
        "fallback_classifier": shares(scaled, labels, FALLBACK_THRESHOLD),
    }
    at = result["at_recommended"]["gpt2"]
    log(
        f"recommended thresholds for this bot: GPT2FewShotIntentClassifier threshold {result['gpt2_threshold']}, "
        f"FallbackClassifier threshold {result['fallback_classifier_threshold']} (held out: the GPT-2 fallback "
        f"would see {_pct(at['errors_consulted'])} of {at['errors']} errors and {_pct(at['correct_consulted'])} "
        f"of {at['correct']} right answers)"
    )
    return result


def check_negatives(model: ConfidenceModel, logits_of: Logits, texts: Sequence[str], seed: int) -> Dict[str, Any]:
    """Share of synthetic negatives (shuffled characters of the bot's examples, Latin keyboard mash) whose top
    confidence ends below FallbackClassifier's default threshold."""
    result: Dict[str, Any] = {}
    for kind, negatives in out_of_scope.synthetic_negatives(texts, SYNTHETIC_NEGATIVES, seed).items():
        if negatives:
            top = model(logits_of(negatives), negatives).scaled.max(-1)
            result[kind] = {
                "count": len(negatives),
                "below_fallback_threshold": round(float((top < FALLBACK_THRESHOLD).mean()), 4),
            }
    return result


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.0%}"


def fit_held_out(
    texts: Sequence[str],
    label_ids: Sequence[int],
    num_labels: int,
    held_out: Sequence[int],
    logits_of: Logits,
    config: Mapping[str, Any],
    log: Callable[[str], None],
) -> Tuple[ConfidenceModel, Dict[str, Any]]:
    """Everything of this package for a freshly trained classifier: ``held_out`` indexes the examples of ``texts``
    it never trained on, ``logits_of`` is the served BERT (so the fit sees the logits `rasa run` computes). With
    `lexical_model`, the TF-IDF model is fitted first and everything after it sees the combined logits."""
    held_texts = [texts[i] for i in held_out]
    labels = np.asarray([label_ids[i] for i in held_out], dtype=np.int64)
    ensemble, energies, log_odds, held_energies, held_log_odds = None, None, None, None, None
    selection: Optional[background.Selection] = None
    if lexical.enabled(config):
        small = len(held_out) < MIN_HELD_OUT_REFERENCE and float(config["out_of_scope_quantile"]) > 0
        seed = int(config["random_seed"])
        if small and config["out_of_scope_background"]:
            selection = background.select(texts, label_ids, num_labels, seed, log)
        groups = selection.groups if selection is not None else []
        ensemble, logits = lexical.fit_ensemble(texts, label_ids, held_out, num_labels, logits_of, log, groups)
        if selection is not None:
            energies, log_odds = selection.energies, selection.log_odds if selection.domains else None
        elif small:
            energies = lexical.cross_fitted_energies(texts, label_ids, num_labels, seed=seed)
        if energies is not None:
            held_energies = np.nan_to_num(energies[list(held_out)])
        if log_odds is not None:
            held_log_odds = np.nan_to_num(log_odds[list(held_out)])
    else:
        logits = logits_of(held_texts) if held_texts else np.zeros((0, 1))
    model, report = fit(
        logits,
        labels,
        calibrate=bool(config["calibrate"]),
        quantile=float(config["out_of_scope_quantile"]),
        no_content_rule=bool(config["no_content_rule"]),
        log=log,
        lexical_energies=energies,
        background_log_odds=log_odds,
    )
    if selection is not None:
        report["out_of_scope_background"] = background.describe(selection)
    if config["unknown_words_rule"]:  # the bot's words of letters, for the rule at predict time
        model.known_words = frozenset(content.vocabulary(texts))
    if model.energy_source != LEXICAL_ENERGY:
        held_energies = None  # the combined logits' own
    if held_texts:  # the logits above were combined already
        confidences = model(logits, held_texts, held_energies, held_log_odds if model.background_reference else None)
        report["recommended_thresholds"] = recommend_thresholds(confidences, labels, log)
    model.ensemble = ensemble
    if model.energy_reference:
        report["synthetic_negatives"] = check_negatives(model, logits_of, texts, int(config["random_seed"]))
    return model, report


def fit_trained(trained: Any, logits_of: Logits, config: Mapping[str, Any]) -> Tuple[ConfidenceModel, Dict[str, Any]]:
    """:func:`fit_held_out` for BertIntentClassifier's ``nlu_bert.bert.training.TrainedIntentModel``: its validation
    examples are the held-out ones; the lines are logged as the component's."""
    from nlu_bert.archive import BERT

    def log(line: str) -> None:
        logger.info(f"{BERT}: {line}")

    held_out = trained.check_idx[: trained.report["validation_examples"]]
    return fit_held_out(trained.texts, trained.label_ids, len(trained.labels), held_out, logits_of, config, log)


def check_config(check: Any) -> None:
    """The component's confidence keys, with its ``nlu_bert.config.ConfigChecker``."""
    check.boolean("calibrate")
    check.number("out_of_scope_quantile", 0, 0.5)
    check.boolean("no_content_rule")
    check.boolean("unknown_words_rule")
    check.boolean("out_of_scope_background")
    check.choice("lexical_model", ["auto", True, False])
