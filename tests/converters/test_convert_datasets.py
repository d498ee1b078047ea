"""Each real dataset in ../shared/datasets, converted and checked against the counts in its SOURCE.md.

Skipped where the datasets are absent. Every conversion also runs the round-trip check
with Rasa's loader (``report.verified``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from nlu_bert.converters import FORMATS, Dataset, Example, ReadOptions, SourceData

from convert_helpers import run_convert, shared_dataset

pytestmark = pytest.mark.datasets


def read(fmt: str, *inputs: Path, **options: object) -> SourceData:
    return FORMATS[fmt].read(list(inputs), ReadOptions(progress=False, **options))


def sizes(dataset: Dataset) -> Dict[str, int]:
    return {split: len(found) for split, found in dataset.splits.items()}


def intents(examples: List[Example]) -> Counter:
    return Counter(e.intent for e in examples)


def test_smp2017(tmp_path: Path) -> None:
    raw = shared_dataset("smp2017_ecdt_task1", "raw")

    dataset = run_convert("smp2017", [raw / "Task1data"], tmp_path / "out")

    assert dataset.report.verified
    assert sizes(dataset) == {"train": 2299, "dev": 770, "test": 667}
    assert [len(intents(dataset.splits[s])) for s in ("train", "dev", "test")] == [31, 31, 31]
    for label, counts in {
        "chat": (455, 154, 51),
        "cookbook": (269, 89, 90),
        "schedule": (29, 9, 10),
        "datetime": (18, 6, 6),
        "radio": (24, 8, 8),
        "translation": (61, 21, 20),
    }.items():
        assert tuple(intents(dataset.splits[s])[label] for s in ("train", "dev", "test")) == counts, label
    assert not dataset.report.dropped and not dataset.report.conflicts and dataset.report.train_test_overlap == 0
    # data.json (two objects back to back) holds the same train and develop rows as the .txt files
    from_json = run_convert("smp2017", [raw / "data.json"], tmp_path / "json")
    for split in ("train", "dev"):
        assert Counter((e.text, e.intent) for e in from_json.splits[split]) == Counter(
            (e.text, e.intent) for e in dataset.splits[split]
        )


def test_smp2019(tmp_path: Path) -> None:
    raw = shared_dataset("smp2019_ecdt_task1", "raw")
    source = read("smp2019", raw / "train.json")

    assert len(source.examples) == 2579
    assert len(intents(source.examples)) == 48
    assert len({e.intent.split(".")[0] for e in source.examples}) == 29
    assert intents(source.examples)["cookbook.QUERY"] == 428
    # every one of the 3327 slot values is placed, except where two values overlap
    placed = sum(len(e.entities) for e in source.examples)
    assert placed + source.dropped_entities["overlaps another entity"] == 3327
    assert sum(1 for e in source.examples if not e.entities) == 163
    assert all(e.text[x.start : x.end] == x.value for e in source.examples for x in e.entities)

    dataset = run_convert("smp2019", [raw], tmp_path / "out")  # official file + CAISandSMP 8:1:1 split + dic/
    assert dataset.report.verified
    assert sizes(dataset) == {"train": 2053, "dev": 256, "test": 270}
    assert set(dataset.lookups) == {"city", "dishName", "province", "railway_station"}


def test_cais(tmp_path: Path) -> None:
    dataset = run_convert("cais", [shared_dataset("cais", "raw")], tmp_path / "out")

    assert dataset.report.verified
    assert sizes(dataset) == {"train": 7995, "dev": 994, "test": 1012}
    assert [len(intents(dataset.splits[s])) for s in ("train", "dev", "test")] == [13, 12, 14]
    assert dict(intents(dataset.splits["train"])) == {
        "PlayMusic": 6964,
        "PlayFMStory": 295,
        "GetWeather": 190,
        "Remind": 112,
        "Chat": 100,
        "PlayPoem": 83,
        "PlayFMFiction": 72,
        "PlayFMCrosstalk": 58,
        "GetNews": 44,
        "ControlSystem": 38,
        "PlayFMJoke": 27,
        "AskKnowledge": 9,
        "Sing": 3,
    }
    assert intents(dataset.splits["test"])["GetDate"] == 1 and "GetDate" not in intents(dataset.splits["train"])
    assert len({x.entity for found in dataset.splits.values() for e in found for x in e.entities}) == 24
    # SOURCE's overlap figures hold once the literal-space tokens are ignored
    squeeze = {s: [e.text.replace(" ", "") for e in found] for s, found in dataset.splits.items()}
    assert sum(n - 1 for n in Counter(squeeze["train"]).values()) == 8
    assert len(set(squeeze["dev"]) & set(squeeze["train"])) == 3
    assert len(set(squeeze["test"]) & set(squeeze["train"])) == 2


def test_nlpcc2018(tmp_path: Path) -> None:
    raw = shared_dataset("nlpcc2018_task4_slu", "raw")
    source = read("nlpcc2018", raw)

    assert source.rows_read == len(source.examples) == 21352
    assert len({e.text for e in source.examples}) == 14560
    assert intents(source.examples).most_common(3) == [
        ("OTHERS", 6628),
        ("music.play", 6403),
        ("navigation.navigation", 3961),
    ]
    assert len(intents(source.examples)) == 11
    mentions = Counter(x.entity for e in source.examples for x in e.entities)
    assert len(mentions) == 15 and mentions["song"] == 3935 and mentions["destination"] == 3805
    assert sum(1 for e in source.examples if any(e.text[x.start : x.end] != x.value for x in e.entities)) == 205
    assert {name: len(entries) for name, entries in source.lookups.items()} == {
        "song": 7042,
        "singer": 2704,
        "scene": 145,
        "theme": 140,
        "age": 139,
        "emotion": 135,
        "style": 102,
        "toplist": 69,
        "language": 41,
        "instrument": 30,
        "custom_destination": 3,
    }

    dataset = run_convert("nlpcc2018", [raw], tmp_path / "out", test_fraction=0.2, seed=42)
    assert dataset.report.verified
    assert dataset.report.dropped == Counter({"duplicate (same text and intent in one split)": 6549})
    assert len(dataset.report.conflicts) == 217
    assert sizes(dataset) == {"train": 11844, "test": 2959}
    assert dataset.synonyms["菲菲"] == "云菲菲"


def test_crosswoz(tmp_path: Path) -> None:
    raw = shared_dataset("crosswoz", "raw")
    val = read("crosswoz", raw / "val_messages.json", label_rule="multi")

    assert val.rows_read == 4229
    assert read("crosswoz", raw / "test_messages.json").rows_read == 4238
    assert len({name for e in val.examples for name in e.intent.split("+")}) == 16
    assert sum(1 for e in val.examples if "+" in e.intent) == 2232

    dataset = run_convert("crosswoz", [raw], tmp_path / "out")
    assert dataset.report.verified
    assert dataset.report.rows_read == 4229 + 4238
    assert set(dataset.splits) == {"train", "test"}  # no train file: val is the train split
    assert all(
        x.value == e.text[x.start : x.end] for found in dataset.splits.values() for e in found for x in e.entities
    )


def test_crosswoz_inform_values_found_verbatim() -> None:
    """3716 of the 4090 Inform tuples in val have their value verbatim in the utterance."""
    import json

    dialogues = json.loads(shared_dataset("crosswoz", "raw", "val_messages.json").read_text(encoding="utf-8"))
    informs = [
        (m["content"], act[3])
        for d in dialogues.values()
        for m in d["messages"]
        if m["role"] == "usr"
        for act in m["dialog_act"]
        if act[0] == "Inform"
    ]
    assert len(informs) == 4090
    assert sum(1 for text, value in informs if value and value in text) == 3716


def test_massive(tmp_path: Path) -> None:
    folder = shared_dataset("massive_zh_cn_intent")
    raw = folder / "raw" / "amazon_massive_intent_zh_cn.jsonl"

    dataset = run_convert("massive", [raw], tmp_path / "zh")
    assert dataset.report.verified
    assert sizes(dataset) == {"train": 11022, "dev": 1863, "test": 2734}
    assert [len(intents(dataset.splits[s])) for s in ("train", "dev", "test")] == [60, 59, 59]

    from nlu_bert.converters import load_label_map

    english = run_convert(
        "massive", [raw], tmp_path / "en", label_map=load_label_map(folder / "label_map_zh_to_massive_intent.json")
    )
    names = set(intents([e for found in english.splits.values() for e in found]))
    assert len(names) == 60 and all(name.isascii() for name in names)
    assert "audio_volume_other" not in intents(english.splits["dev"])
    assert "cooking_query" not in intents(english.splits["test"])


def test_telemarketing_as_generic_jsonl(tmp_path: Path) -> None:
    raw = shared_dataset("telemarketing_intent_cn", "raw", "telemarketing_intent_cn.jsonl")
    source = read("jsonl", raw)

    assert source.rows_read == 11710
    assert Counter(e.split for e in source.examples) == Counter({"train": 10510, "test": 1200})
    assert len(intents(source.examples)) == 92
    assert len(intents([e for e in source.examples if e.split == "test"])) == 84

    dataset = run_convert("jsonl", [raw], tmp_path / "out")
    assert dataset.report.verified
    assert dataset.report.renamed_intents["肯定(好的)"] == "肯定_好的"
