"""The accuracy benchmark's own-data path (`accuracy.py --train --test --name`), end to end on a tiny bot.

This is how a dataset the project has not seen goes through the harness: real `rasa train` of each pipeline,
parsing the test split with a loaded Agent, results merged into the JSON / markdown / chart of the out folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import yaml

from nlu_testing import REPO_ROOT, TINY_BOT, shared_dataset, write_nlu

pytestmark = pytest.mark.slow  # real `rasa train` in subprocesses


def run_accuracy(tmp_path: Path, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "accuracy.py"),
        *args,
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "results"),
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


BOT_COMPONENT = """
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class BotClassifier(LogisticRegressionClassifier):
    \"\"\"A component of the bot's own, importable only from the bot's folder.\"\"\"
"""


def test_accuracy_benchmark_on_own_data(tmp_path: Path) -> None:
    train = write_nlu(tmp_path / "train.yml", {intent: texts[:9] for intent, texts in TINY_BOT.items()})
    test = write_nlu(tmp_path / "test.yml", {intent: texts[9:] for intent, texts in TINY_BOT.items()})
    done = run_accuracy(
        tmp_path,
        "--train",
        str(train),
        "--test",
        str(test),
        "--name",
        "tinybot",
        "--pipelines",
        "bert",
        "logreg",
        "--no-agreement",
    )
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
    again = run_accuracy(
        tmp_path,
        "--train",
        str(train),
        "--test",
        str(test),
        "--name",
        "tinybot",
        "--pipelines",
        "logreg",
        "--no-agreement",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads((tmp_path / "results" / "accuracy.json").read_text(encoding="utf-8"))["results"]
    assert sorted((r["dataset"], r["pipeline"]) for r in merged) == [("tinybot", "bert"), ("tinybot", "logreg")]


def test_agreement_only_checks_every_inference_option_without_training_pipelines(tmp_path: Path, monkeypatch) -> None:
    """`--agreement-only`: the `bert` classifier trained once in-process, each inference option's top intent set
    against fp32's on the test split; no pipeline trained through Rasa, no accuracy table written."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks.accuracy import INFERENCE_OPTIONS

    train = write_nlu(tmp_path / "train.yml", {intent: texts[:9] for intent, texts in TINY_BOT.items()})
    test = write_nlu(tmp_path / "test.yml", {intent: texts[9:] for intent, texts in TINY_BOT.items()})
    done = run_accuracy(
        tmp_path, "--train", str(train), "--test", str(test), "--name", "tinybot", "--quick", "--agreement-only"
    )
    assert done.returncode == 0, done.stderr[-3000:]

    payload = json.loads((tmp_path / "results" / "agreement-quick.json").read_text(encoding="utf-8"))
    [row] = payload["results"]
    assert (row["dataset"], row["pipeline"]) == ("tinybot", "bert")
    options = {o["option"]: o for o in row["inference_options"]}
    assert list(options) == [name for name, *_ in INFERENCE_OPTIONS]
    for o in options.values():
        assert o["texts"] == 12
        assert o["disagreements"] == round((1 - o["agreement_with_fp32"]) * 12)
        assert o["component_mb"] > 0 and o["predict_ms_p50"] > 0
    assert options["native-int8"]["component_mb"] < options["onnxruntime-fp32"]["component_mb"]
    assert "| tinybot | native-int8 |" in (tmp_path / "results" / "agreement-quick.md").read_text(encoding="utf-8")
    assert not (tmp_path / "results" / "accuracy-quick.json").exists()
    assert not (tmp_path / "work" / "models").exists()  # nothing trained through Rasa


CHAR_BIGRAMS = {"name": "CountVectorsFeaturizer", "analyzer": "char", "min_ngram": 1, "max_ngram": 2}


def write_bot(root: Path) -> Tuple[Path, Path]:
    """A bot as users keep one: data/ (NLU and stories), config.yml with policies, a component of its own in
    bot_components.py, importable only from the bot's folder. Returns (data folder, config file)."""
    data = root / "data"
    data.mkdir(parents=True)
    (root / "bot_components.py").write_text(BOT_COMPONENT, encoding="utf-8")
    write_nlu(data / "nlu.yml", TINY_BOT)
    (data / "stories.yml").write_text(
        'version: "3.1"\nstories:\n- story: hi\n  steps:\n  - intent: greet\n  - action: utter_greet\n',
        encoding="utf-8",
    )
    config = root / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "recipe": "default.v1",
                "language": "zh",
                "pipeline": [{"name": "JiebaTokenizer"}, CHAR_BIGRAMS, {"name": "bot_components.BotClassifier"}],
                "policies": [{"name": "RulePolicy"}],  # a bot's policies: not part of an NLU benchmark
            }
        ),
        encoding="utf-8",
    )
    return data, config


def test_accuracy_benchmark_on_a_bot_folder_with_its_own_config(tmp_path: Path) -> None:
    """A bot as it stands: its data folder split by Rasa's stratified split, its config.yml's pipeline as a row,
    with a component of its own imported from the folder the benchmark runs in (as `rasa train` would)."""
    data, config = write_bot(tmp_path / "bot")
    done = run_accuracy(
        tmp_path,
        "--train",
        str(data),
        "--test-fraction",
        "0.25",
        "--name",
        "mybot",
        "--config",
        str(config),
        "--pipelines",
        "logreg",
        "--no-agreement",
        cwd=tmp_path / "bot",
    )
    assert done.returncode == 0, done.stderr[-3000:]

    from rasa.shared.nlu.training_data.loading import load_data

    split = tmp_path / "work" / "split" / "mybot"
    train, test = load_data(str(split / "train.yml")), load_data(str(split / "test.yml"))
    assert set(train.intents) == set(test.intents) == set(TINY_BOT)  # every intent on both sides
    assert len(train.intent_examples) + len(test.intent_examples) == sum(len(t) for t in TINY_BOT.values())
    assert {m.get("text") for m in train.intent_examples}.isdisjoint(m.get("text") for m in test.intent_examples)
    assert len(test.intent_examples) == 12  # a quarter of each intent's 12 examples

    results = json.loads((tmp_path / "results" / "accuracy.json").read_text(encoding="utf-8"))["results"]
    rows = {(r["dataset"], r["pipeline"]): r for r in results}
    assert set(rows) == {("mybot", "logreg"), ("mybot", "config")}
    for row in rows.values():
        correct = row["accuracy"] * len(test.intent_examples)
        assert abs(correct - round(correct)) < 1e-9
    assert rows[("mybot", "config")]["accuracy"] >= 0.5  # 4 intents, chance 0.25
    trained = yaml.safe_load((tmp_path / "work" / "models" / "mybot" / "config.config.yml").read_text(encoding="utf-8"))
    assert trained["pipeline"][1] == CHAR_BIGRAMS and trained["policies"] == [] and trained["language"] == "zh"
    assert "| mybot | config |" in (tmp_path / "results" / "accuracy.md").read_text(encoding="utf-8")


def test_http_latency_serves_a_bots_own_pipeline(tmp_path: Path) -> None:
    """`http_latency.py --config`: the bot's pipeline trained with `rasa train nlu` and served by `rasa run`."""
    data, config = write_bot(tmp_path / "bot")
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "http_latency.py"),
        "--quick",
        "--messages",
        "20",
        "--nlu",
        str(data),
        "--config",
        f"mybot={config}",
        "--pipelines",
        "mybot",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "results"),
    ]
    done = subprocess.run(command, cwd=tmp_path / "bot", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "results" / "http_latency_quick.json").read_text(encoding="utf-8"))
    assert list(payload["best"]) == ["mybot"]  # only the bot's row: no full-size model built or served
    served = payload["best"]["mybot"]
    assert served["messages"] == 20 and 0 < served["p50"] <= served["p95"] and served["rss_loaded_mb"] > 0
    assert (tmp_path / "work" / "models" / "mybot.tar.gz").stat().st_size > 0  # trained into --work
    assert "bot_components.BotClassifier" in payload["training"]["mybot"]["config"]
    assert "| mybot |" in (tmp_path / "results" / "http_latency_quick.md").read_text(encoding="utf-8")
    assert not (tmp_path / "work" / "chinese-bert-wwm-ext-random").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "TRAIN"], "--train needs --test (your test data), or --test-fraction 0.2"),
        (["--test", "TRAIN"], "--test needs --train"),
        (["--train", "TRAIN", "--test-fraction", "1.5"], "--test-fraction must be between 0 and 1"),
        (["--train", "TRAIN", "--test", "TRAIN", "--test-fraction", "0.2"], "give --train and no --test"),
        (["--pipelines", "bert", "nope"], "unknown --pipelines nope: choose from bert bert+gpt2 diet logreg"),
        (["--config", "NOPIPE"], "has no `pipeline` list"),
        (["--config", "bert=BOTCONFIG"], "the name 'bert' is taken"),
        (["--config", "missing.yml"], "missing.yml is not a file"),
        (["--agreement-only", "--no-agreement"], "--agreement-only and --no-agreement exclude each other"),
    ],
)
def test_accuracy_benchmark_rejects_bad_arguments(tmp_path: Path, args: List[str], message: str) -> None:
    train = write_nlu(tmp_path / "train.yml", TINY_BOT)
    no_pipeline = tmp_path / "nopipe.yml"
    no_pipeline.write_text("language: zh\npolicies:\n- name: RulePolicy\n", encoding="utf-8")
    bot_config = tmp_path / "bot.yml"
    bot_config.write_text("language: zh\npipeline:\n- name: JiebaTokenizer\n", encoding="utf-8")
    paths = {"TRAIN": str(train), "NOPIPE": str(no_pipeline), "bert=BOTCONFIG": f"bert={bot_config}"}
    done = run_accuracy(tmp_path, *[paths.get(a, a) for a in args])
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written


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
