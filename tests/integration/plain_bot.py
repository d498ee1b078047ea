"""A plain Rasa bot, nothing of the sample assistant: served as any bot would serve it with the REST channel, Rasa's
socket.io channel with session persistence and the RequestGuard, the HTTP API behind a token, on 127.0.0.1.

Rasa's own components only (KeywordIntentClassifier, RulePolicy): it trains in seconds, so the guard is checked
on a bot it knows nothing about.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from rasa_process import RASA, background, free_port, run_rasa

CONFIG = """
recipe: default.v1
language: zh
assistant_id: plain-bot
pipeline:
  - name: KeywordIntentClassifier
policies:
  - name: RulePolicy
"""
DOMAIN = """
version: "3.1"
intents: [greet, goodbye, ask_time]
responses:
  utter_greet:
    - text: "你好！我是测试机器人。"
  utter_goodbye:
    - text: "再见！"
  utter_time:
    - text: "我们 9 点到 22 点营业。"
  utter_default:
    - text: "抱歉，我没太理解。"
"""
NLU = """
version: "3.1"
nlu:
- intent: greet
  examples: |
    - 你好
    - hello
- intent: goodbye
  examples: |
    - 再见
    - bye
- intent: ask_time
  examples: |
    - 几点
    - 营业
"""
RULES = """
version: "3.1"
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
- rule: goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
- rule: time
  steps:
  - intent: ask_time
  - action: utter_time
"""
CREDENTIALS = """
rest:
socketio:
  user_message_evt: user_uttered
  bot_message_evt: bot_uttered
  session_persistence: true
nlu_bert.http_guard.RequestGuard:
"""


class PlainBot(NamedTuple):
    url: str
    token: str
    log: Path


@pytest.fixture(scope="session")
def plain_bot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("plain-bot")
    for name, text in (("config.yml", CONFIG), ("domain.yml", DOMAIN), ("credentials.yml", CREDENTIALS)):
        (project / name).write_text(text, encoding="utf-8")
    (project / "data").mkdir()
    (project / "data" / "nlu.yml").write_text(NLU, encoding="utf-8")
    (project / "data" / "rules.yml").write_text(RULES, encoding="utf-8")
    result = run_rasa(["train", "--out", "models", "--fixed-model-name", "plain"], cwd=project, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project / "models" / "plain.tar.gz"


@pytest.fixture(scope="module")
def plain_bot(plain_bot_model: Path) -> Iterator[PlainBot]:
    project = plain_bot_model.parent.parent
    token = os.urandom(12).hex()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = project / f"rasa-{port}.log"
    args = [
        RASA,
        "run",
        "--model",
        str(plain_bot_model),
        "--credentials",
        "credentials.yml",
        "--enable-api",
        "--auth-token",
        token,
        "--port",
        str(port),
        "-i",
        "127.0.0.1",
    ]
    with background(args, project, log, ready_url=f"{url}/status?token={token}"):
        yield PlainBot(url, token, log)
