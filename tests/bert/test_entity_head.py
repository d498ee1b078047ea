"""The entity head (torch) against its numpy twin, the decoder every backend uses, and the training tags."""

from __future__ import annotations

import numpy as np
import pytest

from nlu_bert.bert import decoding
from nlu_bert.bert.entities import (
    EntityDecoder,
    EntitySpec,
    crf_arrays,
    numpy_tag_scores,
    positions_batch,
    training_tags,
)
from nlu_bert.bert.tagging import Label, TagSet

torch = pytest.importorskip("torch")

from nlu_bert.bert.entity_head import EntityHead  # noqa: E402


@pytest.mark.parametrize("tagger, buckets", [("crf", 97), ("softmax", 0)])
def test_numpy_head_matches_torch(tagger: str, buckets: int) -> None:
    tags = TagSet([Label("a"), Label("b", "r")], bilou=True)
    torch.manual_seed(0)
    head = EntityHead(16, len(tags), decoding.allowed(tags), tagger=tagger, ngram_buckets=buckets, ngram_dim=8).eval()
    hidden = torch.randn(2, 5, 16)
    ngram_ids = torch.randint(0, 97, (2, 5, 6)) if buckets else None
    with torch.no_grad():
        expected = head(hidden, ngram_ids).numpy()
    weights = {f"entities.{k}": v.numpy() for k, v in head.state_dict().items()}
    got = numpy_tag_scores(hidden.numpy(), weights, None if ngram_ids is None else ngram_ids.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)
    crf = crf_arrays(weights)
    assert (crf is None) == (tagger == "softmax")
    if crf is not None:
        np.testing.assert_allclose(crf["transitions"], head.crf.transitions.detach().numpy())


def test_head_needs_its_ngram_ids() -> None:
    tags = TagSet([Label("a")])
    head = EntityHead(8, len(tags), decoding.allowed(tags), ngram_buckets=10)
    with pytest.raises(ValueError, match="pass token_ngram_ids"):
        head(torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="tagger must be one of"):
        EntityHead(8, len(tags), decoding.allowed(tags), tagger="hmm")


@pytest.mark.parametrize("tagger", ["crf", "softmax"])
def test_the_loss_teaches_the_head_the_gold_tags(tagger: str) -> None:
    tags = TagSet([Label("a")], bilou=True)
    torch.manual_seed(0)
    head = EntityHead(8, len(tags), decoding.allowed(tags), tagger=tagger, dropout=0.0)
    hidden = torch.eye(8).reshape(2, 4, 8)  # eight distinguishable tokens
    offsets = [[(0, 0), (0, 1), (1, 2), (0, 0)], [(0, 0), (0, 1), (0, 0), (0, 0)]]
    positions, mask = positions_batch(offsets)
    gold = np.array([[tags.tag_id("B", 0), tags.tag_id("L", 0)], [tags.tag_id("U", 0), 0]])
    optimizer = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        loss = head.loss(head(hidden), torch.from_numpy(positions), torch.from_numpy(gold), torch.from_numpy(mask))
        loss.backward()
        optimizer.step()
    weights = {f"entities.{k}": v.detach().numpy() for k, v in head.state_dict().items()}
    spec = EntitySpec(tags, tagger=tagger, crf=crf_arrays(weights))
    decoder = EntityDecoder(EntitySpec.from_meta(spec.to_meta()))
    with torch.no_grad():
        scores = head.eval()(hidden).numpy()
    found = decoder.decode(["ab", "a"], offsets, scores, extractor="X")
    assert [[(e["start"], e["end"], e["value"]) for e in row] for row in found] == [[(0, 2, "ab")], [(0, 1, "a")]]
    assert all(0.5 < e["confidence_entity"] <= 1.0 and e["extractor"] == "X" for row in found for e in row)


def test_a_crf_spec_without_scores_is_refused() -> None:
    with pytest.raises(ValueError, match="needs its transition"):
        EntityDecoder(EntitySpec(TagSet([Label("a")]), tagger="crf"))
    with pytest.raises(ValueError, match="do not fit 3 tags"):
        EntityDecoder(
            EntitySpec(TagSet([Label("a")], bilou=False), crf={k: np.zeros(2) for k in ("transitions", "start", "end")})
        )


def test_spec_round_trips_through_meta() -> None:
    spec = EntitySpec(TagSet([Label("city", "from")], bilou=False), tagger="softmax", ngram_buckets=100, ngram_dim=8)
    again = EntitySpec.from_meta(spec.to_meta())
    assert again.to_meta() == spec.to_meta()
    ids = again.token_ngram_ids(["ab"], [[(0, 0), (0, 1), (1, 2)]], width=4)
    assert ids.shape == (1, 4, len(spec.templates)) and (ids[0, 1:3] > 0).all()
    assert EntitySpec(TagSet([Label("a")])).token_ngram_ids(["a"], [[(0, 1)]], 1) is None


def test_training_tags_report_each_problem_with_its_example() -> None:
    texts = ["从北京到上海", "买三本", "x"]
    annotations = [
        [
            {"entity": "city", "start": 1, "end": 3, "value": "北京", "role": "from"},
            {"entity": "city", "start": 4, "end": 6, "value": "上海", "role": "to"},
        ],
        [{"entity": "count", "start": 1, "end": 2}, {"entity": "count", "start": 9, "end": 12}],
        [],
    ]
    offsets = [[(0, 0)] + [(i, i + 1) for i in range(len(t))] + [(0, 0)] for t in texts]
    offsets[1] = offsets[1][:2]  # "买三本" cut to one token by max_length
    data = training_tags(texts, annotations, offsets, bilou=True)
    assert [label.describe() for label in data.tags.labels] == ["city#from", "city#to", "count"]
    assert data.entities == 2
    assert len(data.problems) == 2
    assert any("outside the text" in p and "'买三本'" in p for p in data.problems)
    assert any("max_length" in p and "'买三本'" in p for p in data.problems)
    positions, mask = positions_batch(offsets)
    gold = data.tags_batch([0, 1, 2], positions, mask)
    names = data.tags.tag_names()
    assert [names[t] for t in gold[0, :6]] == ["O", "B-city#from", "L-city#from", "O", "B-city#to", "L-city#to"]
    assert (gold[1] == 0).all() and (gold[2] == 0).all()
