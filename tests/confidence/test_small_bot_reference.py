"""The out-of-scope reference of a small bot: the lexical model's energies cross-fitted on every training example
(too few held-out examples for a reference of BERT's energies), stored in meta.json and served; with background
domains of everyday messages, their log-odds beside it."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from nlu_bert.archive import ModelArchiveError
from nlu_bert.confidence import background, fitting, out_of_scope
from nlu_bert.confidence.scorer import LEXICAL_ENERGY, ConfidenceModel

from nlu_testing import TINY_BOT

LABELS = sorted(TINY_BOT)
TEXTS = [t for intent in LABELS for t in TINY_BOT[intent]]
IDS = [LABELS.index(intent) for intent in LABELS for _ in TINY_BOT[intent]]
CONFIG = {"model": "scratch", "lexical_model": True, "calibrate": True, "out_of_scope_quantile": 0.3,
          "no_content_rule": True, "unknown_words_rule": True, "random_seed": 0,
          "out_of_scope_background": False}  # fmt: skip
WITH_BACKGROUND = {**CONFIG, "out_of_scope_background": True}
OUT_OF_SCOPE = ["今天北京天气怎么样", "给我放一首周杰伦的歌", "红烧肉怎么做", "订一张去上海的机票"]


def blank_bert(texts: List[str]) -> np.ndarray:  # a BERT that knows nothing: everything comes from the lexical model
    return np.zeros((len(texts), len(LABELS)))


def fit_small(config: dict = CONFIG, held_out: List[int] = [0, 12, 24, 36]):  # noqa: B006 - never mutated
    lines: List[str] = []
    model, report = fitting.fit_held_out(TEXTS, IDS, len(LABELS), held_out, blank_bert, config, lines.append)
    return model, report, lines


def test_a_small_bot_takes_its_reference_from_cross_fitted_lexical_energies() -> None:
    model, report, lines = fit_small()
    assert model.energy_source == LEXICAL_ENERGY and len(model.energy_reference) == out_of_scope.REFERENCE_POINTS
    assert "cross-fitted training examples" in report["out_of_scope_reference"]
    assert any("TF-IDF energy of the lowest 30% of 48 training examples" in line for line in lines)
    assert "recommended_thresholds" in report and "synthetic_negatives" in report
    inside = model(blank_bert(TEXTS), TEXTS).in_scope
    outside = model(blank_bert(OUT_OF_SCOPE), OUT_OF_SCOPE).in_scope
    assert inside.mean() > 0.8 and outside.mean() < inside.mean() and (outside < 1).mean() >= 0.5
    # the factor only scales: every message keeps the order of its intents
    served = model(blank_bert(OUT_OF_SCOPE + TEXTS), OUT_OF_SCOPE + TEXTS)
    assert (served.scaled.argmax(-1) == served.probabilities.argmax(-1))[served.in_scope > 0].all()


def test_enough_held_out_examples_keep_the_reference_of_the_combined_logits() -> None:
    texts = [f"{a}{t}" for t in TEXTS for a in ("", "请问", "麻烦")]
    ids = [i for i in IDS for _ in range(3)]
    held_out = list(range(0, len(texts), 2))  # 72 held out
    model, report = fitting.fit_held_out(texts, ids, len(LABELS), held_out, blank_bert, CONFIG, lambda _: None)
    assert model.energy_source == "logits" and model.energy_reference
    assert "out_of_scope_reference" not in report


def test_no_lexical_model_or_no_factor_keeps_the_logits() -> None:
    model, _, _ = fit_small({**CONFIG, "out_of_scope_quantile": 0})
    assert model.energy_reference == [] and model.energy_source == "logits"
    model, _, _ = fit_small({**CONFIG, "lexical_model": False})
    assert model.energy_source == "logits" and model.ensemble is None


def test_the_lexical_reference_round_trips_through_the_archive(tmp_path: Path) -> None:
    model, _, _ = fit_small()
    meta = model.to_meta()
    assert meta["confidence"]["energy_source"] == LEXICAL_ENERGY
    model.save_files(tmp_path)
    again = ConfidenceModel.from_meta(meta, folder=tmp_path)
    texts = OUT_OF_SCOPE + TEXTS[:5]
    assert np.allclose(again(blank_bert(texts), texts).scaled, model(blank_bert(texts), texts).scaled)
    assert "energy_source" not in ConfidenceModel(energy_reference=[1.0, 2.0]).to_meta()["confidence"]
    damaged = {"confidence": {"energy_reference": [1.0, 2.0], "energy_source": LEXICAL_ENERGY}}
    with pytest.raises(ModelArchiveError, match="no lexical model"):
        ConfidenceModel.from_meta(damaged, folder=tmp_path)


def test_background_domains_send_everyday_messages_of_other_domains_lower() -> None:
    plain, _, _ = fit_small()
    model, report, lines = fit_small(WITH_BACKGROUND)
    assert model.background_reference and model.ensemble is not None and model.ensemble.background is not None
    assert model.ensemble.background.has_background and not model.ensemble.model.has_background
    assert len(report["out_of_scope_background"]["domains"]) > 10
    assert any("out-of-scope background:" in line for line in lines)
    assert "background log-odds" in report["out_of_scope_reference"]
    # still no more of the bot's own examples in the tail: the two references share the quantile
    assert sum(1 for line in lines if "30% of the examples in all" in line) == 1
    outside = model(blank_bert(OUT_OF_SCOPE), OUT_OF_SCOPE).in_scope
    assert outside.mean() < plain(blank_bert(OUT_OF_SCOPE), OUT_OF_SCOPE).in_scope.mean()
    assert (outside < 0.3).all()
    inside = model(blank_bert(TEXTS), TEXTS)
    assert inside.in_scope.mean() > 0.8
    # intents are still those of the bot: the background classes never appear in the probabilities
    assert inside.probabilities.shape == (len(TEXTS), len(LABELS))
    assert np.allclose(inside.probabilities.sum(-1), 1.0)


def test_a_bot_with_a_domain_of_its_own_keeps_those_messages_in_scope() -> None:
    weather = ["今天天气怎么样", "明天会下雨吗", "北京现在多少度", "这周末天气好不好", "后天要降温吗", "上海明天晴天吗",
               "今天有雾霾吗", "明天刮大风吗", "下午会不会下雨", "周六气温多少", "今晚冷不冷", "广州明天热吗"]  # fmt: skip
    texts, ids = TEXTS + weather, IDS + [len(LABELS)] * len(weather)
    lines: List[str] = []
    model, report = fitting.fit_held_out(
        texts, ids, len(LABELS) + 1, [0, 12, 24, 36], lambda t: np.zeros((len(t), len(LABELS) + 1)),
        WITH_BACKGROUND, lines.append,
    )  # fmt: skip
    assert "weather" in report["out_of_scope_background"]["left_out"]
    assert "weather" not in report["out_of_scope_background"]["domains"]
    asked = ["明天天气怎么样", "下周会下雪吗", "今天气温多少度"]
    served = model(np.zeros((len(asked), len(LABELS) + 1)), asked)
    assert (served.scaled.argmax(-1) == len(LABELS)).all() and (served.scaled.max(-1) > 0.3).all()


def test_the_background_reference_round_trips_through_the_archive(tmp_path: Path) -> None:
    model, _, _ = fit_small(WITH_BACKGROUND)
    meta = model.to_meta()
    assert len(meta["confidence"]["background_reference"]) == out_of_scope.REFERENCE_POINTS
    model.save_files(tmp_path)
    again = ConfidenceModel.from_meta(meta, folder=tmp_path)
    texts = OUT_OF_SCOPE + TEXTS[:5]
    assert np.allclose(again(blank_bert(texts), texts).scaled, model(blank_bert(texts), texts).scaled)
    lexical_meta = {k: v for k, v in meta["confidence"]["lexical"].items() if k != "background_file"}
    damaged = {"confidence": {**meta["confidence"], "lexical": lexical_meta}}
    with pytest.raises(ModelArchiveError, match="no lexical model with background classes"):
        ConfidenceModel.from_meta(damaged, folder=tmp_path)
    (tmp_path / "lexical_background.npz").unlink()
    with pytest.raises(ModelArchiveError, match="lexical_background.npz"):
        ConfidenceModel.from_meta(meta, folder=tmp_path)


def test_switched_off_or_a_large_bot_has_no_background() -> None:
    model, report, _ = fit_small()
    assert model.background_reference == [] and "out_of_scope_background" not in report
    assert model.ensemble.background is None and "background_file" not in model.to_meta()["confidence"]["lexical"]
    texts = [f"{a}{t}" for t in TEXTS for a in ("", "请问", "麻烦")]
    ids = [i for i in IDS for _ in range(3)]
    large, report = fitting.fit_held_out(
        texts, ids, len(LABELS), list(range(0, len(texts), 2)), blank_bert, WITH_BACKGROUND, lambda _: None
    )
    assert large.background_reference == [] and "out_of_scope_background" not in report


def test_shared_quantile_puts_the_same_share_of_examples_in_the_tail() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    assert background.shared_quantile(a, a, 0.3) == pytest.approx(0.3)  # one signal twice: the whole share
    q = background.shared_quantile(a, rng.normal(size=1000), 0.3)  # independent: each takes less
    assert 0.15 <= q < 0.2


def test_domains_are_left_out_where_an_intents_examples_read_as_them() -> None:
    domains = ["weather", "music", "travel"]
    labels = [0] * 10 + [1] * 10
    predicted = np.array([0] * 7 + [2, 2, 3] + [1] * 9 + [4])  # intent 0: 3 of 10 as background, intent 1: 1 of 10
    assert background.conflicting(predicted, labels, 2, domains) == ["weather", "music"]
    predicted = np.array([0] * 9 + [-1] + [1] * 9 + [4])  # an unscored example does not count
    assert background.conflicting(predicted, labels, 2, domains) == []
