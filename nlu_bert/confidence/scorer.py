"""What the intent classifier does with its logits at predict time, whichever backend computed them: the stored
temperature, the out-of-scope factor, the no-content and unknown-words rules and the lexical model. Archives without
these settings (trained before them, or by a bot too small to fit them) are served as before: temperature 1, no
factor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np

from nlu_bert.confidence import content, lexical, out_of_scope

META_KEY = "confidence"  # the settings' key in the component's meta.json
LEXICAL_ENERGY = "lexical"  # ConfidenceModel.energy_source of a reference of the lexical model's energies


@dataclass
class Confidences:
    probabilities: np.ndarray  # calibrated softmax over the intents, each row sums to 1
    in_scope: np.ndarray  # per message, in [0, 1]: the out-of-scope factor (0 for a message the bot cannot read)

    @property
    def scaled(self) -> np.ndarray:
        """What the intents' confidences are: probability × in-scope factor."""
        return self.probabilities * self.in_scope[:, None]

    def rankings(self, labels: Sequence[str], length: int = 0) -> List[List[Dict[str, Any]]]:
        """Per message, Rasa's ``intent_ranking``: the ``length`` (0 = all) most probable intents with their
        confidences (ordered by probability: a factor of 0 keeps the order)."""
        scaled, length = self.scaled, length or len(labels)
        orders = np.argsort(-self.probabilities, axis=-1, kind="stable")[:, :length]
        return [[{"name": labels[j], "confidence": float(row[j])} for j in order] for row, order in zip(scaled, orders)]


@dataclass
class ConfidenceModel:
    temperature: float = 1.0
    energy_reference: List[float] = field(default_factory=list)  # empty: no out-of-scope factor
    # whose energy the reference is of: `logits` (the combined logits) or `lexical` (the TF-IDF regression's
    # scores, cross-fitted on every training example: small bots, docs/confidence.md)
    energy_source: str = "logits"
    no_content_rule: bool = True
    ensemble: Optional[lexical.Ensemble] = None  # the TF-IDF model beside BERT, where trained with one
    # the background log-odds of the lowest in-scope examples (small bots with background domains in the lexical
    # model, nlu_bert.confidence.background); empty: no background factor
    background_reference: List[float] = field(default_factory=list)
    # the words of letters (not CJK) of the training examples; None: not stored (archives trained before them)
    known_words: Optional[FrozenSet[str]] = None
    unknown_words_rule: bool = True

    @classmethod
    def from_meta(
        cls,
        meta: Mapping[str, Any],
        no_content_rule: bool = True,
        folder: Optional[Path] = None,
        unknown_words_rule: bool = True,
    ) -> "ConfidenceModel":
        """The settings of an archive's meta.json; its lexical model is read from ``folder`` where it has one."""
        stored: Optional[Mapping[str, Any]] = meta.get(META_KEY)
        rules = {"no_content_rule": no_content_rule, "unknown_words_rule": unknown_words_rule}
        if not isinstance(stored, Mapping):
            return cls(**rules)
        ensemble, known = stored.get(lexical.META_KEY), stored.get("known_words")
        model = cls(
            temperature=float(stored.get("temperature") or 1.0),
            energy_reference=[float(x) for x in stored.get("energy_reference") or []],
            energy_source=str(stored.get("energy_source") or "logits"),
            background_reference=[float(x) for x in stored.get("background_reference") or []],
            ensemble=lexical.load(folder, ensemble) if isinstance(ensemble, dict) and folder is not None else None,
            known_words=frozenset(str(w) for w in known) if isinstance(known, list) else None,
            **rules,
        )
        problem = ""
        if model.energy_source == LEXICAL_ENERGY and model.ensemble is None:
            problem = "meta.json has an out-of-scope reference of the lexical model's energy but no lexical model"
        elif model.background_reference and (model.ensemble is None or model.ensemble.background is None):
            problem = "meta.json has a background reference but no lexical model with background classes"
        if problem:
            from nlu_bert import archive

            raise archive.damaged(archive.BERT, folder or Path("."), problem)
        return model

    def to_meta(self) -> Dict[str, Any]:
        """``{"confidence": ...}`` for meta.json."""
        stored: Dict[str, Any] = {
            "temperature": round(self.temperature, 6),
            "energy_reference": [round(x, 6) for x in self.energy_reference],
        }
        if self.energy_source != "logits":
            stored["energy_source"] = self.energy_source
        if self.background_reference:
            stored["background_reference"] = [round(x, 6) for x in self.background_reference]
        if self.ensemble is not None:
            stored[lexical.META_KEY] = self.ensemble.to_meta()
        if self.known_words is not None:
            stored["known_words"] = sorted(self.known_words)
        return {META_KEY: stored}

    def write(self, folder: Path, meta: Dict[str, Any], report: Dict[str, Any]) -> Dict[str, Any]:
        """Into a trained classifier's archive folder: these settings into its meta.json, the training report, the
        lexical model's file; returns the new meta."""
        from nlu_bert import archive

        meta = archive.write_meta(folder, archive.BERT, {**meta, **self.to_meta()})
        archive.write_report(folder, report)
        self.save_files(folder)
        return meta

    def save_files(self, folder: Path) -> None:
        if self.ensemble is not None:
            self.ensemble.save(folder)

    def __call__(
        self,
        logits: np.ndarray,
        texts: Sequence[str],
        energies: Optional[np.ndarray] = None,
        log_odds: Optional[np.ndarray] = None,
    ) -> Confidences:
        """Confidences from BERT's logits (the lexical model's log-probabilities added first, where there is one);
        ``energies`` / ``log_odds``: the texts' out-of-scope energies and background log-odds where computed
        elsewhere (the fit's held-out examples, scored out of fold)."""
        logits = np.asarray(logits, dtype=np.float64)
        lexical_energies = None
        if self.ensemble is not None:
            logits, lexical_energies, lexical_log_odds = self.ensemble.combine_with_energy(logits, texts)
            log_odds = lexical_log_odds if log_odds is None else log_odds
        probabilities, logit_energies = out_of_scope.softmax_and_energy(logits, self.temperature)
        if energies is None:
            lexical_source = self.energy_source == LEXICAL_ENERGY and lexical_energies is not None
            energies = lexical_energies if lexical_source else logit_energies  # (from_meta checks there is one)
        factor = out_of_scope.in_scope_factor(energies, self.energy_reference)
        if self.background_reference and log_odds is not None:  # (from_meta checks the model has background)
            factor = np.minimum(factor, out_of_scope.in_scope_factor(log_odds, self.background_reference))
        if self.no_content_rule or (self.unknown_words_rule and self.known_words is not None):
            factor = np.where([self.readable(t) for t in texts], factor, 0.0)
        return Confidences(probabilities, factor)

    def readable(self, text: str) -> bool:
        """False for a message the rules give no intent: without content (`no_content_rule`), or of words the
        training examples do not have only (`unknown_words_rule`: no CJK character, no digit)."""
        if not content.has_content(text):
            return not self.no_content_rule
        return content.readable(text, self.known_words if self.unknown_words_rule else None)
