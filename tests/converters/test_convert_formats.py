"""Each format on small fixtures written in the source's shape: split sizes and annotated examples,
as read back from the written YAML by Rasa's own loader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import openpyxl
import pytest

from nlu_bert.converters import FORMATS, ConversionError, ReadOptions, convert

from convert_helpers import EntityTriple, entity_triples, fixture, read_back, run_convert

Expected = Tuple[str, str, str, List[EntityTriple]]  # split, text, intent, entities

CASES = [
    # id, format, inputs, options, examples per split, examples that must be there
    (
        "smp2017-txt",
        "smp2017",
        ["smp2017/Task1data"],
        {},
        {"train": 6, "dev": 2, "test": 2},
        [
            ("train", "今天杭州天气怎么样", "weather", []),
            ("dev", "打开 音乐播放器", "app", []),  # a tab inside the line becomes a space
            ("test", "打开日历", "app", []),
        ],
    ),
    (
        "smp2017-data.json",
        "smp2017",
        ["smp2017/data.json"],
        {},
        {"train": 2, "dev": 1},
        [
            ("train", "打开相机", "app", []),
            ("dev", "这周末天气好吗", "weather", []),
        ],
    ),
    (
        "smp2019-official",
        "smp2019",
        ["smp2019/train.json"],
        {},
        {"train": 6},
        [
            (
                "train",
                "从广州到上海的火车票",
                "train.QUERY",
                [("上海", "endLoc_city", "上海"), ("广州", "startLoc_city", "广州")],
            ),
            # the longer value is placed first, so 上海 goes to the free occurrence
            (
                "train",
                "上海到上海南站的火车",
                "train.QUERY",
                [("上海", "startLoc_city", "上海"), ("上海南站", "endLoc_poi", "上海南站")],
            ),
            ("train", "讲个笑话吧", "joke.QUERY", []),
        ],
    ),
    (
        "smp2019-splits",
        "smp2019",
        ["smp2019"],
        {},
        {"train": 4, "dev": 1, "test": 1},
        [
            ("train", "帮我打开微信", "app.LAUNCH", [("微信", "name", "微信")]),
            ("test", "打开淘宝看看", "app.LAUNCH", [("淘宝", "name", "淘宝")]),
        ],
    ),
    (
        "cais",
        "cais",
        ["cais"],
        {},
        {"train": 5, "dev": 1, "test": 2},
        [
            (
                "train",
                "我想听林俊杰的江南",
                "play_song",
                [("林俊杰", "singer_name", "林俊杰"), ("江南", "song_name", "江南")],
            ),
            ("train", "播放let it go", "play_song", [("let it go", "song_name", "let it go")]),  # space tokens
            ("train", "来首歌", "play_song", [("歌", "song_type", "歌")]),  # S- tag
            ("dev", "上海后天天气", "ask_weather", [("上海", "location", "上海"), ("后天", "date", "后天")]),
            ("test", "今天几号", "ask_date", []),
        ],
    ),
    (
        "nlpcc2018",
        "nlpcc2018",
        ["nlpcc2018/corpus.train.txt"],
        {},
        {"train": 8},
        [
            ("train", "来一首刘德华的冰雨", "music.play", [("冰雨", "song", "冰雨"), ("刘德华", "singer", "刘德华")]),
            ("train", "播放华仔唱的忘情水", "music.play", [("华仔", "singer", "刘德华"), ("忘情水", "song", "忘情水")]),
            ("train", "取消", "music.pause", []),
            ("train", "取消", "navigation.cancel_navigation", []),
        ],
    ),
    (
        "crosswoz",
        "crosswoz",
        ["crosswoz"],
        {},
        {"train": 6, "test": 2},
        [
            ("train", "你好，帮我找一个门票免费的景点。", "request_attraction", [("免费", "景点-门票", "免费")]),
            ("train", "就去西湖公园吧，它的地址在哪？", "request_attraction", []),
            ("train", "谢谢，再见。", "thank", []),
            (
                "train",
                "我想住一家评分4分以上、有叫醒服务的酒店。",
                "inform_hotel",
                [("4分以上", "酒店-评分", "4分以上")],
            ),
            ("train", "价格便宜点的酒店和饭店都行。", "inform_restaurant", []),
            (
                "test",
                "从西湖公园坐地铁去火车东站怎么走？",
                "request_metro",
                [("火车东站", "地铁-目的地", "火车东站"), ("西湖公园", "地铁-出发地", "西湖公园")],
            ),
        ],
    ),
    (
        "crosswoz-multi",
        "crosswoz",
        ["crosswoz"],
        {"label_rule": "multi"},
        {"train": 6, "test": 2},
        [
            (
                "train",
                "你好，帮我找一个门票免费的景点。",
                "greet+inform_attraction+request_attraction",
                [("免费", "景点-门票", "免费")],
            ),
            ("train", "谢谢，再见。", "bye+thank", []),
        ],
    ),
    (
        "massive-copy",
        "massive",
        ["massive/zh_cn_copy.jsonl"],
        {},
        {"train": 3, "dev": 1, "test": 1},
        [
            ("train", "声音再小一点", "音量_其他", []),
            ("dev", "周日会不会下雪", "天气查询", []),
        ],
    ),
    (
        "massive-copy-label-map",
        "massive",
        ["massive/zh_cn_copy.jsonl"],
        {"label_map": {"报警器": "alarm_set", "音量 其他": "audio_volume_other", "天气查询": "weather_query"}},
        {"train": 3, "dev": 1, "test": 1},
        [
            ("train", "把闹钟设在六点半", "alarm_set", []),
            ("test", "下午出门要带伞吗", "weather_query", []),
        ],
    ),
    (
        "massive-official",
        "massive",
        ["massive/official.jsonl"],
        {},
        {"train": 1, "dev": 1, "test": 1},
        [
            ("train", "明早七点叫我起床", "alarm_set", [("七点", "time", "七点"), ("明早", "date", "明早")]),
            ("dev", "周日杭州会不会下雪", "weather_query", [("周日", "date", "周日"), ("杭州", "place_name", "杭州")]),
            ("test", "下午要带伞吗", "weather_query", []),  # "下 午" is not in the text: entity dropped
        ],
    ),
    (
        "few-shot-intent-sft",
        "few-shot-intent-sft",
        ["few_shot_intent_sft/prompts.jsonl"],
        {},
        {"train": 2, "test": 1},
        [
            ("train", "把卧室的灯打开", "开灯", []),  # also the full-width-colon row: label from `intent`, deduplicated
            ("train", "后天冷不冷", "查天气", []),
            ("test", "帮我订一张机票", "订机票", []),  # not applicable in its prompt, but `intent` is the true label
        ],
    ),
    (
        "csv",
        "csv",
        ["generic/reviews.csv"],
        {},
        {"train": 5},
        [
            ("train", "物流很快,包装也好", "好评", []),
            ("train", "客服态度不错 下次还来", "好评", []),  # quoted field over two lines
        ],
    ),
    (
        "tsv",
        "tsv",
        ["generic/intents.tsv"],
        {},
        {"train": 4},
        [
            ("train", '帮我查一下"余额', "查余额", []),  # an unbalanced quote stays text
        ],
    ),
    (
        "json",
        "json",
        ["generic/records.json"],
        {},
        {"train": 5},
        [
            ("train", "订单到哪了", "order_status", []),  # `order/status` renamed
            ("train", "[急]订单还没发货", "order_status", []),  # brackets Rasa reads back as text are kept
            ("train", "订单［加急］(今天)能到吗", "order_status", []),  # `[x](y)` would be an entity: full-width
        ],
    ),
    (
        "jsonl",
        "jsonl",
        ["generic/records.jsonl"],
        {},
        {"train": 3, "test": 2},
        [
            ("train", "您好呀", "greet", []),
            ("test", "拜拜", "bye", []),
        ],
    ),
]


@pytest.mark.parametrize("fmt, inputs, options, sizes, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_format_converts_fixture(
    tmp_path: Path,
    fmt: str,
    inputs: List[str],
    options: Dict[str, object],
    sizes: Dict[str, int],
    expected: List[Expected],
) -> None:
    dataset = run_convert(fmt, [fixture(p) for p in inputs], tmp_path / "out", **options)

    assert {split: len(found) for split, found in dataset.splits.items()} == sizes
    assert dataset.report.verified
    loaded = {split: entity_triples(read_back(tmp_path / "out" / f"{split}.yml")) for split in sizes}
    for split, text, intent, entities in expected:
        assert loaded[split].get((text, intent)) == sorted(entities), (split, text, intent)


def test_every_registered_format_has_a_fixture_case() -> None:
    covered = {case[1] for case in CASES} | {"xlsx"}  # xlsx is built below, not committed as a binary
    assert covered == set(FORMATS)


def test_xlsx_sentence_label_sheet(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "标注"
    for row in [
        ("Sentence", "Label", "备注"),
        ("帮我订明天的会议室", "book room", None),
        (None, None, None),
        ("会议室还有空吗", "query/room", "x"),
        (12345, "number", None),
    ]:
        sheet.append(row)
    workbook.save(tmp_path / "sheet.xlsx")

    dataset = run_convert("xlsx", [tmp_path / "sheet.xlsx"], tmp_path / "nlu.yml")

    assert entity_triples(read_back(tmp_path / "nlu.yml")) == {
        ("帮我订明天的会议室", "book_room"): [],
        ("会议室还有空吗", "query_room"): [],
        ("12345", "number"): [],
    }
    assert dataset.report.renamed_intents == {"book room": "book_room", "query/room": "query_room"}


def test_nlpcc_synonyms_and_lookup_tables_reach_rasa(tmp_path: Path) -> None:
    run_convert("nlpcc2018", [fixture("nlpcc2018")], tmp_path / "nlu.yml")

    data = read_back(tmp_path / "nlu.yml")
    assert data.entity_synonyms == {"华仔": "刘德华"}
    assert {t["name"]: t["elements"] for t in data.lookup_tables} == {
        "singer": ["刘德华", "周杰伦"],
        "song": ["冰雨", "忘情水", "稻香"],
    }


def test_no_lookups_option_skips_shipped_dictionaries(tmp_path: Path) -> None:
    dataset = run_convert("smp2019", [fixture("smp2019")], tmp_path / "out", lookups=False)

    assert dataset.lookups == {}
    assert read_back(tmp_path / "out" / "train.yml").lookup_tables == []


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"no_header": True}, {("你好", "greet"): [], ("再见", "bye"): []}),
        ({"no_header": True, "text_field": "3", "label_field": "2"}, {("早上好", "greet"): [], ("回头见", "bye"): []}),
    ],
)
def test_no_header_fields_are_column_numbers(
    tmp_path: Path, options: Dict[str, object], expected: Dict[tuple, list]
) -> None:
    (tmp_path / "a.tsv").write_text("你好\tgreet\t早上好\n再见\tbye\t回头见\n", encoding="utf-8")

    run_convert("tsv", [tmp_path / "a.tsv"], tmp_path / "out.yml", **options)

    assert entity_triples(read_back(tmp_path / "out.yml")) == expected


def test_xlsx_sheet_option(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(("text", "label"))
    workbook.active.append(("封面", "cover"))
    second = workbook.create_sheet("训练")
    for row in [("text", "label"), ("查天气", "weather")]:
        second.append(row)
    workbook.save(tmp_path / "s.xlsx")

    run_convert("xlsx", [tmp_path / "s.xlsx"], tmp_path / "out.yml", sheet="训练")
    assert entity_triples(read_back(tmp_path / "out.yml")) == {("查天气", "weather"): []}
    with pytest.raises(
        ConversionError, match=re.escape("no sheet '测试'; the sheets are ['Sheet', '训练']. Check --sheet.")
    ):
        run_convert("xlsx", [tmp_path / "s.xlsx"], tmp_path / "out.yml", sheet="测试")


def test_extra_lookup_tables(tmp_path: Path) -> None:
    (tmp_path / "city.txt").write_text("北京\n上海\n\n北京\n", encoding="utf-8")

    convert(
        "jsonl",
        [fixture("generic", "records.jsonl")],
        tmp_path / "out",
        ReadOptions(progress=False),
        lookup_paths=[tmp_path / "city.txt"],
    )

    assert read_back(tmp_path / "out" / "train.yml").lookup_tables == [{"name": "city", "elements": ["北京", "上海"]}]


def test_forced_encoding(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes("text,label\n你好,greet\n".encode("big5"))

    run_convert("csv", [tmp_path / "a.csv"], tmp_path / "out.yml", encoding="big5")

    assert entity_triples(read_back(tmp_path / "out.yml")) == {("你好", "greet"): []}
    with pytest.raises(ConversionError, match="unknown encoding 'klingon'; pass a Python codec name to --encoding"):
        run_convert("csv", [tmp_path / "a.csv"], tmp_path / "out.yml", encoding="klingon")


def test_smp2019_split_files_alone_find_the_official_file_one_folder_up(tmp_path: Path) -> None:
    dataset = run_convert("smp2019", [fixture("smp2019", "split")], tmp_path / "out")

    assert {split: len(found) for split, found in dataset.splits.items()} == {"train": 4, "dev": 1, "test": 1}
    assert any("domains and slots read from" in note for note in dataset.report.notes)
