"""nlu_bert.confidence on synthetic logits: temperature, ECE and reliability bins, the out-of-scope factor, the
no-content rule, what `rasa train` fits and the thresholds it recommends."""

from __future__ import annotations

from typing import Any, List

import numpy as np
import pytest
from scipy.special import softmax

from nlu_bert.confidence import calibration, content, fitting, out_of_scope
from nlu_bert.confidence.scorer import ConfidenceModel


def sampled(n: int, classes: int, temperature: float, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / temperature): calibrated at exactly that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, classes))
    p = softmax(logits / temperature, axis=-1)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


def test_fitted_temperature_recovers_the_one_the_labels_were_drawn_at() -> None:
    logits, labels = sampled(4000, 6, temperature=2.0)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_temperature_stays_in_bounds_when_every_held_out_answer_is_right() -> None:
    logits = np.array([[3.0, 0.0], [0.0, 3.0]] * 20)
    labels = np.array([0, 1] * 20)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(calibration.MIN_TEMPERATURE, rel=1e-3)


def test_overconfident_logits_have_a_large_ece_that_the_temperature_removes() -> None:
    logits, labels = sampled(4000, 6, temperature=3.0, seed=1)
    before = softmax(logits, axis=-1)
    after = calibration.cross_fitted_probabilities(logits, labels)
    ece_before = calibration.expected_calibration_error(before.max(-1), before.argmax(-1) == labels)
    ece_after = calibration.expected_calibration_error(after.max(-1), after.argmax(-1) == labels)
    assert ece_before > 0.15 and ece_after < 0.04


def test_reliability_bins_cover_every_answer_once_and_hold_their_confidences() -> None:
    confidence = np.array([0.0, 0.05, 0.1, 0.55, 0.99, 1.0])
    correct = np.array([False, True, False, True, True, True])
    bins = calibration.reliability_bins(confidence, correct, bins=10)
    assert sum(b["count"] for b in bins) == len(confidence)
    for b in bins:
        if b["count"]:
            assert b["low"] <= b["confidence"] <= b["high"]
    assert bins[-1]["count"] == 2 and bins[-1]["accuracy"] == 1.0


def test_in_scope_factor_is_one_above_the_reference_zero_below_and_monotone() -> None:
    held_out = np.linspace(5.0, 15.0, 101)
    ref = out_of_scope.reference(held_out, quantile=0.2)
    assert ref[0] == pytest.approx(5.0) and ref[-1] == pytest.approx(7.0)
    energies = np.array([0.0, 5.0, 6.0, 7.0, 12.0])
    factor = out_of_scope.in_scope_factor(energies, ref)
    assert factor.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    grid = out_of_scope.in_scope_factor(np.linspace(0, 20, 200), ref)
    assert np.all(np.diff(grid) >= 0)


@pytest.mark.parametrize(
    "text, expected",
    [("😀😀😀", False), ("？？？", False), ("!!! ...", False), ("(>_<)", False), ("", False), ("🙏 ", False),
     ("好", True), ("asdfghjkl", True), ("123", True), ("ok👍", True), ("退款？", True), ("Ｑ", True)],
)  # fmt: skip
def test_content_is_a_cjk_character_a_letter_or_a_digit(text: str, expected: bool) -> None:
    assert content.has_content(text) is expected


@pytest.mark.parametrize(
    "text, known, expected",
    [("asdfghjkl", {"hello"}, False), ("Hello!", {"hello"}, True), ("ＨＥＬＬＯ", {"hello"}, True),
     ("привет", {"hello"}, False), ("123", set(), True), ("iPhone15", set(), True), ("你好asdf", set(), True),
     ("asdf", None, True), ("qwer hello", {"hello"}, True), ("😀", None, False), ("😀", {"hello"}, False)],
)  # fmt: skip
def test_readable_means_a_cjk_character_a_digit_or_a_known_word(text: str, known: Any, expected: bool) -> None:
    assert content.readable(text, known) is expected


def test_words_are_runs_of_letters_other_than_cjk_normalised() -> None:
    assert content.words("iPhone15 很好 ＯＫ, ok") == {"iphone", "ok"}
    assert content.vocabulary(["买 iPhone", "hi 你好", "好的"]) == ["hi", "iphone"]


def test_unknown_words_get_no_confidence_where_the_archive_stores_the_vocabulary() -> None:
    logits = np.array([[8.0, 0.0]] * 3)
    texts = ["asdfghjkl", "Hello", "查订单"]
    model = ConfidenceModel.from_meta({"confidence": {"temperature": 1.0, "known_words": ["hello"]}})
    assert model.known_words == frozenset({"hello"})
    assert model(logits, texts).in_scope.tolist() == [0.0, 1.0, 1.0]
    off = ConfidenceModel.from_meta({"confidence": {"known_words": ["hello"]}}, unknown_words_rule=False)
    assert off(logits, texts).in_scope.tolist() == [1.0, 1.0, 1.0]
    old = ConfidenceModel.from_meta({"confidence": {"temperature": 1.0}})  # trained before the vocabulary was stored
    assert old(logits, texts).in_scope.tolist() == [1.0, 1.0, 1.0]


def test_model_without_stored_settings_serves_the_plain_softmax() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.1, 0.2]])
    model = ConfidenceModel.from_meta({"labels": ["a", "b", "c"]})
    result = model(logits, ["好的", "查订单"])
    assert np.allclose(result.scaled, softmax(logits, axis=-1))


def test_stored_settings_scale_by_temperature_and_factor_and_zero_out_no_content() -> None:
    model = ConfidenceModel.from_meta({"confidence": {"temperature": 2.0, "energy_reference": [1.0, 3.0]}})
    logits = np.array([[8.0, 0.0], [1.0, 0.0], [8.0, 0.0]])
    result = model(logits, ["在吗", "在吗", "😀😀😀"])
    assert np.allclose(result.probabilities, softmax(logits / 2.0, axis=-1))
    energies = out_of_scope.energy(logits, 2.0)
    assert result.in_scope[0] == 1.0 and 0 < result.in_scope[1] < 1
    assert result.in_scope[1] == pytest.approx((energies[1] - 1.0) / 2.0)
    assert result.in_scope[2] == 0.0 and result.scaled[2].max() == 0.0
    off = ConfidenceModel.from_meta({"confidence": {"temperature": 2.0}}, no_content_rule=False)
    assert off(logits, ["😀😀😀"] * 3).scaled[2].max() > 0.9


def test_round_trip_through_meta() -> None:
    model = ConfidenceModel(temperature=1.7, energy_reference=[1.0, 2.0, 3.0], known_words=frozenset({"ok", "hi"}))
    again = ConfidenceModel.from_meta(model.to_meta())
    assert again.temperature == pytest.approx(1.7) and again.energy_reference == [1.0, 2.0, 3.0]
    assert model.to_meta()["confidence"]["known_words"] == ["hi", "ok"] and again.known_words == model.known_words


def test_fit_skips_calibration_with_a_clear_line_when_too_few_examples_are_held_out() -> None:
    logits, labels = sampled(20, 3, temperature=2.0)
    lines: List[str] = []
    model, report = fitting.fit(logits, labels, calibrate=True, quantile=0.2, no_content_rule=True, log=lines.append)
    assert model.temperature == 1.0 and "calibration needs 50" in report["skipped"]
    assert any("calibration skipped" in line for line in lines)
    assert len(model.energy_reference) == out_of_scope.REFERENCE_POINTS  # 20 >= 10: the factor is fitted
    model, report = fitting.fit(
        logits[:5], labels[:5], calibrate=True, quantile=0.2, no_content_rule=True, log=lines.append
    )
    assert model.energy_reference == [] and "out_of_scope_skipped" in report


def test_fit_reports_ece_before_and_after_with_reliability_bins() -> None:
    logits, labels = sampled(600, 5, temperature=2.5, seed=3)
    model, report = fitting.fit(logits, labels, calibrate=True, quantile=0.2, no_content_rule=True, log=lambda _: None)
    assert model.temperature == pytest.approx(2.5, rel=0.25)
    assert report["ece_after"] < report["ece_before"]
    for key in ("reliability_before", "reliability_after"):
        assert sum(b["count"] for b in report[key]) == 600


def test_recommended_thresholds_keep_the_cost_on_right_answers_bounded() -> None:
    logits, labels = sampled(1000, 5, temperature=1.0, seed=4)
    model = ConfidenceModel()
    confidences = model(logits, ["好"] * len(labels))
    lines: List[str] = []
    result = fitting.recommend_thresholds(confidences, labels, lines.append)
    right = confidences.scaled.argmax(-1) == labels
    for key, limit in (("gpt2_threshold", 0.15), ("fallback_classifier_threshold", 0.05)):
        t = result[key]
        assert fitting.consulted(confidences.scaled, t)[right].mean() <= limit
        if t < fitting.THRESHOLD_GRID[-1]:  # the next grid step would cost more than the limit
            step = fitting.THRESHOLD_GRID[fitting.THRESHOLD_GRID.index(t) + 1]
            assert fitting.consulted(confidences.scaled, step)[right].mean() > limit
    assert result["gpt2_threshold"] >= result["fallback_classifier_threshold"]
    assert "recommended thresholds" in lines[0]


def test_synthetic_negatives_are_shuffled_examples_and_latin_mash() -> None:
    texts = ["我要退款", "查一下订单", "好"]
    negatives = out_of_scope.synthetic_negatives(texts, count=10, seed=1)
    assert all(sorted(t) in (sorted("我要退款"), sorted("查一下订单")) for t in negatives["shuffled"])
    assert all(t.isascii() and t.isalpha() for t in negatives["keyboard_mash"])
    assert negatives == out_of_scope.synthetic_negatives(texts, count=10, seed=1)
