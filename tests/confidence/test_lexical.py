"""The TF-IDF model beside BERT: fit, the arrays it is stored as (no pickle), the ensemble weights."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from nlu_bert.confidence.lexical import (
    DEFAULT_WEIGHTS,
    FILE,
    Ensemble,
    LexicalModel,
    cross_fitted_energies,
    fit_ensemble,
    fit_weights,
)

from nlu_testing import TINY_BOT

LABELS = sorted(TINY_BOT)
TEXTS = [t for intent in LABELS for t in TINY_BOT[intent]]
IDS = [LABELS.index(intent) for intent in LABELS for _ in TINY_BOT[intent]]


def test_it_learns_the_words_of_each_intent_and_round_trips_without_pickle(tmp_path: Path) -> None:
    model = LexicalModel.fit(TEXTS, IDS, num_labels=len(LABELS) + 1)  # one intent it never saw
    queries = ["我的订单到哪了呢", "好的再见啦", "我要退款可以吗", "您好啊"]
    logp = model.log_proba(queries)
    assert [LABELS[i] for i in logp.argmax(-1)] == ["check_order", "goodbye", "refund", "greet"]
    assert np.allclose(np.exp(logp).sum(-1), 1.0) and np.exp(logp[:, -1]).max() < 1e-5
    model.save(tmp_path)
    with np.load(tmp_path / FILE, allow_pickle=False) as stored:
        assert set(stored.files) == {"terms", "idf", "coef", "intercept", "classes", "num_labels"}
    assert np.allclose(LexicalModel.load(tmp_path).log_proba(queries), logp, atol=1e-5)


def test_two_intents_keep_one_row_per_intent() -> None:
    ids = [i % 2 for i in range(len(TEXTS))]
    model = LexicalModel.fit(TEXTS, ids, num_labels=2)
    assert model.coef.shape[0] == 2 and model.log_proba(["你好"]).shape == (1, 2)


def test_weights_follow_the_informative_model() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    informative = np.log(np.full((300, 4), 0.05) + 0.8 * np.eye(4)[labels])
    noise = rng.normal(0, 3, (300, 4))
    w_noise, w_informative = fit_weights(noise, informative, labels)
    assert w_noise < 0.05 and w_informative > 0.5


def test_fit_ensemble_checks_the_default_weights_on_a_few_held_out_examples() -> None:
    held_out = [0, 12, 24, 36]
    lines: List[str] = []
    calls: List[Tuple[str, ...]] = []

    def bert(texts: List[str]) -> np.ndarray:  # a BERT that knows nothing
        calls.append(tuple(texts))
        return np.zeros((len(texts), len(LABELS)))

    ensemble, held = fit_ensemble(TEXTS, IDS, held_out, len(LABELS), bert, lines.append)
    assert calls == [tuple(TEXTS[i] for i in held_out)] and held.shape == (4, len(LABELS))
    assert ensemble.weights == DEFAULT_WEIGHTS and "default (fitted from 50), checked on 4 held-out" in lines[0]
    combined = ensemble.combine(np.zeros((1, len(LABELS))), ["查一下我的订单"])
    assert LABELS[int(combined.argmax())] == "check_order"


def test_enough_held_out_examples_fit_the_weights() -> None:
    texts = [f"{a}{t}" for t in TEXTS for a in ("", "请问", "麻烦")]
    ids = [i for i in IDS for _ in range(3)]
    held_out = list(range(0, len(texts), 2))  # 72 held out
    lines: List[str] = []
    bert = lambda ts: np.zeros((len(ts), len(LABELS)))  # noqa: E731 - a BERT that knows nothing
    ensemble, held = fit_ensemble(texts, ids, held_out, len(LABELS), bert, lines.append)
    assert "fitted on 72 held-out examples" in lines[0] and ensemble.weights != DEFAULT_WEIGHTS
    assert held.shape == (72, len(LABELS))


def test_nothing_held_out_uses_the_default_weights() -> None:
    lines: List[str] = []
    ensemble, held = fit_ensemble(TEXTS, IDS, [], len(LABELS), pytest.fail, lines.append)
    assert held.shape == (0, len(LABELS)) and "default weights" in lines[0]


def test_energy_is_higher_for_the_bots_words_and_combine_gives_it_in_the_same_pass() -> None:
    model = LexicalModel.fit(TEXTS, IDS, num_labels=len(LABELS))
    inside, outside = model.energy(["我的订单到哪了", "我要退款"]), model.energy(["xyzzy plugh", "量子力学方程"])
    assert inside.min() > outside.max()
    ensemble = Ensemble(model, (0.5, 1.0))
    bert = np.zeros((2, len(LABELS)))
    combined, energies, log_odds = ensemble.combine_with_energy(bert, ["我要退款", "量子力学"])
    assert np.allclose(combined, ensemble.combine(bert, ["我要退款", "量子力学"]))
    assert np.allclose(energies, model.energy(["我要退款", "量子力学"]))
    assert np.isnan(log_odds).all()  # no background classes


def test_cross_fitted_energies_come_from_models_that_did_not_see_the_example() -> None:
    ids = IDS + [len(LABELS)]  # one intent of a single example: no fold can leave it out and keep it
    texts = TEXTS + ["独一无二的例子"]
    energies = cross_fitted_energies(texts, ids, num_labels=len(LABELS) + 1, folds=4, seed=3)
    assert np.isnan(energies[-1]) and np.isfinite(energies[:-1]).all()
    in_sample = LexicalModel.fit(texts, ids, len(LABELS) + 1).energy(texts[:-1])
    assert (energies[:-1] < in_sample).mean() > 0.8  # a model that saw an example scores it higher
    again = cross_fitted_energies(texts, ids, num_labels=len(LABELS) + 1, folds=4, seed=3)
    assert np.array_equal(energies, again, equal_nan=True)
