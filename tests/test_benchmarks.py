"""The accuracy benchmark's own-data path (`accuracy.py --train --test --name`), end to end on a tiny bot.

This is how a dataset the project has not seen goes through the harness: real `rasa train` of each pipeline,
parsing the test split with a loaded Agent, results merged into the JSON / markdown / chart of the out folder.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
from nlu_testing import REPO_ROOT, TINY_BOT, shared_dataset

pytestmark = pytest.mark.slow  # real `rasa train` in subprocesses


def write_nlu(path: Path, bot: Dict[str, List[str]]) -> Path:
    nlu = [{"intent": intent, "examples": "".join(f"- {t}\n" for t in texts)} for intent, texts in bot.items()]
    path.write_text(yaml.safe_dump({"version": "3.1", "nlu": nlu}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run_accuracy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "accuracy.py"), *args, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "results")]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_accuracy_benchmark_on_own_data(tmp_path: Path) -> None:
    train = write_nlu(tmp_path / "train.yml", {intent: texts[:9] for intent, texts in TINY_BOT.items()})
    test = write_nlu(tmp_path / "test.yml", {intent: texts[9:] for intent, texts in TINY_BOT.items()})
    done = run_accuracy(tmp_path, "--train", str(train), "--test", str(test), "--name", "tinybot", "--pipelines", "bert", "logreg", "--no-agreement")
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results" / "accuracy.json").read_text(encoding="utf-8"))["results"]
    rows = {(r["dataset"], r["pipeline"]): r for r in results}
    assert set(rows) == {("tinybot", "bert"), ("tinybot", "logreg")}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        correct = row["accuracy"] * 12  # the share of the 12 test messages parsed to their gold intent
        assert abs(correct - round(correct)) < 1e-9
        assert row["train_s"] > 0 and row["archive_mb"] > 0 and row["parse_ms_p50"] > 0
    # 4 intents (chance 0.25): character n-grams separate these test messages from their training examples
    assert rows[("tinybot", "logreg")]["accuracy"] >= 0.5
    table = (tmp_path / "results" / "accuracy.md").read_text(encoding="utf-8")
    assert "| tinybot | bert |" in table and "| tinybot | logreg |" in table
    assert (tmp_path / "results" / "accuracy.png").stat().st_size > 0

    # a second run replaces its own dataset x pipeline rows and keeps the others
    again = run_accuracy(tmp_path, "--train", str(train), "--test", str(test), "--name", "tinybot", "--pipelines", "logreg", "--no-agreement")
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads((tmp_path / "results" / "accuracy.json").read_text(encoding="utf-8"))["results"]
    assert sorted((r["dataset"], r["pipeline"]) for r in merged) == [("tinybot", "bert"), ("tinybot", "logreg")]


def test_accuracy_benchmark_rejects_half_of_own_data(tmp_path: Path) -> None:
    train = write_nlu(tmp_path / "train.yml", TINY_BOT)
    done = run_accuracy(tmp_path, "--train", str(train))
    assert done.returncode == 2
    assert "--train and --test go together" in done.stderr


@pytest.mark.datasets
def test_converted_dataset_is_found_from_another_working_directory(tmp_path: Path, monkeypatch) -> None:
    """A dataset converted once (relative --work) is reused from its report wherever the next run starts."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks.datasets import prepare_dataset

    shared_dataset("smp2017_ecdt_task1")
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = prepare_dataset("smp2017", Path("work"))  # relative, as `--work work` would give it
    monkeypatch.chdir(tmp_path)
    again = prepare_dataset("smp2017", tmp_path / "a" / "work")  # the same folder, cached, from elsewhere
    assert [p.resolve() for p in again] == [(tmp_path / "a" / p).resolve() for p in first]
    assert all(p.is_file() for p in again)
    assert "intent" in again[1].read_text(encoding="utf-8")

