"""Model delivery for real: the production config.yml's hub models come from a mirror (HF_ENDPOINT), or from
a warm cache with HF_HUB_OFFLINE=1, and a broken download is a clear error.

A local server speaks the hub's HTTP protocol (hub_mirror.py) and serves tiny models built here under the
production repo ids: ``hfl/chinese-bert-wwm-ext`` (a BERT with a Chinese character vocabulary and the
published repo's files: pytorch_model.bin, vocab.txt, tokenizer.json ...) and
``qgyd2021/few_shot_intent_gpt2_base`` (a GPT-2 with a BERT-style tokenizer, as published; model.safetensors).
`rasa train` runs on a copy of the repository's config.yml with fewer epochs: the same components, the same
model ids.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import yaml

from hub_mirror import HubMirror
from rasa_process import REPO_ROOT, free_port, http, rasa_server, test_env

pytestmark = pytest.mark.slow

BERT, GPT2 = "hfl/chinese-bert-wwm-ext", "qgyd2021/few_shot_intent_gpt2_base"
DATA = [str(REPO_ROOT / "data" / name) for name in ("nlu.yml", "stories.yml", "rules.yml")]
ANNOTATION = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\{[^}]*\})")


def assistant_texts() -> list:
    data = yaml.safe_load((REPO_ROOT / "data" / "nlu.yml").read_text(encoding="utf-8"))
    texts = [block["intent"] for block in data["nlu"] if "intent" in block]
    for block in data["nlu"]:
        for line in str(block.get("examples", "")).splitlines():
            if line.strip().startswith("- "):
                texts.append(ANNOTATION.sub(r"\1", line.strip()[2:]))
    return texts


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Tiny models with random weights, saved the way the published repos are."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    from nlu_bert.vocab import build_char_vocab, make_tokenizer

    from gpt2_fixtures import template_texts

    root = tmp_path_factory.mktemp("hub")
    vocab = build_char_vocab(assistant_texts(), template_texts())
    torch.manual_seed(0)
    bert = root / "chinese-bert-wwm-ext"
    tokenizer = make_tokenizer(vocab, bert)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(str(bert), safe_serialization=False)  # pytorch_model.bin, as published
    gpt2 = root / "few_shot_intent_gpt2_base"
    tokenizer = make_tokenizer(vocab, gpt2)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(str(gpt2))
    return {BERT: bert, GPT2: gpt2}


@pytest.fixture
def mirror(hub_repos: Dict[str, Path]) -> Iterator[HubMirror]:
    with HubMirror(hub_repos) as server:
        yield server


@pytest.fixture(scope="module")
def production_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yml with fewer epochs; every component and model id as in the file."""
    config = yaml.safe_load((REPO_ROOT / "config.yml").read_text(encoding="utf-8"))
    models = {c["name"]: c.get("model") for c in config["pipeline"]}
    assert models["nlu_bert.BertIntentClassifier"] == BERT and models["nlu_bert.GPT2FewShotIntentClassifier"] == GPT2
    for component in config["pipeline"] + config["policies"]:
        if "epochs" in component:
            component["epochs"] = 2
    path = tmp_path_factory.mktemp("config") / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def hub_env(hf_home: Path, endpoint: str, offline: bool) -> Dict[str, str]:
    flag = "1" if offline else "0"
    return test_env(
        HF_HOME=str(hf_home),
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE=flag,
        TRANSFORMERS_OFFLINE=flag,
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        PYTHONWARNINGS="ignore",
    )


def train(config: Path, workdir: Path, env: Dict[str, str], *, nlu_only: bool = False) -> subprocess.CompletedProcess:
    """`rasa train` in its own folder (so Rasa's training cache of another run is not reused)."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("rasa")),
        "train",
        *(["nlu"] if nlu_only else []),
        "--config",
        str(config),
        *([] if nlu_only else ["--domain", str(REPO_ROOT / "domain.yml")]),
        *(["--nlu", DATA[0]] if nlu_only else ["--data", *DATA]),
        "--out",
        str(workdir / "models"),
        "--fixed-model-name",
        "delivered",
    ]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)


def cached_snapshot(hf_home: Path, repo: str) -> Path:
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = (folder / "refs" / "main").read_text().strip()
    return folder / "snapshots" / commit


@pytest.fixture(scope="module")
def trained_from_mirror(
    hub_repos: Dict[str, Path], production_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Dict[str, Any]:
    """`rasa train` of the production config with HF_ENDPOINT at the mirror: its cache, its model, what it fetched."""
    work = tmp_path_factory.mktemp("online")
    hf_home = work / "hf"
    with HubMirror(hub_repos) as server:
        done = train(production_config, work, hub_env(hf_home, server.url, offline=False))
        fetched = {repo: server.downloads(repo) for repo in (BERT, GPT2)}
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return {"hf_home": hf_home, "model": work / "models" / "delivered.tar.gz", "fetched": fetched}


def test_rasa_train_downloads_the_production_models_from_a_mirror_and_serves_offline(
    trained_from_mirror: Dict[str, Any], mirror: HubMirror, tmp_path: Path
) -> None:
    hf_home = trained_from_mirror["hf_home"]
    for repo, weights in ((BERT, "pytorch_model.bin"), (GPT2, "model.safetensors")):
        fetched = trained_from_mirror["fetched"][repo]
        assert weights in fetched and "config.json" in fetched and "vocab.txt" in fetched, fetched
        assert (cached_snapshot(hf_home, repo) / weights).is_file()

    # served with the hub out of reach: the model archive holds everything
    env = hub_env(hf_home, mirror.url, offline=True)
    with rasa_server(
        trained_from_mirror["model"],
        tmp_path,
        tmp_path / "rasa.log",
        **{k: v for k, v in env.items() if k.startswith(("HF_", "TRANSFORMERS"))},
    ) as url:
        status, body = http("POST", f"{url}/model/parse", {"text": "我的快递到哪了"})
        assert status == 200 and body["intent"]["name"], body
        intents = set(yaml.safe_load((REPO_ROOT / "domain.yml").read_text(encoding="utf-8"))["intents"]) | {
            "nlu_fallback"
        }
        assert {r["name"] for r in body["intent_ranking"]} <= intents
    assert mirror.requests == [], "serving reached for the hub"


def test_offline_training_from_a_warm_cache(
    trained_from_mirror: Dict[str, Any], production_config: Path, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: any request would fail
    done = train(
        production_config, tmp_path, hub_env(trained_from_mirror["hf_home"], dead, offline=True), nlu_only=True
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (tmp_path / "models" / "delivered.tar.gz").is_file()


def test_a_damaged_cache_stops_offline_training_with_one_clear_line(
    trained_from_mirror: Dict[str, Any], production_config: Path, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf"
    shutil.copytree(trained_from_mirror["hf_home"], hf_home, symlinks=True)
    blob = (cached_snapshot(hf_home, BERT) / "pytorch_model.bin").resolve()
    assert str(blob).startswith(str(hf_home))
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])  # a disk that lost the end of the file
    done = train(
        production_config,
        tmp_path / "train",
        hub_env(hf_home, f"http://127.0.0.1:{free_port()}", offline=True),
        nlu_only=True,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    cache = hf_home / "hub" / "models--hfl--chinese-bert-wwm-ext"
    assert re.search(
        r"BertIntentClassifier: the model 'hfl/chinese-bert-wwm-ext' was found, but its files cannot be read .*"
        + re.escape(str(cache))
        + " is damaged or incomplete. Delete that folder and train again",
        output,
    ), output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def load_backbone(hf_home: Path, endpoint: str, offline: bool) -> subprocess.CompletedProcess:
    """BertIntentClassifier's loading code (backbones.load_pretrained) for the production id, in a new process."""
    code = (
        "from transformers import AutoModel, AutoTokenizer\n"
        "from nlu_bert import backbones\n"
        f"backbones.load_pretrained('BertIntentClassifier', {BERT!r}, AutoTokenizer.from_pretrained)\n"
        f"backbones.load_pretrained('BertIntentClassifier', {BERT!r}, AutoModel.from_pretrained)\n"
        "print('loaded')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=hub_env(hf_home, endpoint, offline),
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if "ModelUnavailableError" in line]
    assert result.returncode != 0 and lines, result.stderr[-3000:]
    return lines[-1]


def test_an_interrupted_download_is_a_clear_error_and_the_next_run_completes_it(
    mirror: HubMirror, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf"
    mirror.faults["pytorch_model.bin"] = "cut_once"
    line = error_line(load_backbone(hf_home, mirror.url, offline=False))
    assert "BertIntentClassifier" in line and BERT in line and "incomplete" in line and "Train again" in line, line
    assert str(hf_home / "hub" / "models--hfl--chinese-bert-wwm-ext") in line, line
    done = load_backbone(hf_home, mirror.url, offline=False)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-3000:]
    assert mirror.downloads(BERT).count("pytorch_model.bin") == 2


def test_a_download_that_never_completes_is_a_clear_error(mirror: HubMirror, tmp_path: Path) -> None:
    mirror.faults["pytorch_model.bin"] = "cut_always"
    line = error_line(load_backbone(tmp_path / "hf", mirror.url, offline=False))
    assert "BertIntentClassifier" in line and BERT in line and "incomplete" in line and "HF_ENDPOINT" in line, line


def test_a_corrupted_file_from_the_mirror_is_a_clear_error_naming_the_cached_copy(
    mirror: HubMirror, tmp_path: Path
) -> None:
    mirror.faults["pytorch_model.bin"] = "garbage"  # the right size, the wrong bytes
    hf_home = tmp_path / "hf"
    line = error_line(load_backbone(hf_home, mirror.url, offline=False))
    cache = hf_home / "hub" / "models--hfl--chinese-bert-wwm-ext"
    assert "BertIntentClassifier" in line and BERT in line and "damaged" in line and str(cache) in line, line
    assert "no access to the Hugging Face hub" not in line  # not the unreachable-hub message
