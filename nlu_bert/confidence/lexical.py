"""A lexical intent model beside BERT: TF-IDF of character 1–4-grams within jieba words (scikit-learn's
``char_wb`` analyzer over the jieba-segmented text) and a logistic regression. Its log-probabilities are added to
BERT's logits with two weights fitted on the validation split (a stacked ensemble); on SMP2017 and SMP2019 it
lifted the `scratch` profile's accuracy above both BERT and Rasa's LogisticRegressionClassifier
(docs/confidence.md).

Stored in the archive as plain arrays (``lexical.npz``: the n-gram vocabulary, IDF weights and the regression's
coefficients), never as a pickle; scikit-learn and jieba are imported only when it is fitted or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp

FILE = "lexical.npz"
BACKGROUND_FILE = "lexical_background.npz"  # the same model with background classes (small bots)
NGRAM_RANGE = (1, 4)
C = 30.0  # inverse regularisation of the logistic regression (measured: 10 / 30 / 100 -> 30 best on SMP2017)
FLOOR = 1e-6  # probability of an intent the regression never saw (absent from its training split)
DEFAULT_WEIGHTS = (0.2, 1.1)  # (BERT, lexical) when too little is held out: the fits on SMP2017 / SMP2019
# fewer held-out examples keep the default weights: fitted on 20 examples (10 intents of 15) they sharpened the
# confidences as a temperature below 1 would (BERT's weight 5.0), doubling the calibration error
MIN_WEIGHT_EXAMPLES = 50


def segment(texts: Sequence[str]) -> List[str]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [" ".join(jieba.lcut(t)) for t in texts]


class LexicalModel:
    def __init__(self, vectorizer: Any, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, n: int) -> None:
        self.vectorizer, self.coef, self.intercept = vectorizer, coef, intercept
        self.classes, self.num_labels = np.asarray(classes, dtype=np.int64), int(n)

    @classmethod
    def fit(
        cls, texts: Sequence[str], label_ids: Sequence[int], num_labels: int, background: Sequence[Sequence[str]] = ()
    ) -> "LexicalModel":
        """``background``: groups of messages of other domains, each fitted as a class of its own after the
        intents' (ids ``num_labels``, ``num_labels + 1``…): they never appear in :meth:`log_proba`, only in
        :meth:`background_log_odds` (:mod:`nlu_bert.confidence.background`)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        texts, label_ids = list(texts), list(label_ids)
        for k, group in enumerate(background):
            texts += list(group)
            label_ids += [num_labels + k] * len(group)
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True)
        x = vectorizer.fit_transform(segment(texts))
        clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(x, np.asarray(label_ids))
        coef, intercept = clf.coef_, clf.intercept_
        if len(clf.classes_) == 2:  # scikit-learn keeps one row for two classes
            coef, intercept = np.vstack([-coef, coef]), np.r_[-intercept, intercept]
        return cls(vectorizer, coef, intercept, clf.classes_, num_labels)

    @property
    def intents(self) -> np.ndarray:
        """Which columns of :meth:`scores` are intents (the others: background classes)."""
        return self.classes < self.num_labels

    @property
    def has_background(self) -> bool:
        return not bool(self.intents.all())

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), classes seen]`` decision scores of the regression (before its softmax)."""
        return np.asarray(self.vectorizer.transform(segment(texts)) @ self.coef.T + self.intercept)

    def log_proba(self, texts: Sequence[str], scores: Optional[np.ndarray] = None) -> np.ndarray:
        """``[len(texts), num_labels]`` log-probabilities over the intents (intents it never saw get ``FLOOR``);
        ``scores``: the texts' :meth:`scores` where already computed."""
        scores = self.scores(texts) if scores is None else scores
        probs = np.full((len(texts), self.num_labels), FLOOR)
        probs[:, self.classes[self.intents]] = np.exp(log_softmax(scores[:, self.intents], axis=-1))
        return np.log(probs / probs.sum(-1, keepdims=True))

    def energy(self, texts: Sequence[str], scores: Optional[np.ndarray] = None) -> np.ndarray:
        """``logsumexp`` of the intents' decision scores per text: low when none of the bot's n-grams fit (the
        lexical out-of-scope score of small bots, docs/confidence.md)."""
        scores = self.scores(texts) if scores is None else scores
        return logsumexp(scores[:, self.intents], axis=-1)

    def background_log_odds(self, texts: Sequence[str], scores: Optional[np.ndarray] = None) -> np.ndarray:
        """``log p(any intent) - log p(background)`` per text: low when the message reads like the background
        messages of other domains rather than like the bot's examples (NaN without background classes)."""
        scores = self.scores(texts) if scores is None else scores
        if not self.has_background:
            return np.full(len(scores), np.nan)
        return self.energy(texts, scores) - logsumexp(scores[:, ~self.intents], axis=-1)

    def save(self, folder: Path, name: str = FILE) -> None:
        terms = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        np.savez_compressed(
            folder / name,
            terms=np.array(terms, dtype=str),
            idf=self.vectorizer.idf_,
            coef=self.coef.astype(np.float32),
            intercept=self.intercept,
            classes=self.classes,
            num_labels=np.array(self.num_labels),
        )

    @classmethod
    def load(cls, folder: Path, name: str = FILE) -> "LexicalModel":
        from sklearn.feature_extraction.text import TfidfVectorizer

        with np.load(folder / name, allow_pickle=False) as stored:
            terms = [str(t) for t in stored["terms"]]
            vectorizer = TfidfVectorizer(
                analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True, vocabulary=terms
            )
            vectorizer.idf_ = stored["idf"]
            return cls(vectorizer, stored["coef"].astype(np.float64), stored["intercept"], stored["classes"],
                       int(stored["num_labels"]))  # fmt: skip


def fit_weights(bert_logits: np.ndarray, lexical_log_proba: np.ndarray, labels: Sequence[int]) -> Tuple[float, float]:
    """(BERT, lexical) weights in [0, 20] that minimise the NLL of ``labels`` under softmax(w0·logits + w1·logp)."""
    y = np.asarray(labels)

    def nll(w: np.ndarray) -> float:
        z = log_softmax(w[0] * bert_logits + w[1] * lexical_log_proba, axis=-1)
        return float(-z[np.arange(len(y)), y].mean())

    w = minimize(nll, np.array(DEFAULT_WEIGHTS), bounds=[(0.0, 20.0), (0.0, 20.0)], method="L-BFGS-B").x
    return float(w[0]), float(w[1])


META_KEY = "lexical"  # the ensemble's settings in the component's meta.json


class Ensemble:
    """BERT's logits combined with the lexical model: ``w_bert · logits + w_lexical · log p_lexical(text)``; with
    ``background`` (the same regression fitted with background classes), the out-of-scope energy and log-odds come
    from that one, the intents' probabilities still from ``model``."""

    def __init__(
        self, model: LexicalModel, weights: Tuple[float, float], background: Optional[LexicalModel] = None
    ) -> None:
        self.model, self.weights = model, (float(weights[0]), float(weights[1]))
        self.background = background

    def combine(self, bert_logits: np.ndarray, texts: Sequence[str], max_chars: int = 512) -> np.ndarray:
        return self.combine_with_energy(bert_logits, texts, max_chars)[0]

    def combine_with_energy(
        self, bert_logits: np.ndarray, texts: Sequence[str], max_chars: int = 512
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The combined logits, the lexical :meth:`LexicalModel.energy` and :meth:`LexicalModel.background_log_odds`
        of ``texts`` (one pass of each model)."""
        texts = [t[:max_chars] for t in texts]
        scores = self.model.scores(texts)
        lexical = self.model.log_proba(texts, scores)
        combined = self.weights[0] * np.asarray(bert_logits, dtype=np.float64) + self.weights[1] * lexical
        if self.background is None:
            return combined, self.model.energy(texts, scores), np.full(len(texts), np.nan)
        scores = self.background.scores(texts)
        return combined, self.background.energy(texts, scores), self.background.background_log_odds(texts, scores)

    def to_meta(self) -> dict:
        stored = {"file": FILE, "weights": [round(w, 6) for w in self.weights]}
        if self.background is not None:
            stored["background_file"] = BACKGROUND_FILE
        return stored

    def save(self, folder: Path) -> None:
        self.model.save(folder)
        if self.background is not None:
            self.background.save(folder, BACKGROUND_FILE)

    @classmethod
    def load(cls, folder: Path, stored: dict) -> "Ensemble":
        weights = stored.get("weights") or DEFAULT_WEIGHTS
        background = LexicalModel.load(folder, BACKGROUND_FILE) if stored.get("background_file") else None
        return cls(LexicalModel.load(folder), (float(weights[0]), float(weights[1])), background)


def fit_ensemble(
    texts: Sequence[str],
    label_ids: Sequence[int],
    held_out: Sequence[int],
    num_labels: int,
    bert_logits_of: Any,
    log: Any,
    background: Sequence[Sequence[str]] = (),
) -> Tuple[Ensemble, np.ndarray]:
    """The served ensemble (lexical model fitted on every example) and the combined logits of the held-out
    examples, computed with a lexical model that did not see them (so the weights, the temperature and the
    out-of-scope reference are fitted on honest held-out scores). ``background``: groups of background messages for
    the ensemble's second regression (:meth:`LexicalModel.fit`)."""
    held = set(held_out)
    kept = [i for i in range(len(texts)) if i not in held]
    held_texts = [texts[i] for i in held_out]
    held_labels = [label_ids[i] for i in held_out]
    combined = np.zeros((0, num_labels))
    weights = DEFAULT_WEIGHTS
    if held_texts and len({label_ids[i] for i in kept}) >= 2:
        part = LexicalModel.fit([texts[i] for i in kept], [label_ids[i] for i in kept], num_labels)
        bert, lexical = bert_logits_of(held_texts), part.log_proba(held_texts)
        fitted = len(held_texts) >= MIN_WEIGHT_EXAMPLES
        weights = fit_weights(bert, lexical, held_labels) if fitted else DEFAULT_WEIGHTS
        combined = weights[0] * bert + weights[1] * lexical
        how = "fitted on" if fitted else f"default (fitted from {MIN_WEIGHT_EXAMPLES}), checked on"
        log(
            f"lexical model: weights BERT {weights[0]:.3f}, TF-IDF {weights[1]:.3f} {how} {len(held_texts)} "
            f"held-out examples (accuracy BERT {_accuracy(bert, held_labels):.3f}, TF-IDF "
            f"{_accuracy(lexical, held_labels):.3f}, both {_accuracy(combined, held_labels):.3f})"
        )
    else:
        log(f"lexical model: nothing held out, default weights BERT {weights[0]}, TF-IDF {weights[1]}")
    served = LexicalModel.fit(texts, label_ids, num_labels)
    with_background = LexicalModel.fit(texts, label_ids, num_labels, background) if background else None
    return Ensemble(served, weights, with_background), combined


def cross_fitted(
    texts: Sequence[str],
    label_ids: Sequence[int],
    num_labels: int,
    folds: int = 10,
    seed: int = 0,
    background: Sequence[Sequence[str]] = (),
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold :meth:`LexicalModel.energy`, :meth:`LexicalModel.background_log_odds` and predicted class (an
    intent id, or ``num_labels + k`` for background group ``k``; -1 where not scored) of every training example
    (NaN for the examples of an intent with a single example): each intent's examples are dealt into ``folds``
    folds (seeded) and each fold is scored by a model fitted on the other folds (and all of ``background``), so
    no example is scored by a model that saw it."""
    import random

    rng = random.Random(seed)
    fold_of = np.full(len(texts), -1)
    by_intent: dict = {}
    for i, y in enumerate(label_ids):
        by_intent.setdefault(int(y), []).append(i)
    for members in by_intent.values():
        if len(members) >= 2:
            rng.shuffle(members)
            start = rng.randrange(folds)  # intents of a few examples do not all fill the first folds
            for k, i in enumerate(members):
                fold_of[i] = (start + k) % folds
    energies, log_odds = np.full(len(texts), np.nan), np.full(len(texts), np.nan)
    predicted = np.full(len(texts), -1)
    labels = np.asarray(label_ids)
    for fold in range(folds):
        scored, rest = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        if len(scored) and len(set(labels[rest].tolist())) >= 2:
            model = LexicalModel.fit([texts[i] for i in rest], labels[rest], num_labels, background)
            fold_texts = [texts[i] for i in scored]
            scores = model.scores(fold_texts)
            energies[scored] = model.energy(fold_texts, scores)
            log_odds[scored] = model.background_log_odds(fold_texts, scores)
            predicted[scored] = model.classes[scores.argmax(-1)]
    return energies, log_odds, predicted


def cross_fitted_energies(
    texts: Sequence[str], label_ids: Sequence[int], num_labels: int, folds: int = 10, seed: int = 0
) -> np.ndarray:
    """The out-of-fold energies of :func:`cross_fitted` (no background)."""
    return cross_fitted(texts, label_ids, num_labels, folds, seed)[0]


def _accuracy(scores: np.ndarray, labels: Sequence[int]) -> float:
    return float((np.asarray(scores).argmax(-1) == np.asarray(labels)).mean())


def enabled(config: Any) -> bool:
    """`lexical_model` of the component's config: `auto` is on for the `scratch` backbone only."""
    from nlu_bert.backbones import is_scratch

    setting = config["lexical_model"]
    return is_scratch(config["model"]) if setting == "auto" else bool(setting)


def load(folder: Path, stored: dict) -> "Ensemble":
    """The archive's ensemble (``stored``: its settings in meta.json); a missing or damaged file is a
    ModelArchiveError."""
    from nlu_bert import archive

    files = [FILE] + ([BACKGROUND_FILE] if stored.get("background_file") else [])
    archive.require_files(folder, archive.BERT, files)
    try:
        return Ensemble.load(folder, stored)
    except (OSError, ValueError, KeyError) as e:
        problem = f"{' or '.join(files)} is unreadable ({type(e).__name__}: {e})"
        raise archive.damaged(archive.BERT, folder, problem) from None
