"""The pure parsing functions of each format module, as tables."""

from __future__ import annotations

from typing import List, Optional, Tuple

import pytest

from nlu_bert.converters.base import (
    ConversionError,
    Entity,
    Example,
    canonical_split,
    decode_bytes,
    locate_entities,
    normalise_name,
    progress,
)
from nlu_bert.converters.cais import bioes_entities, parse_conll
from nlu_bert.converters.crosswoz import inform_slots, intent_of
from nlu_bert.converters.few_shot_intent_sft import user_text
from nlu_bert.converters.nlpcc2018 import parse_tagged
from nlu_bert.converters.pipeline import clean_example
from nlu_bert.converters.records import iter_json_records
from nlu_bert.converters.yaml_writer import annotate, escape_for_rasa, reads_back


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["O", "B-singer", "I-singer", "E-singer", "O"], [(1, 4, "singer")]),
        (["S-date", "O", "B-song", "E-song"], [(0, 1, "date"), (2, 4, "song")]),
        (["O", "O"], []),
    ],
)
def test_bioes_entities(tags: List[str], spans: List[Tuple[int, int, str]]) -> None:
    assert [(e.start, e.end, e.entity) for e in bioes_entities(tags)] == spans


@pytest.mark.parametrize(
    "tags, message",
    [
        (["B-song", "O"], "entity song opened at character 1 is not closed with E-"),
        (["O", "I-song", "E-song"], "tag 'I-song' at character 2 has no B-song before it"),
        (["B-song", "E-singer"], "tag 'E-singer' at character 2 does not continue B-song"),
        (["B-song", "I-song"], "entity song opened at character 1 is not closed with E-"),
        (["X-song"], "unknown tag 'X-song' at character 1"),
        (["B-"], "tag 'B-' at character 1 has no entity type"),
    ],
)
def test_bioes_entities_rejects_broken_sequences(tags: List[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bioes_entities(tags)


def test_parse_conll_keeps_space_characters_and_flags_malformed_lines() -> None:
    utterances = parse_conll("a O\n  I-x\nb\n\nc O\n", "f")
    assert utterances == [("f:1", [(1, "a", "O"), (2, " ", "I-x"), (3, "b", None)]), ("f:5", [(5, "c", "O")])]


@pytest.mark.parametrize(
    "annotated, text, entities",
    [
        (
            "来一首<singer>周华健</singer>的<song>花心</song>",
            "来一首周华健的花心",
            [Entity(3, 6, "singer", "周华健"), Entity(7, 9, "song", "花心")],
        ),
        ("再来一个<singer>菲菲||云菲菲</singer>唱的", "再来一个菲菲唱的", [Entity(4, 6, "singer", "云菲菲")]),
        ("取消", "取消", []),
        ("打给<phone_num>10086</phone_num>", "打给10086", [Entity(2, 7, "phone_num", "10086")]),
    ],
)
def test_parse_tagged(annotated: str, text: str, entities: List[Entity]) -> None:
    assert parse_tagged(annotated) == (text, entities)


@pytest.mark.parametrize(
    "annotated, message",
    [
        ("到<destination>西湖", "unbalanced tag '<destination>'"),
        ("到<a>x</b>", "unbalanced tag '<a>'"),
        ("<song>a||b||c</song>", "should hold 'value' or 'surface||canonical'"),
        ("<song></song>", "should hold 'value' or 'surface||canonical'"),
    ],
)
def test_parse_tagged_rejects(annotated: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tagged(annotated)


HEAD = (
    "小样本意图识别。如果不确定，输出 “不知道”。\n\nExamples:\n------------\ntext: 打开灯\nintent: 开灯\n------------\n"
)


@pytest.mark.parametrize(
    "prompt, text",
    [
        (HEAD + "text: 把灯关了\nintent:", "把灯关了"),
        (HEAD + "text: 把灯关了\nintent: \n\n", "把灯关了"),
        (HEAD + "text：把灯关了\nintent：", "把灯关了"),  # full-width colons
        (HEAD + "text: 第一行\n第二行\nintent:", "第一行 第二行"),
        (HEAD + "text: a\u2028b\nintent:", "a\u2028b"),  # U+2028 is not a line break here
        (HEAD + "text: 把灯关了\nintent: 关灯", None),  # already answered: not a prompt
        ("没有例子\nintent:", None),
        (HEAD + "intent:", None),  # no text after the last example block
        ("text: 打开灯\n------------\nintent:", None),
    ],
)
def test_user_text(prompt: str, text: Optional[str]) -> None:
    assert user_text(prompt) == text


@pytest.mark.parametrize(
    "acts, primary, multi",
    [
        (
            [
                ("General", "greet", "none", "none"),
                ("Inform", "餐馆", "人均消费", "100元"),
                ("Request", "餐馆", "名称", ""),
            ],
            "request_restaurant",
            "greet+inform_restaurant+request_restaurant",
        ),
        (
            [("Select", "酒店", "名称", "如意"), ("Inform", "酒店", "价格", "1")],
            "select_hotel",
            "inform_hotel+select_hotel",
        ),
        (
            [("Inform", "酒店", "价格", "1"), ("Inform", "餐馆", "名称", "a"), ("Inform", "餐馆", "评分", "5分")],
            "inform_restaurant",
            "inform_hotel+inform_restaurant",
        ),
        ([("Request", "地铁", "x", ""), ("Request", "出租", "y", "")], "request_metro", "request_metro+request_taxi"),
        ([("General", "thank", "none", "none"), ("General", "bye", "none", "none")], "thank", "bye+thank"),
        ([], None, None),
    ],
)
def test_crosswoz_intent_rule(
    acts: List[Tuple[str, str, str, str]], primary: Optional[str], multi: Optional[str]
) -> None:
    assert intent_of(acts, "primary") == primary
    assert intent_of(acts, "multi") == multi


def test_crosswoz_inform_slots_skip_flags_and_empty_values() -> None:
    acts = [
        ("Inform", "酒店", "酒店设施-叫醒服务", "是"),
        ("Inform", "酒店", "评分", "4分以上"),
        ("Request", "酒店", "名称", ""),
        ("Inform", "景点", "名称", ""),
    ]
    assert inform_slots(acts) == [("酒店-评分", "4分以上")]


@pytest.mark.parametrize(
    "text, slots, entities, missed",
    [
        (
            "从北京到上海",
            [("from", "北京"), ("to", "上海")],
            [Entity(1, 3, "from", "北京"), Entity(4, 6, "to", "上海")],
            [],
        ),
        (
            "上海到上海南站",
            [("from", "上海"), ("to", "上海南站")],
            [Entity(0, 2, "from", "上海"), Entity(3, 7, "to", "上海南站")],
            [],
        ),
        ("北京北京", [("a", "北京"), ("b", "北京")], [Entity(0, 2, "a", "北京"), Entity(2, 4, "b", "北京")], []),
        (
            "看周杰伦",
            [("song", "周杰伦"), ("singer", "杰伦")],
            [Entity(1, 4, "song", "周杰伦")],
            [("singer", "杰伦", "overlaps another entity")],
        ),
        ("你好", [("x", "再见"), ("y", "")], [], [("x", "再见", "value not in text"), ("y", "", "empty value")]),
    ],
)
def test_locate_entities(
    text: str, slots: List[Tuple[str, str]], entities: List[Entity], missed: List[Tuple[str, str, str]]
) -> None:
    assert locate_entities(text, slots) == (entities, missed)


@pytest.mark.parametrize(
    "raw, name",
    [
        ("肯定(好的)", "肯定_好的"),
        ("audio/volume up", "audio_volume_up"),
        ("music.play", "music.play"),
        ("greet+inform_hotel", "greet+inform_hotel"),
        ("  a {b} @c  ", "a_b_c"),
        ("音量 其他", "音量_其他"),
    ],
)
def test_normalise_name(raw: str, name: str) -> None:
    assert normalise_name(raw) == name


@pytest.mark.parametrize(
    "raw, text",
    [
        ("\ufeff你好".encode("utf-8"), "你好"),
        ("你好\r\n再见\r\n".encode("utf-8"), "你好\n再见\n"),
        ("你好\r再见".encode("gbk"), "你好\n再见"),
        ("你好".encode("utf-16"), "你好"),
    ],
)
def test_decode_bytes(raw: bytes, text: str) -> None:
    assert decode_bytes(raw, "f") == text


@pytest.mark.parametrize(
    "name, split",
    [
        ("develop", "dev"),
        ("Validation", "dev"),
        ("valid", "dev"),
        ("train", "train"),
        ("test", "test"),
        ("other", None),
    ],
)
def test_canonical_split(name: str, split: Optional[str]) -> None:
    assert canonical_split(name) == split


@pytest.mark.parametrize(
    "text, records",
    [
        (
            '[{"a": 1},\n {"a": 2}]\n{"0": {"a": 3},\n "1": {"a": 4}}{"a": 5}',
            [(0, 1, {"a": 1}), (0, 2, {"a": 2}), (1, 3, {"a": 3}), (1, 4, {"a": 4}), (2, 4, {"a": 5})],
        ),
        # SMP2017's data.json: the develop object nested in the train object without a key
        (
            '{\r\n "0": {"a": 1},\r\n "1": {"a": 2},\r\n {\r\n "0": {"a": 3}\r\n }\r\n}',
            [(0, 2, {"a": 1}), (0, 3, {"a": 2}), (1, 5, {"a": 3})],
        ),
    ],
)
def test_json_records(text: str, records: List[Tuple[int, int, dict]]) -> None:
    assert list(iter_json_records(text, "f")) == records


@pytest.mark.parametrize("text, line", [('[\n{"a": 1},\n{"a": }\n]', 3), ('{"0": {"a": 1},\n "1" {"a": 2}}', 2)])
def test_json_records_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ConversionError, match=rf"^f:{line}: not valid JSON"):
        list(iter_json_records(text, "f"))


@pytest.mark.parametrize(
    "text, entities, clean, clean_entities",
    [
        (
            " 播放\t周杰伦 的\u2028歌 ",
            [Entity(4, 7, "singer", "周杰伦")],
            "播放 周杰伦 的 歌",
            [Entity(3, 6, "singer", "周杰伦")],
        ),
        ("啥呀\t0\ue415", [], "啥呀 0\ue415", []),
        ("a\x00b\ufeffc", [Entity(0, 5, "x", "a\x00b\ufeffc")], "abc", [Entity(0, 3, "x", "abc")]),
        ("放 let  it go", [Entity(2, 12, "song", "let  it go")], "放 let it go", [Entity(2, 11, "song", "let it go")]),
        ("听  华仔", [Entity(3, 5, "singer", "刘德华")], "听 华仔", [Entity(2, 4, "singer", "刘德华")]),  # synonym kept
    ],
)
def test_clean_example_moves_entities(
    text: str, entities: List[Entity], clean: str, clean_entities: List[Entity]
) -> None:
    example, lost = clean_example(Example(text, "i", tuple(entities)))
    assert (example.text, list(example.entities), lost) == (clean, clean_entities, 0)


@pytest.mark.parametrize(
    "example, line",
    [
        (Example("听周杰伦", "i", (Entity(1, 4, "singer", "周杰伦"),)), "听[周杰伦](singer)"),
        (
            Example("听华仔", "i", (Entity(1, 3, "singer", "刘德华"),)),
            '听[华仔]{"entity": "singer", "value": "刘德华"}',
        ),
        (Example("a[b]c", "i"), "a[b]c"),
    ],
)
def test_annotate(example: Example, line: str) -> None:
    assert annotate(example) == line
    assert reads_back(example)


@pytest.mark.parametrize(
    "text, entities, escaped",
    [
        ("看[新闻](今天)", [], "看［新闻］(今天)"),
        ("[a][b]", [], "［a］［b］"),
        ("[急] 订单", [Entity(4, 6, "x", "订单")], "[急] 订单"),  # Rasa reads this back: kept
        ("[急]订单", [Entity(3, 5, "x", "订单")], "［急］订单"),  # "[急][订单](x)" would be one list entity
        ("买[苹果]", [Entity(2, 4, "fruit", "{apple}")], "买［苹果］"),
    ],
)
def test_escape_for_rasa(text: str, entities: List[Entity], escaped: str) -> None:
    example = escape_for_rasa(Example(text, "i", tuple(entities)))
    assert example.text == escaped
    assert reads_back(example)


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    rows = [1, 2, 3]
    assert progress(rows, "rows") is rows  # pytest captures stderr: not a TTY
