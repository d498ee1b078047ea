"""The archive module: one meta.json per component, its format checked at load time with one error type whose
message names the versions and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nlu_bert import archive
from nlu_bert.version import __version__


@pytest.mark.parametrize(
    "component, meta, expected",
    [
        (archive.GPT2, {"labels": {"a": "a"}}, archive.FORMATS[archive.GPT2].writes),
        (archive.BERT, {"labels": ["a", "b"], "entities": {"tags": ["O"]}}, archive.FORMATS[archive.BERT].writes),
        # without an entity head a BERT model is what 0.1.0 / 0.2.0 serve the same way: format 1
        (archive.BERT, {"labels": ["a", "b"]}, 1),
    ],
)
def test_meta_round_trip(component: str, meta: dict, expected: int, tmp_path: Path) -> None:
    written = archive.write_meta(tmp_path, component, meta)
    assert written["component"] == component and written["nlu_bert_version"] == __version__
    assert written["archive_format"] == expected
    assert archive.read_meta(tmp_path, component) == written


def test_a_gpt2_archive_leaves_a_marker_that_older_releases_refuse_clearly(tmp_path: Path) -> None:
    """nlu-bert 0.2.0 reads only fewshot.json and refuses a format it does not read (1 and 2) by name."""
    archive.write_meta(tmp_path, archive.GPT2, {"labels": {}})
    marker = json.loads((tmp_path / archive.LEGACY_GPT2_META_FILE).read_text(encoding="utf-8"))
    assert marker == {"component": archive.GPT2, "archive_format": 3, "nlu_bert_version": __version__}
    assert marker["archive_format"] not in (1, 2)


def test_a_gpt2_archive_of_0_2_0_is_read_from_fewshot_json(tmp_path: Path) -> None:
    meta = {"archive_format": 2, "component": archive.GPT2, "nlu_bert_version": "0.2.0", "labels": {"a": "a"}}
    (tmp_path / archive.LEGACY_GPT2_META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    assert archive.read_meta(tmp_path, archive.GPT2) == meta


@pytest.mark.parametrize(
    "component, meta, message",
    [
        (archive.BERT, {"archive_format": 99, "nlu_bert_version": "9.0"},
         f"BertIntentClassifier: this model was trained by nlu-bert 9.0 with archive format 99; this nlu-bert "
         f"({__version__}) reads formats 1, 2. Train the model again with `rasa train`, or install the nlu-bert version "
         "that trained it."),
        (archive.GPT2, {"archive_format": 4, "nlu_bert_version": "0.4.0"},
         f"GPT2FewShotIntentClassifier: this model was trained by nlu-bert 0.4.0 with archive format 4; this nlu-bert "
         f"({__version__}) reads formats 1, 2, 3. Train the model again"),
        (archive.BERT, {"labels": []}, "this model was trained by nlu-bert ? with archive format None"),
    ],
)  # fmt: skip
def test_a_format_this_release_does_not_read_is_refused_with_the_versions_and_the_fix(
    component: str, meta: dict, message: str, tmp_path: Path
) -> None:
    (tmp_path / archive.META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(archive.ModelArchiveError, match=re.escape(message)):
        archive.read_meta(tmp_path, component)


@pytest.mark.parametrize("component", [archive.BERT, archive.GPT2])
def test_missing_or_unreadable_meta_is_the_same_error_for_both_components(component: str, tmp_path: Path) -> None:
    with pytest.raises(
        archive.ModelArchiveError,
        match=re.escape(f"{component}: the model archive is damaged or incomplete: meta.json is missing"),
    ):
        archive.read_meta(tmp_path, component)
    (tmp_path / archive.META_FILE).write_text("[1, 2", encoding="utf-8")
    with pytest.raises(archive.ModelArchiveError, match=re.escape("meta.json is unreadable")):
        archive.read_meta(tmp_path, component)
    with pytest.raises(archive.ModelArchiveError, match=re.escape("model/scorer.int8.onnx is missing")):
        archive.require_files(tmp_path, component, ["meta.json", "model/scorer.int8.onnx"])


def test_the_files_each_bert_backend_loads() -> None:
    assert archive.bert_files("native", "int8") == ["model.native.safetensors", "tokenizer"]
    assert archive.bert_files("onnxruntime", "fp32") == ["model.onnx", "tokenizer"]
    assert archive.bert_files("torch", "bf16") == ["model.safetensors", "encoder_config.json", "tokenizer"]


def test_a_report_is_for_people(tmp_path: Path) -> None:
    assert archive.read_report(tmp_path) == {}
    archive.write_report(tmp_path, {"epochs": 3, "path": tmp_path})
    assert archive.read_report(tmp_path) == {"epochs": 3, "path": str(tmp_path)}
