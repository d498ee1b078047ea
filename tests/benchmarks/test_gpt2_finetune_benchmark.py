"""`benchmarks/gpt2_finetune.py` on a small bot: every variant trains the component as `rasa train` does, in the
precision and with the attention dropout it names, and the table reports each epoch's validation accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlu_testing import REPO_ROOT, TINY_BOT, write_nlu

SCRIPT = REPO_ROOT / "benchmarks" / "gpt2_finetune.py"


@pytest.mark.slow
def test_variants_train_with_their_precision_and_dropout(tmp_path: Path) -> None:
    train = write_nlu(tmp_path / "nlu.yml")
    command = [
        sys.executable,
        str(SCRIPT),
        "--train",
        str(train),
        "--epochs",
        "2",
        "--variants",
        "fp32-dropout,bf16",
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "gpt2_finetune.json").read_text(encoding="utf-8"))
    assert list(payload["variants"]) == ["fp32, attention dropout 0.1", "bf16"]
    before, now = payload["variants"].values()
    assert (before["precision"], before["attention_dropout"]) == ("fp32", 0.1)
    assert (now["precision"], now["attention_dropout"]) == ("bf16", 0.0)
    examples = sum(len(texts) for texts in TINY_BOT.values())
    for report in (before, now):
        assert [h["epoch"] for h in report["history"]] == [1, 2] and report["seconds"] > 0
        assert 0 < report["prompts_per_epoch"] < examples  # the validation share is held out
    table = (tmp_path / "out" / "gpt2_finetune.md").read_text(encoding="utf-8")
    assert "| bf16 |" in table and "val accuracy after epoch 2" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "fp16"], "unknown --variants fp16: choose from fp32-dropout, fp32, bf16-dropout, bf16"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--train", "missing.yml"], "--train missing.yml is not a file"),
    ],
)
def test_bad_arguments(tmp_path: Path, args, message) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "out").exists()
