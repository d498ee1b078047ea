"""Fixtures shared by every test: Rasa model storage, execution contexts, tiny data.

Nothing here downloads anything. Tiny models are built by the fixtures of each test folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

# No test may reach for the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rasa.engine.graph import ExecutionContext, GraphSchema  # noqa: E402
from rasa.engine.storage.local_model_storage import LocalModelStorage  # noqa: E402
from rasa.engine.storage.resource import Resource  # noqa: E402
from rasa.shared.nlu.training_data.message import Message  # noqa: E402
from rasa.shared.nlu.training_data.training_data import TrainingData  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

# A small Chinese bot: 4 intents, written for these tests (not taken from any dataset).
TINY_BOT: Dict[str, List[str]] = {
    "greet": ["你好", "您好", "嗨", "早上好", "晚上好", "你好呀", "哈喽", "嗨你好", "下午好", "您好啊", "你好你好", "早安"],
    "goodbye": ["再见", "拜拜", "回头见", "下次见", "明天见", "先走了", "拜拜啦", "再会", "晚安", "我走了", "就这样吧再见", "好的再见"],
    "check_order": [
        "我的订单到哪了", "查一下订单", "订单状态", "我的快递呢", "帮我查订单", "订单什么时候到",
        "查询订单进度", "我买的东西发货了吗", "订单号是多少", "看看我的订单", "物流信息", "包裹到哪里了",
    ],
    "refund": [
        "我要退款", "申请退货", "怎么退钱", "退款多久到账", "我想退货", "退货流程", "能退吗",
        "不想要了要退款", "退款申请", "帮我退款", "商品有问题要退", "如何办理退货",
    ],
}


def tiny_training_data(bot: Dict[str, List[str]] = TINY_BOT) -> TrainingData:
    examples = [
        Message(data={"text": text, "intent": intent}) for intent, texts in bot.items() for text in texts
    ]
    return TrainingData(training_examples=examples)


@pytest.fixture
def model_storage(tmp_path: Path) -> LocalModelStorage:
    return LocalModelStorage(tmp_path / "model_storage")


@pytest.fixture
def execution_context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), model_id="test-model")


@pytest.fixture
def tiny_data() -> TrainingData:
    return tiny_training_data()


@pytest.fixture
def resource_factory() -> Callable[[str], Resource]:
    return lambda name: Resource(name)


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
