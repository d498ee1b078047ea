"""Rasa entity annotations <-> BIO / BILOU tags over tokenizer offsets (nlu_bert.bert.tagging)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu_bert.bert.tagging import Label, Span, TagSet, check_annotation, trim_offsets, usable_spans

CHARS = [(i, i + 1) for i in range(20)]


def spans_of(text: str, *parts: tuple) -> list:
    """Spans from (substring, entity[, role, group]) pairs, found in ``text``."""
    out = []
    for part in parts:
        start = text.index(part[0])
        out.append(Span(start, start + len(part[0]), Label(*part[1:])))
    return out


@pytest.mark.parametrize("bilou", [True, False])
def test_encode_then_decode_gives_the_spans_back(bilou: bool) -> None:
    text = "从北京到上海的票两张"
    spans = spans_of(text, ("北京", "city", "from"), ("上海", "city", "to"), ("两", "count"))
    tags = TagSet.from_spans(spans, bilou=bilou)
    ids, unfit = tags.encode(spans, CHARS[: len(text)])
    assert not unfit
    names = [tags.tag_names()[i] for i in ids]
    if bilou:
        assert names[:9] == ["O", "B-city#from", "L-city#from", "O", "B-city#to", "L-city#to", "O", "O", "U-count"]
    else:
        assert names[:9] == ["O", "B-city#from", "I-city#from", "O", "B-city#to", "I-city#to", "O", "O", "B-count"]
    entities = tags.entities(text, ids, CHARS[: len(text)], confidences=[0.9] * len(text), extractor="X")
    assert entities == [
        {
            "entity": "city",
            "start": 1,
            "end": 3,
            "value": "北京",
            "confidence_entity": 0.9,
            "role": "from",
            "extractor": "X",
        },
        {
            "entity": "city",
            "start": 4,
            "end": 6,
            "value": "上海",
            "confidence_entity": 0.9,
            "role": "to",
            "extractor": "X",
        },
        {"entity": "count", "start": 8, "end": 9, "value": "两", "confidence_entity": 0.9, "extractor": "X"},
    ]


def test_adjacent_entities_of_one_label_stay_apart() -> None:
    tags = TagSet([Label("x")], bilou=True)
    spans = [Span(0, 2, Label("x")), Span(2, 3, Label("x"))]
    ids, _ = tags.encode(spans, CHARS[:4])
    assert [(a, b) for a, b, _ in tags.decode(ids, CHARS[:4])] == [(0, 1), (2, 2)]


def test_decode_is_lenient_with_sequences_a_constrained_decoder_never_gives() -> None:
    tags = TagSet([Label("x"), Label("y")], bilou=True)
    i_x, l_y = tags.tag_id("I", 0), tags.tag_id("L", 1)
    # an I without a B starts an entity; a change of label closes the open one
    assert tags.decode([i_x, i_x, l_y, 0], CHARS[:4]) == [(0, 1, 0), (2, 2, 1)]


def test_the_confidence_of_an_entity_is_its_least_sure_token() -> None:
    tags = TagSet([Label("x")], bilou=False)
    ids = [tags.tag_id("B", 0), tags.tag_id("I", 0), 0]
    (entity,) = tags.entities("abc", ids, CHARS[:3], confidences=[0.9, 0.6, 0.99])
    assert entity["confidence_entity"] == pytest.approx(0.6)


def test_special_tokens_and_padding_are_skipped() -> None:
    tags = TagSet([Label("x")], bilou=True)
    offsets = [(0, 0), (0, 1), (1, 2), (0, 0), (0, 0)]
    ids, unfit = tags.encode([Span(0, 2, Label("x"))], offsets)
    assert ids == [0, tags.tag_id("B", 0), tags.tag_id("L", 0), 0, 0] and not unfit
    assert tags.entities("ab", ids, offsets) == [{"entity": "x", "start": 0, "end": 2, "value": "ab"}]


def test_an_entity_inside_a_token_is_widened_and_reported() -> None:
    tags = TagSet([Label("x")], bilou=True)
    offsets = [(0, 6), (7, 9)]  # "iphone 14" as two tokens
    ids, unfit = tags.encode([Span(1, 6, Label("x"))], offsets)
    assert ids[0] == tags.tag_id("U", 0)
    assert "learnt as 0..6" in unfit[0][1]


def test_an_entity_beyond_max_length_is_left_out() -> None:
    tags = TagSet([Label("x")], bilou=True)
    ids, unfit = tags.encode([Span(5, 7, Label("x"))], CHARS[:3])
    assert ids == [0, 0, 0] and "max_length" in unfit[0][1]


@pytest.mark.parametrize(
    "entity, reason",
    [
        ({"entity": "x", "start": 2, "end": 2}, "empty or outside"),
        ({"entity": "x", "start": 3, "end": 99}, "empty or outside"),
        ({"entity": "x", "start": -1, "end": 2}, "empty or outside"),
        ({"entity": "x", "start": "1", "end": 2}, "no integer start and end"),
        ({"entity": "", "start": 0, "end": 2}, "no name"),
        ({"entity": "x", "start": 4, "end": 5}, "only whitespace"),
    ],
)
def test_bad_annotations_say_why(entity: dict, reason: str) -> None:
    span, why = check_annotation("买三本书 ok", entity)
    assert span is None and reason in why


def test_whitespace_at_the_ends_of_an_annotation_is_trimmed() -> None:
    span, why = check_annotation("买 iPhone 14 吧", {"entity": "product", "start": 1, "end": 12})
    assert why is None and (span.start, span.end) == (2, 11)


def test_overlapping_annotations_keep_the_longest_and_name_the_example() -> None:
    text = "我要北京烤鸭"
    spans, problems = usable_spans(
        text,
        [
            {"entity": "city", "start": 2, "end": 4, "value": "北京"},
            {"entity": "dish", "start": 2, "end": 6, "value": "北京烤鸭"},
            {"entity": "dish", "start": 2, "end": 6, "value": "北京烤鸭"},  # a duplicate is no problem
        ],
    )
    assert spans == [Span(2, 6, Label("dish"))]
    assert len(problems) == 1
    assert "overlaps the entity 'dish' at 2..6" in problems[0].describe()
    assert "'我要北京烤鸭'" in problems[0].describe() and "'city'" in problems[0].describe()


def test_tag_set_round_trips_through_json() -> None:
    tags = TagSet([Label("city", "from", None), Label("count", None, "1")], bilou=False)
    again = TagSet.from_dict(tags.to_dict())
    assert again.tags == tags.tags and again.labels == tags.labels and again.bilou is False
    with pytest.raises(ValueError, match="unknown tag scheme 'IOB2'"):
        TagSet.from_dict({"scheme": "IOB2", "labels": []})


MIXED = "买2件 iPhone 15 Pro，送到ＡＢＣ１２３号😀北京🙂"


@pytest.fixture(scope="module")
def scratch_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from nlu_bert import vocab

    return vocab.make_tokenizer(vocab.build_char_vocab([MIXED]), Path(tmp_path_factory.mktemp("vocab")))


@pytest.mark.parametrize("value", ["2", "iPhone 15 Pro", "北京", "件", "Pro"])
def test_offsets_in_mixed_scripts_are_exact_with_a_real_tokenizer(scratch_tokenizer, value: str) -> None:
    text = MIXED
    start = text.index(value)
    span = Span(start, start + len(value), Label("thing"))
    offsets = [tuple(o) for o in scratch_tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]
    tags = TagSet([span.label], bilou=True)
    ids, unfit = tags.encode([span], offsets)
    assert not unfit
    (entity,) = tags.entities(text, ids, offsets)
    assert (entity["start"], entity["end"], entity["value"]) == (start, start + len(value), value)


@pytest.mark.parametrize(
    "text, offsets, expected",
    [
        # SentencePiece-style pieces that carry the space before them; a piece of whitespace alone
        (
            "买 Pro 耳机",
            [(0, 0), (0, 1), (1, 5), (5, 6), (6, 8), (0, 0)],
            [(0, 0), (0, 1), (2, 5), (0, 0), (6, 8), (0, 0)],
        ),
        ("买\u3000耳机", [(0, 1), (1, 3), (3, 4)], [(0, 1), (2, 3), (3, 4)]),  # an ideographic space
        # no whitespace: the offsets as they are, empty ones (special tokens, padding) as (0, 0)
        (
            "蓝牙耳机",
            [(0, 0), (0, 1), (1, 2), (2, 4), (4, 4), (0, 0)],
            [(0, 0), (0, 1), (1, 2), (2, 4), (0, 0), (0, 0)],
        ),
    ],
)
def test_trim_offsets_drops_whitespace_from_tokens(text: str, offsets: list, expected: list) -> None:
    assert trim_offsets(text, offsets) == expected
