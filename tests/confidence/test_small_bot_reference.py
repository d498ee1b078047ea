"""The out-of-scope reference of a small bot: the lexical model's energies cross-fitted on every training example
(too few held-out examples for a reference of BERT's energies), stored in meta.json and served."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from nlu_bert.archive import ModelArchiveError
from nlu_bert.confidence import fitting, out_of_scope
from nlu_bert.confidence.scorer import LEXICAL_ENERGY, ConfidenceModel

from nlu_testing import TINY_BOT

LABELS = sorted(TINY_BOT)
TEXTS = [t for intent in LABELS for t in TINY_BOT[intent]]
IDS = [LABELS.index(intent) for intent in LABELS for _ in TINY_BOT[intent]]
CONFIG = {"model": "scratch", "lexical_model": True, "calibrate": True, "out_of_scope_quantile": 0.3,
          "no_content_rule": True, "unknown_words_rule": True, "random_seed": 0}  # fmt: skip
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
