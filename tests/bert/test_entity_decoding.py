"""Constrained Viterbi, marginals and the CRF's likelihood against brute force over every valid tag sequence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nlu_bert.bert import decoding
from nlu_bert.bert.tagging import Label, Span, TagSet


def valid_sequences(tags: TagSet, length: int, model: decoding.Constraints) -> list:
    def ok(seq: tuple) -> bool:
        blocked = [model.start[seq[0]], model.end[seq[-1]]] + [model.transitions[a, b] for a, b in zip(seq, seq[1:])]
        return all(b == 0 for b in blocked)

    return [s for s in itertools.product(range(len(tags)), repeat=length) if ok(s)]


def path_score(seq: tuple, emissions: np.ndarray, model: decoding.Constraints) -> float:
    return float(
        model.start[seq[0]]
        + model.end[seq[-1]]
        + sum(model.transitions[a, b] for a, b in zip(seq, seq[1:]))
        + sum(emissions[t, k] for t, k in enumerate(seq))
    )


@pytest.mark.parametrize("bilou", [True, False])
def test_only_valid_sequences_are_allowed(bilou: bool) -> None:
    tags = TagSet([Label("a"), Label("b")], bilou=bilou)
    sequences = valid_sequences(tags, 3, decoding.allowed(tags))
    names = [[tags.tags[k] for k in s] for s in sequences]
    assert ["B-0", "I-0", "I-0" if not bilou else "L-0"] in names
    assert ["O", "I-0", "O"] not in names  # I without B
    assert ["B-0", "I-1", "O"] not in names  # a change of label inside an entity
    if bilou:
        assert ["O", "O", "B-0"] not in names  # an entity left open at the end
        assert ["B-0", "O", "O"] not in names
        assert ["U-0", "U-0", "U-1"] in names
    # every valid sequence decodes to spans that encode back to it
    offsets = [(i, i + 1) for i in range(3)]
    for seq in sequences:
        spans = [Span(offsets[a][0], offsets[b][1], tags.labels[label]) for a, b, label in tags.decode(seq, offsets)]
        again, unfit = tags.encode([Span(*s) for s in spans], offsets)
        assert tuple(again) == seq and not unfit


@pytest.mark.parametrize("bilou", [True, False])
def test_viterbi_and_marginals_match_brute_force(bilou: bool) -> None:
    tags = TagSet([Label("a"), Label("b")], bilou=bilou)
    rng = np.random.default_rng(0)
    learned = decoding.combine(
        decoding.allowed(tags),
        transitions=rng.normal(size=(len(tags), len(tags))),
        start=rng.normal(size=len(tags)),
        end=rng.normal(size=len(tags)),
    )
    scores = rng.normal(size=(2, 4, len(tags))).astype(np.float32)
    lengths = np.array([4, 3])
    paths = decoding.viterbi(scores, lengths, learned)
    probs = decoding.marginals(scores, lengths, learned)
    for row, n in enumerate(lengths):
        sequences = valid_sequences(tags, int(n), decoding.allowed(tags))
        weights = np.array([path_score(s, scores[row], learned) for s in sequences])
        assert tuple(paths[row, :n]) == sequences[int(weights.argmax())]
        assert (paths[row, n:] == 0).all()
        p = np.exp(weights - weights.max())
        p /= p.sum()
        brute = np.zeros((n, len(tags)))
        for w, s in zip(p, sequences):
            brute[np.arange(n), list(s)] += w
        np.testing.assert_allclose(probs[row, :n], brute, atol=1e-5)
        assert (probs[row, n:] == 0).all()


def test_decode_returns_the_path_and_its_confidences() -> None:
    tags = TagSet([Label("a")], bilou=True)
    scores = np.full((1, 3, len(tags)), -5.0, dtype=np.float32)
    scores[0, 0, tags.tag_id("B", 0)] = scores[0, 1, tags.tag_id("L", 0)] = 0.0
    scores[0, 2, 0] = 0.0
    path, confidence = decoding.decode(decoding.log_softmax(scores), np.array([3]), decoding.allowed(tags))
    assert [tags.tags[k] for k in path[0]] == ["B-0", "L-0", "O"]
    assert (confidence > 0.9).all() and (confidence <= 1.0).all()


def test_empty_rows_and_batches() -> None:
    tags = TagSet([Label("a")], bilou=False)
    model = decoding.allowed(tags)
    assert decoding.viterbi(np.zeros((0, 0, len(tags))), np.zeros(0), model).shape == (0, 0)
    path, confidence = decoding.decode(np.zeros((2, 3, len(tags))), np.array([0, 3]), model)
    assert (path[0] == 0).all() and (confidence[0] == 0).all()


def test_crf_likelihood_matches_brute_force() -> None:
    torch = pytest.importorskip("torch")
    from nlu_bert.bert.crf import CRF

    tags = TagSet([Label("a"), Label("b")], bilou=True)
    crf = CRF(decoding.allowed(tags))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.randn(p.shape, generator=generator))
    learned = crf.scores()
    emissions = torch.randn(2, 4, len(tags), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    sequences4 = valid_sequences(tags, 4, decoding.allowed(tags))
    sequences3 = valid_sequences(tags, 3, decoding.allowed(tags))
    gold = torch.tensor([list(sequences4[5]), list(sequences3[7]) + [0]])
    expected = []
    for row, n in enumerate((4, 3)):
        e = emissions[row].numpy()
        scores = [path_score(s, e, learned) for s in valid_sequences(tags, n, decoding.allowed(tags))]
        log_z = np.log(np.sum(np.exp(scores)))
        expected.append(log_z - path_score(tuple(gold[row, :n].tolist()), e, learned))
    assert crf.nll(emissions, gold, mask).item() == pytest.approx(np.mean(expected), abs=1e-4)
    # the learned scores are what Viterbi decodes with
    path = decoding.viterbi(emissions.numpy(), np.array([4, 3]), learned)
    best = max(sequences4, key=lambda s: path_score(s, emissions[0].numpy(), learned))
    assert tuple(path[0]) == best


def test_crf_trains_towards_the_gold_tags() -> None:
    torch = pytest.importorskip("torch")
    from nlu_bert.bert.crf import CRF

    tags = TagSet([Label("a")], bilou=True)
    crf = CRF(decoding.allowed(tags))
    emissions = torch.zeros(1, 3, len(tags), requires_grad=True)
    gold = torch.tensor([[tags.tag_id("B", 0), tags.tag_id("L", 0), 0]])
    optimizer = torch.optim.SGD([emissions, *crf.parameters()], lr=0.5)
    mask = torch.ones(1, 3, dtype=torch.bool)
    first = crf.nll(emissions, gold, mask).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = crf.nll(emissions, gold, mask)
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 5
    path = decoding.viterbi(emissions.detach().numpy(), np.array([3]), crf.scores())
    assert path[0].tolist() == gold[0].tolist()


@pytest.mark.parametrize("bilou", [True, False])
def test_the_structured_path_finds_the_same_sequences_as_the_dense_one(bilou: bool) -> None:
    tags = TagSet([Label(str(i)) for i in range(50)], bilou=bilou)
    assert len(tags) > decoding.STRUCTURED_ABOVE
    structured = decoding.allowed(tags)
    dense = decoding.Constraints(structured.start, structured.transitions, structured.end)
    scores = np.random.default_rng(1).normal(size=(8, 9, len(tags))).astype(np.float32)
    lengths = np.array([9, 8, 7, 1, 2, 9, 5, 0])
    expected = decoding.viterbi(scores, lengths, dense)
    np.testing.assert_array_equal(decoding.viterbi(scores, lengths, structured), expected)


def random_model(tags: TagSet, rng: np.random.Generator, crf: bool, scale: float = 1.0) -> decoding.Constraints:
    if not crf:
        return decoding.allowed(tags)
    k = len(tags)
    return decoding.combine(
        decoding.allowed(tags),
        transitions=rng.normal(scale=scale, size=(k, k)),
        start=rng.normal(scale=scale, size=k),
        end=rng.normal(scale=scale, size=k),
    )


@pytest.mark.parametrize("labels", [2, 30])  # 30 labels in BILOU: the structured step
@pytest.mark.parametrize("bilou", [True, False])
@pytest.mark.parametrize("crf", [True, False])
def test_the_row_decoder_gives_the_batch_decoders_paths_and_confidences(labels: int, bilou: bool, crf: bool) -> None:
    tags = TagSet([Label(str(i)) for i in range(labels)], bilou=bilou)
    rng = np.random.default_rng(labels + 2 * bilou + 4 * crf)
    model = random_model(tags, rng, crf)
    rows = decoding.RowDecoder(model)
    skipped = decoded = 0
    for _ in range(120):
        n = int(rng.integers(1, 12))
        scores = rng.normal(scale=3.0, size=(1, n, len(tags))).astype(np.float32)
        # from O everywhere (the usual message) to close calls between O and an entity
        scores[0, :, 0] += rng.choice([0.0, 2.0, 6.0, 12.0, 40.0])
        if not crf:
            scores = decoding.log_softmax(scores)
        expected = decoding.viterbi(scores, np.array([n]), model)[0]
        path, confidences = rows.decode(scores[0], crf=crf)
        np.testing.assert_array_equal(path, expected)
        if not expected.any():
            assert confidences is None
            skipped += rows.outside_wins(scores[0])
            continue
        decoded += 1
        if crf:
            reference = decoding.marginals(scores, np.array([n]), model)[0, np.arange(n), expected]
        else:
            reference = np.exp(scores[0, np.arange(n), expected])
        np.testing.assert_allclose(confidences, reference, rtol=1e-6, atol=1e-9)
    assert skipped and decoded  # both ways were taken


@pytest.mark.parametrize("bilou", [True, False])
def test_the_all_outside_shortcut_never_overrules_viterbi(bilou: bool) -> None:
    """Emissions where O only just wins (or just loses) at each token, with small CRF scores: the shortcut is taken
    only where Viterbi finds no entity."""
    tags = TagSet([Label("a"), Label("b")], bilou=bilou)
    rng = np.random.default_rng(7)
    taken = 0
    for _ in range(400):
        model = random_model(tags, rng, crf=True, scale=0.01)
        rows = decoding.RowDecoder(model)
        n = int(rng.integers(1, 20))
        scores = rng.normal(scale=0.01, size=(n, len(tags))).astype(np.float32)
        scores[:, 0] = scores[:, 1:].max(1) + rng.uniform(-0.01, 0.2, size=n).astype(np.float32)
        if rows.outside_wins(scores):
            taken += 1
            assert not decoding.viterbi(scores[None], np.array([n]), model)[0].any()
    assert 30 < taken < 400


def test_the_row_decoder_handles_one_token_and_one_tag() -> None:
    tags = TagSet([Label("a")], bilou=True)
    rows = decoding.RowDecoder(decoding.allowed(tags))
    scores = np.full((1, len(tags)), -5.0, dtype=np.float32)
    scores[0, tags.tag_id("U", 0)] = 0.0
    path, confidences = rows.decode(decoding.log_softmax(scores), crf=False)
    assert path.tolist() == [tags.tag_id("U", 0)] and confidences[0] > 0.9
    assert rows.decode(np.zeros((0, len(tags)), dtype=np.float32))[0].shape == (0,)
    only_outside = decoding.RowDecoder(decoding.allowed(TagSet([], bilou=True)))
    path, confidences = only_outside.decode(np.zeros((3, 1), dtype=np.float32))
    assert path.tolist() == [0, 0, 0] and confidences is None
