"""Test data and helpers shared by every test folder (import as `from nlu_testing import ...`).

A module with a unique name: nested conftest.py files all share the module name `conftest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

# A small Chinese bot: 4 intents, written for these tests (not taken from any dataset).
TINY_BOT: Dict[str, List[str]] = {
    "greet": [
        "你好",
        "您好",
        "嗨",
        "早上好",
        "晚上好",
        "你好呀",
        "哈喽",
        "嗨你好",
        "下午好",
        "您好啊",
        "你好你好",
        "早安",
    ],
    "goodbye": [
        "再见",
        "拜拜",
        "回头见",
        "下次见",
        "明天见",
        "先走了",
        "拜拜啦",
        "再会",
        "晚安",
        "我走了",
        "就这样吧再见",
        "好的再见",
    ],
    "check_order": [
        "我的订单到哪了",
        "查一下订单",
        "订单状态",
        "我的快递呢",
        "帮我查订单",
        "订单什么时候到",
        "查询订单进度",
        "我买的东西发货了吗",
        "订单号是多少",
        "看看我的订单",
        "物流信息",
        "包裹到哪里了",
    ],
    "refund": [
        "我要退款",
        "申请退货",
        "怎么退钱",
        "退款多久到账",
        "我想退货",
        "退货流程",
        "能退吗",
        "不想要了要退款",
        "退款申请",
        "帮我退款",
        "商品有问题要退",
        "如何办理退货",
    ],
}


def make_storage(path: Path) -> LocalModelStorage:
    """Rasa's model storage in ``path``: the one way tests build it (the conftest fixtures use it too)."""
    path.mkdir(parents=True, exist_ok=True)
    return LocalModelStorage(path)


def make_context(model_id: str = "test-model") -> ExecutionContext:
    """An execution context with an empty graph, as a component sees it outside ``rasa train``."""
    return ExecutionContext(GraphSchema({}), model_id=model_id)


def write_nlu(path: Path, bot: Dict[str, List[str]] = TINY_BOT) -> Path:
    """``bot`` ({intent: texts}) as a Rasa NLU YAML file at ``path``."""
    import yaml

    nlu = [{"intent": intent, "examples": "".join(f"- {t}\n" for t in texts)} for intent, texts in bot.items()]
    path.write_text(
        yaml.safe_dump({"version": "3.1", "nlu": nlu}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return path


def tiny_training_data(bot: Dict[str, List[str]] = TINY_BOT) -> TrainingData:
    examples = [Message(data={"text": text, "intent": intent}) for intent, texts in bot.items() for text in texts]
    return TrainingData(training_examples=examples)


def shared_dataset(*parts: str) -> Path:
    """Path into ../shared/datasets; the test is skipped where the datasets are absent."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def messages(texts: List[str]) -> List[Message]:
    return [Message(data={"text": t}) for t in texts]


def split_pairs(data: TrainingData) -> Tuple[List[str], List[str]]:
    texts = [m.get("text") for m in data.intent_examples]
    return texts, [m.get("intent") for m in data.intent_examples]
