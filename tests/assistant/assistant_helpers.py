"""Helpers of the sample assistant's tests: the test config, real processes on free ports, HTTP."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import quote

import yaml

from rasa_process import test_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The assistant's own training files (data/ may also hold converted benchmark datasets).
ASSISTANT_DATA = [str(REPO_ROOT / "data" / name) for name in ("nlu.yml", "stories.yml", "rules.yml")]

# Tiny backbones for tests: the real components, a fraction of the size.
TINY: Dict[str, Dict[str, Any]] = {
    "nlu_bert.BertIntentClassifier": {
        "model": "scratch",
        "scratch_hidden_size": 64,
        "scratch_num_layers": 2,
        "scratch_num_heads": 2,
        "scratch_mlm_epochs": 0,
        "epochs": 12,
        "early_stopping_patience": 0,
        "validation_split": 0.0,
    },
    # A GPT-2 this small, fine-tuned for one epoch, is no judge of intents: it acts only when the
    # tiny BERT is very unsure (threshold 0.3), so the conversations stay deterministic.
    "nlu_bert.GPT2FewShotIntentClassifier": {
        "model": "scratch",
        "fine_tune": True,
        "scratch_hidden_size": 64,
        "scratch_num_layers": 2,
        "scratch_num_heads": 2,
        "fine_tune_epochs": 1,
        "fine_tune_early_stopping_patience": 0,
        "fine_tune_validation_split": 0.0,
        "n_shot": 1,
        "max_candidates": 3,
        "similarity_candidates": 0,
        "max_prompt_tokens": 128,
        "max_text_tokens": 32,
        "threshold": 0.3,
        "ambiguity_threshold": 0.02,
    },
}
POLICY_PATCH: Dict[str, Dict[str, Any]] = {"TEDPolicy": {"epochs": 10}}

_COMPONENT_MODULES = {
    "nlu_bert.BertIntentClassifier": "nlu_bert.classifiers.bert_intent_classifier",
    "nlu_bert.GPT2FewShotIntentClassifier": "nlu_bert.classifiers.gpt2_fewshot_classifier",
}
# Used only while a component's module does not exist yet (see test_pipeline_is_the_real_one).
_STAND_IN = [
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "DIETClassifier", "epochs": 60, "entity_recognition": False},
]


def component_available(name: str) -> bool:
    return importlib.util.find_spec(_COMPONENT_MODULES[name]) is not None


def build_test_config(source: Path = REPO_ROOT / "config.offline.yml") -> Dict[str, Any]:
    """``config.offline.yml`` with tiny sizes; stand-ins for components not written yet."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    pipeline: List[Dict[str, Any]] = []
    stand_in_added = False
    for component in config["pipeline"]:
        name = component["name"]
        if name in TINY:
            if not component_available(name):
                warnings.warn(f"{name} is not written yet: the test model uses DIETClassifier instead", stacklevel=2)
                if not stand_in_added:
                    pipeline.extend(copy.deepcopy(_STAND_IN))
                    stand_in_added = True
                continue
            component = {**component, **TINY[name]}
        pipeline.append(component)
    config["pipeline"] = pipeline
    config["policies"] = [{**p, **POLICY_PATCH.get(p["name"], {})} for p in config["policies"]]
    return config


def subprocess_env(**extra: str) -> Dict[str, str]:
    """rasa_process.test_env, also silencing Python warnings in the assistant's processes."""
    return test_env(**{"SQLALCHEMY_SILENCE_UBER_WARNING": "1", "PYTHONWARNINGS": "ignore", **extra})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def http_json(method: str, url: str, body: Optional[Any] = None, timeout: float = 60.0) -> Any:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


class Process:
    """A server started in its own process group, its output in a log file."""

    def __init__(self, name: str, args: List[str], env: Dict[str, str], log: Path, ready_url: str) -> None:
        self.name, self.args, self.env, self.log, self.ready_url = name, args, env, log, ready_url
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 240.0) -> None:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class RasaServer(Process):
    """``rasa run`` as ``make run`` starts it: the assistant's credentials.yml (REST, socket.io, the web chat
    page, the RequestGuard), the HTTP API behind a token, CORS for the page's origin and ``extra_origins``,
    127.0.0.1 only, a SQLite tracker store. ``restart()`` keeps the store."""

    TOKEN = "test-token-" + os.urandom(8).hex()

    def __init__(
        self, model: Path, work: Path, action_url: str, env: Dict[str, str], extra_origins: List[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.origins = [self.url, f"http://localhost:{self.port}", *extra_origins]
        self.tracker_db = work / "tracker.db"
        endpoints = {
            "action_endpoint": {"url": action_url},
            "tracker_store": {"type": "SQL", "dialect": "sqlite", "db": str(self.tracker_db)},
        }
        self.endpoints = work / "endpoints.yml"
        self.endpoints.write_text(yaml.safe_dump(endpoints), encoding="utf-8")
        args = [
            PYTHON,
            "-m",
            "rasa",
            "run",
            "--enable-api",
            "--auth-token",
            self.TOKEN,
            "--cors",
            *self.origins,
            "--model",
            str(model),
            "--endpoints",
            str(self.endpoints),
            "--credentials",
            str(REPO_ROOT / "rasa_project" / "credentials.yml"),
            "--port",
            str(self.port),
            "--interface",
            "127.0.0.1",
        ]
        super().__init__("rasa run", args, env, work / "rasa_run.log", f"{self.url}/status?token={self.TOKEN}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def say(self, sender: str, text: str) -> List[Dict[str, Any]]:
        return http_json("POST", f"{self.url}/webhooks/rest/webhook", {"sender": sender, "message": text})

    def say_text(self, sender: str, text: str) -> str:
        return "\n".join(r.get("text", "") for r in self.say(sender, text))

    def parse(self, text: str) -> Dict[str, Any]:
        return http_json("POST", f"{self.url}/model/parse?token={self.TOKEN}", {"text": text})

    def tracker(self, sender: str) -> Dict[str, Any]:
        return http_json("GET", f"{self.url}/conversations/{quote(sender, safe='')}/tracker?token={self.TOKEN}")

    def user_texts(self, sender: str) -> List[str]:
        return [e.get("text") for e in self.tracker(sender)["events"] if e["event"] == "user"]
