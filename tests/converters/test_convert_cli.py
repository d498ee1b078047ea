"""`nlu-bert convert`: output naming, summary, report, domain, exit codes, and `rasa data validate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rasa.shared.core.domain import Domain

from nlu_bert.cli import main

from convert_helpers import fixture, read_back

REPO = Path(__file__).resolve().parents[2]


def test_file_output_writes_siblings_and_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["convert", "cais", str(fixture("cais")), "-o", str(tmp_path / "cais.yml")])

    out = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cais.dev.yml", "cais.test.yml", "cais.yml"]
    assert "  split  examples  intents  entities  synonym entities\n  train         5        3         6" in out
    assert f"  {tmp_path / 'cais.test.yml'}  (test, 2 examples)" in out
    assert "checked with Rasa's loader: example counts, texts, intents and entity spans match" in out


def test_folder_output_report_and_domain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "convert",
            "nlpcc2018",
            str(fixture("nlpcc2018")),
            "-o",
            str(tmp_path / "nlpcc"),
            "--test-fraction",
            "0.3",
            "--seed",
            "3",
            "--report",
            str(tmp_path / "report.json"),
            "--domain",
            str(tmp_path / "domain.yml"),
            "-q",
        ]
    )

    assert code == 0
    # every intent of this tiny corpus has fewer than 3 examples, so all stay in train: no test.yml
    written = [tmp_path / "nlpcc" / "train.yml", tmp_path / "domain.yml", tmp_path / "report.json"]
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["conflicts"] == {"取消": ["music.pause", "navigation.cancel_navigation"]}
    assert report["dropped"] == {"duplicate (same text and intent in one split)": 1}
    assert report["lookups"] == {"singer": 2, "song": 3}
    domain = Domain.load(str(tmp_path / "domain.yml"))
    assert set(domain.intents) >= {"music.play", "music.pause", "OTHERS"}
    assert set(domain.entities) == {"singer", "song", "destination", "contact_name"}


def test_bad_input_exits_1_with_the_message_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.csv").write_text("text,label\n你好,\n", encoding="utf-8")

    code = main(["convert", "csv", str(tmp_path / "a.csv"), "-o", str(tmp_path / "out.yml")])

    assert code == 1
    assert capsys.readouterr().err.startswith(f"nlu-bert convert: error: {tmp_path / 'a.csv'}:2: the label field")
    assert not (tmp_path / "out.yml").exists()


def test_unknown_format_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["convert", "docx", str(tmp_path), "-o", str(tmp_path / "out.yml")]) == 1
    assert "unknown format 'docx'; choose one of: smp2017" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--test-fraction", "1.5"], ["--max-per-intent", "0"], ["--label-rule", "x"]])
def test_bad_option_values_are_usage_errors(tmp_path: Path, option: list) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["convert", "csv", str(tmp_path), "-o", str(tmp_path / "out.yml"), *option])
    assert stopped.value.code == 2


def test_label_map_file_and_skip_bad_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "map.tsv").write_text("好评\tpositive\n差评\tnegative\n中评\t\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("review,label\n很好,好评\n很差,差评\n一般,中评\n坏了,\n", encoding="utf-8")

    code = main(
        [
            "convert",
            "csv",
            str(tmp_path / "a.csv"),
            "-o",
            str(tmp_path / "out.yml"),
            "--label-map",
            str(tmp_path / "map.tsv"),
            "--skip-bad",
        ]
    )

    assert code == 0
    assert {(m.get("text"), m.get("intent")) for m in read_back(tmp_path / "out.yml").training_examples} == {
        ("很好", "positive"),
        ("很差", "negative"),
    }
    out = capsys.readouterr().out
    assert "        1  label mapped to nothing by --label-map" in out
    assert "        1  malformed: no label" in out


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlu_bert.cli",
            "convert",
            "jsonl",
            str(fixture("generic", "records.jsonl")),
            "-o",
            str(tmp_path / "out"),
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "out" / "train.yml"), str(tmp_path / "out" / "test.yml")]


@pytest.mark.slow
def test_converted_dataset_passes_rasa_data_validate(tmp_path: Path) -> None:
    """Entities, synonyms and lookup tables (nlpcc2018 fixture) with a domain listing only the intents."""
    assert (
        main(
            [
                "convert",
                "nlpcc2018",
                str(fixture("nlpcc2018")),
                "-o",
                str(tmp_path / "nlu.yml"),
                "-q",
                "--drop-conflicts",
            ]
        )
        == 0
    )
    intents = sorted({m.get("intent") for m in read_back(tmp_path / "nlu.yml").training_examples})
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents:\n' + "".join(f"- {i}\n" for i in intents))
    (tmp_path / "config.yml").write_text(
        "recipe: default.v1\nassistant_id: test\nlanguage: zh\npipeline:\n- name: WhitespaceTokenizer\npolicies: []\n"
    )

    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("rasa")),
            "data",
            "validate",
            "--data",
            "nlu.yml",
            "--domain",
            "domain.yml",
            "--config",
            "config.yml",
            "--fail-on-warnings",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
