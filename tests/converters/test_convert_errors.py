"""Bad input: malformed rows name file and line (or are skipped and counted with --skip-bad),
encodings, CRLF, empty files and unknown formats give clear messages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict

import openpyxl
import pytest

from nlu_bert.converters import ConversionError

from convert_helpers import entity_triples, read_back, run_convert

HEAD = "意图识别。\n\nExamples:\n------------\ntext: 打开灯\nintent: 开灯\n------------\n"

# id, format, {file name: content}, where the error is, what it says, the --skip-bad reason, examples left
MALFORMED = [
    (
        "csv-no-label",
        "csv",
        {"a.csv": "text,label\n你好,greet\n再见,\n拜拜,bye\n"},
        "a.csv:3",
        "the label field 'label' is missing or empty",
        "no label",
        2,
    ),
    (
        "csv-extra-cells",
        "csv",
        {"a.csv": "text,label\n你好,greet\n再见,bye,extra\n"},
        "a.csv:3",
        "the row has 3 cells but the header has 2",
        "too many cells",
        1,
    ),
    (
        "tsv-no-text",
        "tsv",
        {"a.tsv": "text\tlabel\n\tgreet\n你好\tgreet\n"},
        "a.tsv:2",
        "the text field 'text' is missing or empty",
        "no text",
        1,
    ),
    (
        "jsonl-bad-json",
        "jsonl",
        {"a.jsonl": '{"text": "你好", "label": "greet"}\n{"text": "再见", "label": \n'},
        "a.jsonl:2",
        "not valid JSON (Expecting value, column 25)",
        "invalid JSON",
        1,
    ),
    (
        "jsonl-unknown-split",
        "jsonl",
        {
            "a.jsonl": '{"text": "你好", "label": "greet", "split": "holdout"}\n'
            '{"text": "嗨", "label": "greet", "split": "train"}\n'
        },
        "a.jsonl:1",
        "unknown split 'holdout' in field 'split'",
        "unknown split",
        1,
    ),
    (
        "json-not-object",
        "json",
        {"a.json": '[\n {"text": "你好", "label": "greet"},\n "再见"\n]'},
        "a.json:3",
        "expected a JSON object with text and label fields, got str",
        "not an object",
        1,
    ),
    (
        "cais-broken-bioes",
        "cais",
        {"ch.train": "我 O\n\n周 B-singer\n杰 O\n", "ch.train.intent": "Chat\nPlayMusic\n"},
        "ch.train:3",
        "entity singer opened at character 1 is not closed with E-",
        "broken BIOES sequence",
        1,
    ),
    (
        "cais-bad-line",
        "cais",
        {"ch.train": "我 O\n\n周B-singer\n", "ch.train.intent": "Chat\nPlayMusic\n"},
        "ch.train:3",
        "expected '<character> <tag>'",
        "bad line",
        1,
    ),
    (
        "nlpcc-columns",
        "nlpcc2018",
        {"corpus.train.txt": "1\t取消\tmusic.pause\t取消\r\n1\t下一首\tmusic.next\r\n"},
        "corpus.train.txt:2",
        "expected 4 tab-separated columns",
        "wrong column count",
        1,
    ),
    (
        "nlpcc-unbalanced",
        "nlpcc2018",
        {"corpus.train.txt": "1\t到西湖\tnav\t到<destination>西湖\n1\t取消\tnav\t取消\n"},
        "corpus.train.txt:1",
        "unbalanced tag '<destination>'",
        "bad slot tags",
        1,
    ),
    (
        "nlpcc-mismatch",
        "nlpcc2018",
        {"corpus.train.txt": "1\t到西湖\tnav\t到<destination>东湖</destination>\n1\t取消\tnav\t取消\n"},
        "corpus.train.txt:1",
        "the annotated text '到东湖' differs from the utterance '到西湖'",
        "text mismatch",
        1,
    ),
    (
        "smp2019-slot",
        "smp2019",
        {
            "train.json": json.dumps(
                [
                    {"text": "打开微信", "domain": "app", "intent": "LAUNCH", "slots": {"name": "微信"}},
                    {"text": "打开淘宝", "domain": "app", "intent": "LAUNCH", "slots": {"name": "京东"}},
                ],
                indent=1,
            )
        },
        "train.json:10",
        "slot 'name' = '京东' does not occur in the text '打开淘宝'",
        "bad slots",
        1,
    ),
    (
        "few-shot-no-text",
        "few-shot-intent-sft",
        {
            "p.jsonl": json.dumps({"prompt": HEAD + "intent:", "intent": "a"})
            + "\n"
            + json.dumps({"prompt": HEAD + "text: 关灯\nintent:", "intent": "b"})
            + "\n"
        },
        "p.jsonl:1",
        "the 'prompt' should end with a 'text: …' line and an empty 'intent:' line",
        "no user text",
        1,
    ),
    (
        "massive-fields",
        "massive",
        {
            "m.jsonl": '{"locale": "zh-CN", "utt": "你好", "partition": "train"}\n'
            '{"locale": "zh-CN", "utt": "嗨", "intent": "hi", "partition": "dev"}\n'
        },
        "m.jsonl:1",
        "expected 'utt' and 'intent' strings",
        "missing fields",
        1,
    ),
]


def _write(folder: Path, files: Dict[str, str]) -> Path:
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8", newline="")
    return folder / next(iter(files))


@pytest.mark.parametrize(
    "fmt, files, where, problem, reason, left", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, fmt: str, files: Dict[str, str], where: str, problem: str, reason: str, left: int
) -> None:
    first = _write(tmp_path, files)
    message = f"{tmp_path / where}: {problem}"

    with pytest.raises(ConversionError, match=re.escape(message) + ".*pass --skip-bad"):
        run_convert(fmt, [first], tmp_path / "out.yml")

    dataset = run_convert(fmt, [first], tmp_path / "out.yml", skip_bad=True)
    assert dataset.report.dropped[f"malformed: {reason}"] == 1
    assert sum(len(found) for found in dataset.splits.values()) == left


def test_xlsx_malformed_row_names_sheet_and_row(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "data"
    for row in [("Sentence", "Label"), ("你好", "greet"), ("再见", None)]:
        workbook.active.append(row)
    workbook.save(tmp_path / "s.xlsx")

    with pytest.raises(ConversionError, match=re.escape(f"{tmp_path / 's.xlsx'} sheet 'data' row 3: the label field")):
        run_convert("xlsx", [tmp_path / "s.xlsx"], tmp_path / "out.yml")


ENCODED = [
    ("utf-8", "text,label\n你好,greet\n再见,bye\n".encode("utf-8")),
    ("utf-8-bom-crlf", "\ufefftext,label\r\n你好,greet\r\n再见,bye\r\n".encode("utf-8")),
    ("gbk", "text,label\r\n你好,greet\r\n再见,bye\r\n".encode("gbk")),
    ("utf-16", "text,label\n你好,greet\n再见,bye\n".encode("utf-16")),
    ("cr-only", "text,label\r你好,greet\r再见,bye\r".encode("utf-8")),
]


@pytest.mark.parametrize("raw", [c[1] for c in ENCODED], ids=[c[0] for c in ENCODED])
def test_encodings_and_line_endings_give_the_same_data(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "a.csv").write_bytes(raw)

    run_convert("csv", [tmp_path / "a.csv"], tmp_path / "out.yml")

    assert entity_triples(read_back(tmp_path / "out.yml")) == {("你好", "greet"): [], ("再见", "bye"): []}


def test_undecodable_file_names_the_line_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"text,label\nab\xff,x\n")

    with pytest.raises(
        ConversionError,
        match=re.escape(
            f"{tmp_path / 'a.csv'}:2: cannot decode byte b'\\xff' as utf-8-sig or gb18030. Re-save the file as UTF-8"
        ),
    ):
        run_convert("csv", [tmp_path / "a.csv"], tmp_path / "out.yml")


@pytest.mark.parametrize(
    "fmt, name, content",
    [
        ("csv", "a.csv", b""),
        ("jsonl", "a.jsonl", b"\n\r\n  \n"),
        ("xlsx", "a.xlsx", b""),
        ("nlpcc2018", "corpus.train.txt", b"\xef\xbb\xbf"),
    ],
)
def test_empty_file_says_so(tmp_path: Path, fmt: str, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)

    with pytest.raises(ConversionError, match=re.escape(f"{tmp_path / name} is empty: there is nothing to convert")):
        run_convert(fmt, [tmp_path / name], tmp_path / "out.yml")


def test_empty_xlsx_sheet_says_so(tmp_path: Path) -> None:
    openpyxl.Workbook().save(tmp_path / "s.xlsx")

    with pytest.raises(ConversionError, match="no data rows below the header"):
        run_convert("xlsx", [tmp_path / "s.xlsx"], tmp_path / "out.yml")


@pytest.mark.parametrize(
    "fmt, files, message",
    [
        ("yaml", {"a.csv": "text,label\n"}, "unknown format 'yaml'; choose one of: smp2017, smp2019, cais"),
        (
            "csv",
            {"a.csv": "sentence,tag\n你好,greet\n"},
            "a.csv:1: cannot tell which field holds the label (looked for label, intent, category, class, label_text); "
            "the fields are 'sentence', 'tag'. Pass --label-field NAME.",
        ),
        ("cais", {"ch.test": "我 O\n", "ch.test.intent": "a\nb\n"}, "ch.test has 1 utterances but"),
        ("smp2017", {"weather.txt": "你好\n"}, "SMP2017 files are named <split>_<label>.txt"),
        ("crosswoz", {"val.json": '{"1": {"turns": []}}'}, "dialogue 1 has no 'messages' list"),
        (
            "smp2019",
            {"train.json": '[{"text": "你好", "entities": [], "intent": "greet"}]'},
            "no official records (with 'domain') among the inputs",
        ),
    ],
)
def test_clear_errors(tmp_path: Path, fmt: str, files: Dict[str, str], message: str) -> None:
    first = _write(tmp_path, files)

    with pytest.raises(ConversionError, match=re.escape(message)):
        run_convert(fmt, [first], tmp_path / "out.yml")


def test_requested_field_that_does_not_exist(tmp_path: Path) -> None:
    first = _write(tmp_path, {"a.csv": "Sentence,Label\n你好,greet\n"})

    with pytest.raises(
        ConversionError,
        match=re.escape("there is no text field 'query'; the fields are 'Sentence', 'Label'. Check --text-field."),
    ):
        run_convert("csv", [first], tmp_path / "out.yml", text_field="query")


def test_missing_input_path(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=re.escape(f"{tmp_path / 'nope.csv'}: no such file or folder")):
        run_convert("csv", [tmp_path / "nope.csv"], tmp_path / "out.yml")
