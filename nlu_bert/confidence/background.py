"""Background classes for the out-of-scope score of small bots: everyday messages of other domains
(:mod:`nlu_bert.confidence.background_texts`: weather, music, travel, health…) fitted as extra classes of the TF-IDF
model, one per domain. A message that reads more like them than like the bot's examples gets a low
``log p(any intent) - log p(background)`` (:meth:`~nlu_bert.confidence.lexical.LexicalModel.background_log_odds`),
a second out-of-scope signal beside the lexical energy (docs/confidence.md, "Small bots").

A domain the bot's own intents resemble must not count as out of scope. Each training example is compared (cosine
of the same TF-IDF vectors) with the other examples of its intent and with the background messages; where, for at
least ``CONFLICT_SHARE`` of an intent's examples, a background message is nearer than any example of their own
intent, every domain of those nearest messages is left out (``ROUNDS`` rounds, the nearest among the domains
kept). A bot with a weather intent thus keeps its weather questions. On 10 small bots cut from the public sets
(research runs of the lexical model alone) 13.1% of the right answers fell below 0.3 with this rule, 15.3% keeping
every domain (docs/confidence.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np

CONFLICT_SHARE = 0.2  # an intent with at least this share of its examples read as background drops those domains
ROUNDS = 3  # of leaving domains out: after one is left out, another may be the nearest


@dataclass
class Selection:
    domains: List[str]  # the background domains kept, in GROUPS order
    dropped: List[str] = field(default_factory=list)
    energies: np.ndarray = field(default_factory=lambda: np.zeros(0))  # out of fold, per training example
    log_odds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def groups(self) -> List[List[str]]:
        from nlu_bert.confidence.background_texts import GROUPS

        return [GROUPS[d] for d in self.domains]


def conflicting(predicted: np.ndarray, label_ids: Sequence[int], num_labels: int, domains: Sequence[str]) -> List[str]:
    """The domains to leave out: those predicted for the examples of an intent with at least ``CONFLICT_SHARE``
    of its (scored: ``predicted`` >= 0) examples predicted as background (``num_labels + k``: domain ``k``)."""
    labels, out = np.asarray(label_ids), set()
    for intent in np.unique(labels):
        mine = predicted[(labels == intent) & (predicted >= 0)]
        background = mine[mine >= num_labels]
        if len(mine) and len(background) / len(mine) >= CONFLICT_SHARE:
            out.update(domains[k - num_labels] for k in background.tolist())
    return [d for d in domains if d in out]


def nearest_predictions(
    texts: Sequence[str], label_ids: Sequence[int], num_labels: int
) -> Callable[[List[int]], np.ndarray]:
    """For a set of kept domain indexes, each example's "prediction": its intent, or ``num_labels + k`` where a
    message of domain ``k`` is nearer (TF-IDF cosine) than every other example of its intent; -1 for the only
    example of an intent (nothing to compare with)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from nlu_bert.confidence import lexical
    from nlu_bert.confidence.background_texts import GROUPS

    domains = list(GROUPS)
    bank = [(k, t) for k, d in enumerate(domains) for t in GROUPS[d]]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=lexical.NGRAM_RANGE, sublinear_tf=True)
    vectors = vectorizer.fit_transform(lexical.segment(list(texts) + [t for _, t in bank]))
    own_vectors, bank_vectors = vectors[: len(texts)], vectors[len(texts) :]
    labels = np.asarray(label_ids)
    own = np.full(len(labels), -1.0)  # the cosine of each example's nearest other example of its intent
    for intent in np.unique(labels):  # intent by intent: no matrix of every pair of a large bot's examples
        members = np.flatnonzero(labels == intent)
        if len(members) > 1:
            block = (own_vectors[members] @ own_vectors[members].T).toarray()
            np.fill_diagonal(block, -1.0)
            own[members] = block.max(1)
    to_bank = (own_vectors @ bank_vectors.T).toarray()
    domain_of = np.array([k for k, _ in bank])

    def predict(kept: List[int]) -> np.ndarray:
        sims = np.where(np.isin(domain_of, kept)[None, :], to_bank, -1.0)
        predicted = np.where(sims.max(1) > own, num_labels + domain_of[sims.argmax(1)], labels)
        return np.where(own < 0, -1, predicted)

    return predict


def select(
    texts: Sequence[str], label_ids: Sequence[int], num_labels: int, seed: int, log: Callable[[str], None]
) -> Selection:
    """The background domains this bot keeps, with the cross-fitted energies and log-odds of its examples
    against them (the references of the out-of-scope factor)."""
    from nlu_bert.confidence import lexical
    from nlu_bert.confidence.background_texts import GROUPS

    domains = list(GROUPS)
    predict = nearest_predictions(texts, label_ids, num_labels)
    kept = list(range(len(domains)))
    for _ in range(ROUNDS):
        drop = conflicting(predict(kept), label_ids, num_labels, domains)
        if not drop:
            break
        kept = [k for k in kept if domains[k] not in drop]
    selection = Selection([domains[k] for k in kept], [d for k, d in enumerate(domains) if k not in kept])
    selection.energies, selection.log_odds, _ = lexical.cross_fitted(
        texts, label_ids, num_labels, seed=seed, background=selection.groups
    )
    log(
        f"out-of-scope background: {len(kept)} of {len(domains)} domains of everyday messages kept"
        + (f" (left out, like this bot's examples: {', '.join(selection.dropped)})" if selection.dropped else "")
    )
    return selection


def shared_quantile(energies: np.ndarray, log_odds: np.ndarray, quantile: float) -> float:
    """The largest share ``q`` (steps of 0.01, at most ``quantile``) such that the examples below the ``q``
    quantile of the energies or of the log-odds are at most ``quantile`` of all: the two signals together put no
    more in-scope examples into the out-of-scope tail than the energy alone does at ``quantile``."""
    ok = ~np.isnan(energies) & ~np.isnan(log_odds)
    e, o = energies[ok], log_odds[ok]
    best = 0.0
    for q in np.arange(0.01, quantile + 1e-9, 0.01):
        if ((e < np.quantile(e, q)) | (o < np.quantile(o, q))).mean() <= quantile:
            best = float(round(q, 2))
    return best


def describe(selection: Selection) -> Dict[str, object]:
    """For training_report.json."""
    return {"domains": selection.domains, "left_out": selection.dropped}
