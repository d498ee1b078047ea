"""The serving install: the base package, without the `train` extra (torch, transformers, onnx).

The processes here start with an import blocker (a ``sitecustomize`` on their PYTHONPATH) that makes torch,
transformers and onnx impossible to import, as in an environment where only ``pip install nlu-bert`` ran:

* a model trained with the default inference backends loads in `rasa run` and parses over HTTP;
* `rasa train` stops with one line that names ``pip install "nlu-bert[train]"``.

The package metadata itself: the base dependencies name neither torch nor transformers, the extra does.
benchmarks/install_size.py installs the base package into a second, real virtualenv and measures it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from integration_project import CONFIG, nlu_yaml
from nlu_testing import REPO_ROOT, TINY_BOT
from rasa_process import http, rasa_server, run_rasa, test_env

pytestmark = pytest.mark.slow

BLOCKED = ("torch", "transformers", "onnx")
BLOCKER = f'''
import importlib.abc, sys

class _ServingInstall(importlib.abc.MetaPathFinder):
    """torch, transformers and onnx are not installed here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the serving install)", name=name)
        return None

sys.meta_path.insert(0, _ServingInstall())
'''
NO_TRAIN_PACKAGES = 'Install them with `pip install "nlu-bert[train]"`.'


@pytest.fixture
def serving_env(tmp_path: Path) -> dict:
    folder = tmp_path / "serving-install"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    return {"PYTHONPATH": f"{folder}:{REPO_ROOT}"}


def test_the_blocker_blocks(serving_env: dict) -> None:
    code = "for n in ('torch', 'transformers', 'onnx'):\n    try:\n        __import__(n)\n        print(n, 'imported')\n    except ImportError:\n        print(n, 'blocked')\n"
    done = subprocess.run(
        [sys.executable, "-c", code], env=test_env(**serving_env), capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["torch", "blocked", "transformers", "blocked", "onnx", "blocked"], done.stderr


def test_a_model_trained_with_the_default_backends_is_served_without_torch_or_transformers(
    trained_model: Path, serving_env: dict, tmp_path: Path
) -> None:
    with rasa_server(trained_model, tmp_path, tmp_path / "rasa.log", **serving_env) as url:
        for text in TINY_BOT[next(iter(TINY_BOT))][:3] + ["完全无关的一句话"]:
            status, body = http("POST", f"{url}/model/parse", {"text": text})
            assert status == 200, body
            assert body["intent"]["name"] in set(TINY_BOT) | {"nlu_fallback"}
            assert body["intent_ranking"] and 0.0 <= body["intent"]["confidence"] <= 1.0
    log = (tmp_path / "rasa.log").read_text(encoding="utf-8", errors="replace")
    assert "not in the serving install" not in log, log[-3000:]


def test_training_without_the_extra_stops_with_one_line_naming_it(serving_env: dict, tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "nlu.yml").write_text(nlu_yaml(TINY_BOT), encoding="utf-8")
    done = run_rasa(
        ["train", "nlu", "--config", "config.yml", "--nlu", "nlu.yml", "--out", "models"], cwd=tmp_path, **serving_env
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    lines = [line for line in output.splitlines() if "nlu-bert[train]" in line]
    assert len(lines) == 1, output[-3000:]
    assert re.search(
        r"BertIntentClassifier: training needs torch, transformers, onnx, which this install of nlu-bert does "
        r"not have \(it serves only\)\. " + re.escape(NO_TRAIN_PACKAGES),
        lines[0],
    ), lines[0]
    assert "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_the_package_metadata_splits_serving_from_training() -> None:
    import tomli

    project = tomli.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = lambda specs: {re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower() for spec in specs}  # noqa: E731
    base, train = names(project["dependencies"]), names(project["optional-dependencies"]["train"])
    assert {"rasa", "onnxruntime", "tokenizers", "safetensors", "numpy"} <= base
    assert not base & set(BLOCKED), base & set(BLOCKED)
    assert set(BLOCKED) <= train
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    assert '-e ".[train,dev]"' in bootstrap  # `make install` still installs everything
