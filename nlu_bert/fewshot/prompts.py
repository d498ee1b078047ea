"""few_shot_intent_sft prompts: templates, token-level encoding, example selection, episodes.

The published ``qgyd2021/few_shot_intent_gpt2_base`` was fine-tuned on prompts of the
``qgyd2021/few_shot_intent_sft`` data set. One of its Chinese templates, rendered::

    小样本意图识别。如果不确定，输出 “不知道”。

    Examples:
    ------------
    text: 你好
    intent: greet
    ------------
    text: 再见
    intent: goodbye
    ------------
    text: 早上好
    intent:

Each example is ``"\\ntext: {text}\\nintent: {intent}\\n"``; the examples are joined with the
separator and stripped, as the data set does. The model reads ``[CLS] prompt [SEP]`` and
answers ``intent [SEP]`` (a BERT-style tokenizer: the end of an answer is ``sep_token_id``).

A prompt is encoded in three parts so that the few-shot part can be cached across messages:
``prefix`` (``[CLS]`` + instruction + examples, independent of the message), ``query``
(the user's text + ``intent:`` + ``[SEP]``) and one ``answer`` per candidate. The parts are
cut at line breaks, where a BERT tokenizer splits anyway, so ``prefix + query`` is exactly
the tokenization of the whole prompt (a test pins this).

Nothing here imports torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from nlu_bert.confidence.content import vocabulary
from nlu_bert.text import normalize_text

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

# The data set draws 2-7 intents ("ways") and 1-3 examples ("shots") per prompt and leaves
# the true intent out of about 10% of the prompts (answer: the not-applicable text).
MIN_WAY, MAX_WAY = 2, 7
MIN_SHOT, MAX_SHOT = 1, 3

EXAMPLE_SELECTIONS = ("nearest", "nearest_to_message", "random")

Shot = Tuple[str, str]  # (example text, label shown to the model)


@dataclass(frozen=True)
class PromptTemplate:
    """A few_shot_intent_sft template: ``prompt`` holds ``{not_applicable}``, ``{examples}``, ``{text}``."""

    prompt: str
    example: str = "\ntext: {text}\nintent: {intent}\n"
    example_sep: str = "------------"

    def render_examples(self, shots: Sequence[Shot]) -> str:
        return self.example_sep.join(self.example.format(text=t, intent=i) for t, i in shots).strip()

    def render(self, shots: Sequence[Shot], text: str, not_applicable: str) -> str:
        """The whole prompt as a string (for people and tests; the model gets token ids)."""
        return self.prompt.format(not_applicable=not_applicable, examples=self.render_examples(shots), text=text)

    def split(self) -> Tuple[str, str, str]:
        """``(prefix, query_head, query_tail)``: the prompt is ``prefix + query_head + text + query_tail``.

        The prefix ends where the line holding ``{text}`` begins.
        """
        at = self.prompt.index("{text}")
        line_start = self.prompt.rfind("\n", 0, at) + 1
        return self.prompt[:line_start], self.prompt[line_start:at], self.prompt[at + len("{text}") :]


_ZH_INSTRUCTION = "小样本意图识别。如果不确定，输出 “{not_applicable}”。\n\n"

TEMPLATES: Dict[str, PromptTemplate] = {
    # the data set's Chinese few-shot template with a dashed separator (the default)
    "few_shot_zh": PromptTemplate(
        _ZH_INSTRUCTION + "Examples:\n------------\n{examples}\n------------\ntext: {text}\nintent:"
    ),
    # the same with ``` fences (smp2017 / smp2019 subsets)
    "few_shot_zh_backticks": PromptTemplate(
        _ZH_INSTRUCTION + "Examples:\n```\n{examples}\n```\ntext: {text}\nintent:", example_sep="```"
    ),
    # a plain variant: no separator between examples
    "intent_zh": PromptTemplate(
        "意图识别。如果不确定，输出 “{not_applicable}”。\n\nExamples:\n{examples}\n\ntext: {text}\nintent:",
        example_sep="",
    ),
    # English bots
    "few_shot_en": PromptTemplate(
        'few shot intent recognition. output "{not_applicable}" when not sure.\n\n'
        "Examples:\n------------\n{examples}\n------------\ntext: {text}\nintent:"
    ),
}


def template_problem(template: Any) -> Optional[str]:
    """Why ``template`` (a name or a dict with ``prompt`` [, ``example``, ``example_sep``]) is unusable, or None."""
    if isinstance(template, str):
        return None if template in TEMPLATES else f"a template name ({', '.join(TEMPLATES)})"
    if not isinstance(template, dict) or not isinstance(template.get("prompt"), str):
        return "a template name or a mapping with a `prompt` string"
    unknown = set(template) - {"prompt", "example", "example_sep"}
    if unknown:
        return f"a mapping with keys prompt, example, example_sep only (unknown: {', '.join(sorted(unknown))})"
    prompt = template["prompt"]
    for placeholder in ("{examples}", "{text}"):
        if prompt.count(placeholder) != 1:
            return f"a `prompt` holding {placeholder} exactly once"
    tpl = resolve_template(template)
    prefix, _, _ = tpl.split()
    if "{examples}" not in prefix:
        return "a `prompt` whose {examples} comes on a line before the line holding {text}"
    try:
        tpl.render([("x", "y")], "z", "n")
    except (KeyError, IndexError, ValueError) as e:
        return f"a `prompt` using only {{not_applicable}}, {{examples}} and {{text}} ({type(e).__name__}: {e})"
    return None


def resolve_template(template: Any) -> PromptTemplate:
    if isinstance(template, PromptTemplate):
        return template
    if isinstance(template, str):
        return TEMPLATES[template]
    defaults = PromptTemplate(prompt=template["prompt"])
    return PromptTemplate(
        prompt=template["prompt"],
        example=template.get("example", defaults.example),
        example_sep=template.get("example_sep", defaults.example_sep),
    )


class PromptEncoder:
    """Token ids for the three parts of a prompt, with the length limits applied.

    ``max_prompt_tokens`` bounds the whole sequence (``[CLS]`` prompt ``[SEP]`` answer ``[SEP]``);
    the user's text is cut to ``max_text_tokens``. The few-shot part gets what is left after
    the longest possible query and the longest answer of any of ``labels``, so its budget
    depends neither on the message nor on the candidate set.
    """

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        template: PromptTemplate,
        not_applicable: str,
        max_prompt_tokens: int,
        max_text_tokens: int,
        labels: Sequence[str] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.template = template
        self.not_applicable = not_applicable
        self.max_prompt_tokens = max_prompt_tokens
        self.max_text_tokens = max_text_tokens
        self.begin_id: Optional[int] = _first_not_none(tokenizer.cls_token_id, tokenizer.bos_token_id)
        self.end_id: int = _first_not_none(tokenizer.sep_token_id, tokenizer.eos_token_id)  # type: ignore[assignment]
        if self.end_id is None:
            raise ValueError("the tokenizer has neither a sep_token nor an eos_token to end prompts and answers")
        self._prefix_tpl, query_head, query_tail = template.split()
        self._query_head = self.tokens(query_head.format(not_applicable=not_applicable))
        self._query_tail = self.tokens(query_tail.format(not_applicable=not_applicable)) + [self.end_id]
        self._answers: Dict[str, List[int]] = {}

    def tokens(self, text: str) -> List[int]:
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer_ids(self, label: str) -> List[int]:
        """``label [SEP]``: the tokens a candidate's score is computed on (memoised)."""
        if label not in self._answers:
            self._answers[label] = self.tokens(label) + [self.end_id]
        return self._answers[label]

    def query_ids(self, text: str) -> List[int]:
        """``text: <user text, cut to max_text_tokens>`` ``intent:`` ``[SEP]``."""
        body = self.tokens(normalize_text(text))[: self.max_text_tokens]
        return self._query_head + body + self._query_tail

    def prefix_ids(self, shots: Sequence[Shot]) -> List[int]:
        """``[CLS]`` + instruction + examples: everything before the user's line."""
        examples = self.template.render_examples(shots)
        text = self._prefix_tpl.format(not_applicable=self.not_applicable, examples=examples)
        return ([self.begin_id] if self.begin_id is not None else []) + self.tokens(text)

    def prefix_budget(self) -> int:
        """Tokens left for the few-shot prefix after the longest query and the longest answer.

        The same for every candidate set (all ``labels`` count), so it can also serve as the
        fixed position where the user's line starts (see ``position_anchor`` in the scorer).
        """
        answers = [len(self.answer_ids(lbl)) for lbl in self.labels + [self.not_applicable]]
        longest_query = len(self._query_head) + self.max_text_tokens + len(self._query_tail)
        return self.max_prompt_tokens - longest_query - max(answers)

    def fit_prefix(
        self, shots_per_label: Sequence[Tuple[str, List[str]]], priority: Optional[Sequence[str]] = None
    ) -> Tuple[List[int], List[Shot]]:
        """The prefix for ``[(label, [example, ...]), ...]`` (in prompt order) cut to the budget.

        Examples are interleaved (first example of every label, then the second, ...). While
        the prefix is too long, the label with the most examples loses its last one; at one
        example each, labels are dropped, lowest ``priority`` first (default: the last ones);
        as a last resort the token ids are cut.
        """
        groups = [(label, list(texts)) for label, texts in shots_per_label]
        drop_order = list(reversed(priority if priority is not None else [label for label, _ in groups]))
        budget = self.prefix_budget()
        while True:
            shots = interleave(groups)
            ids = self.prefix_ids(shots)
            if len(ids) <= budget:
                return ids, shots
            most = max((len(texts) for _, texts in groups), default=0)
            if most > 1:
                idx = max(i for i, (_, texts) in enumerate(groups) if len(texts) == most)
                groups[idx][1].pop()
            elif len(groups) > 1:
                present = [label for label, _ in groups]
                victim = next((label for label in drop_order if label in present), present[-1])
                groups = [g for g in groups if g[0] != victim]
            else:
                return ids[: max(budget, 1)], shots

    def encode(self, shots: Sequence[Shot], text: str) -> List[int]:
        """``[CLS] prompt [SEP]`` as the model reads it (no answer)."""
        return self.prefix_ids(shots) + self.query_ids(text)


def interleave(groups: Sequence[Tuple[str, Sequence[str]]]) -> List[Shot]:
    longest = max((len(texts) for _, texts in groups), default=0)
    return [(texts[j], label) for j in range(longest) for label, texts in groups if j < len(texts)]


def _first_not_none(*values: Optional[int]) -> Optional[int]:
    return next((v for v in values if v is not None), None)


class ExampleBank:
    """The training examples of every intent, and the choice of which ones a prompt shows.

    Similarity is a character uni+bigram TF-IDF cosine (no neural model). ``nearest`` picks
    each intent's most typical examples (nearest to the intent's centroid) once, so the
    few-shot part of a prompt depends only on the candidate set and its key/value cache can
    be reused across messages; ``nearest_to_message`` picks, per message, the examples most
    like the user's text (more relevant, but the few-shot part must be encoded for every
    message); ``random`` is a seeded sample fixed at training time (cacheable too).
    """

    def __init__(self, examples: Dict[str, List[str]], seed: int = 42) -> None:
        self.examples = {intent: _dedupe(texts) for intent, texts in examples.items() if texts}
        self.intents = sorted(self.examples)
        self.seed = seed
        self._vectorizer: Any = None
        self._matrices: Dict[str, Any] = {}
        self._prototypes: Dict[str, List[str]] = {}
        # the examples' words of letters other than CJK ideographs (the unknown-words rule, docs/confidence.md)
        self.known_words: FrozenSet[str] = frozenset(vocabulary(t for texts in self.examples.values() for t in texts))

    def _fit(self) -> None:
        if self._vectorizer is not None:
            return
        from sklearn.feature_extraction.text import TfidfVectorizer

        corpus = [t for intent in self.intents for t in self.examples[intent]]
        self._vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), lowercase=True, sublinear_tf=True)
        self._vectorizer.fit(corpus or ["_"])
        for intent in self.intents:
            self._matrices[intent] = self._vectorizer.transform(self.examples[intent])

    def prototypes(self, intent: str, n: int) -> List[str]:
        """The ``n`` examples nearest to the intent's centroid (ties keep data order)."""
        key = f"{intent}\0{n}"
        if key not in self._prototypes:
            self._fit()
            import numpy as np

            matrix = self._matrices[intent]
            centroid = np.asarray(matrix.mean(axis=0)).ravel()
            sims = matrix @ centroid
            order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), i))
            self._prototypes[key] = [self.examples[intent][i] for i in order[:n]]
        return self._prototypes[key]

    def nearest(self, intent: str, text: str, n: int) -> List[str]:
        """The ``n`` examples of ``intent`` most like ``text`` (ties keep data order)."""
        self._fit()
        sims = (self._matrices[intent] @ self._vectorizer.transform([text]).T).toarray().ravel()
        order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), i))
        return [self.examples[intent][i] for i in order[:n]]

    def fixed_random(self, intent: str, n: int) -> List[str]:
        rng = random.Random(f"{self.seed}:{intent}")
        texts = list(self.examples[intent])
        rng.shuffle(texts)
        return texts[:n]

    def select(self, intent: str, n: int, selection: str, text: str = "") -> List[str]:
        if selection == "nearest_to_message":
            return self.nearest(intent, text, n)
        if selection == "random":
            return self.fixed_random(intent, n)
        return self.prototypes(intent, n)

    def similar_intents(self, text: str, k: int) -> List[str]:
        """The ``k`` intents holding the examples most like ``text`` (best example per intent)."""
        if k <= 0 or not text:
            return []
        self._fit()
        query = self._vectorizer.transform([text]).T
        best = {intent: float((self._matrices[intent] @ query).max()) for intent in self.intents}
        ranked = sorted((i for i in self.intents if best[i] > 0), key=lambda i: (-best[i], self.intents.index(i)))
        return ranked[:k]

    def to_json(self) -> Dict[str, Any]:
        return {"seed": self.seed, "examples": self.examples}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "ExampleBank":
        return cls({k: list(v) for k, v in data["examples"].items()}, seed=int(data["seed"]))


def _dedupe(texts: Sequence[str]) -> List[str]:
    seen: Dict[str, None] = {}
    for t in texts:
        t = normalize_text(t)
        if t:
            seen.setdefault(t, None)
    return list(seen)


@dataclass
class Episode:
    """One generated few-shot prompt: the shots shown, the query, and the right answer.

    ``answer`` is an intent name, or None when the true intent was left out (the right
    answer is then the not-applicable text).
    """

    shots: List[Tuple[str, str]]  # (text, intent name)
    text: str
    answer: Optional[str]
    intents: List[str] = field(default_factory=list)  # the intents shown, in prompt order


def sample_episode(
    pool: ExampleBank, text: str, intent: str, rng: random.Random, not_applicable_rate: float = 0.1
) -> Episode:
    """A prompt the way few_shot_intent_sft makes them: 2-7 ways, 1-3 shots, ~10% none-of-these.

    ``text`` (of ``intent``) is the query; the shots come from ``pool`` and never include it.
    """
    others = [i for i in pool.intents if i != intent]
    n_way = rng.randint(min(MIN_WAY, len(others) + 1), min(MAX_WAY, len(others) + 1))
    leave_out = bool(others) and rng.random() < not_applicable_rate
    shown = rng.sample(others, min(len(others), n_way if leave_out else n_way - 1))
    if not leave_out:
        shown.append(intent)
    n_shot = rng.randint(MIN_SHOT, MAX_SHOT)
    shots: List[Tuple[str, str]] = []
    for name in shown:
        candidates = [t for t in pool.examples.get(name, []) if t != text]
        shots.extend((t, name) for t in rng.sample(candidates, min(n_shot, len(candidates))))
    rng.shuffle(shots)
    shown_with_shots = [n for n in shown if any(i == n for _, i in shots)]
    rng.shuffle(shown_with_shots)
    answer = intent if intent in shown_with_shots else None
    return Episode(shots=shots, text=text, answer=answer, intents=shown_with_shots)


@dataclass
class ScoringItem:
    """A prompt split for scoring, with its answer options and the index of the right one."""

    prefix: List[int]
    query: List[int]
    options: List[List[int]]
    correct: int


def encode_episode(encoder: PromptEncoder, episode: Episode, label_of: Dict[str, str]) -> ScoringItem:
    """Token ids of an episode; options are the shown intents' labels, then the not-applicable answer.

    Shots are dropped from the end while the prompt is longer than ``max_prompt_tokens`` allows.
    """
    shots = [(text, label_of[intent]) for text, intent in episode.shots]
    budget = encoder.prefix_budget()
    prefix = encoder.prefix_ids(shots)
    while len(prefix) > budget and len(shots) > 1:
        shots.pop()
        prefix = encoder.prefix_ids(shots)
    prefix = prefix[: max(budget, 1)]
    shown_labels = {label for _, label in shots}
    intents = [i for i in episode.intents if label_of[i] in shown_labels]
    options = [encoder.answer_ids(label_of[i]) for i in intents] + [encoder.answer_ids(encoder.not_applicable)]
    correct = intents.index(episode.answer) if episode.answer in intents else len(intents)
    return ScoringItem(prefix=prefix, query=encoder.query_ids(episode.text), options=options, correct=correct)
