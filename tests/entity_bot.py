"""A synthetic Chinese bot with entities, written for these tests (import as `from entity_bot import ...`).

Templates x values, with exact character offsets; roles (a ticket's `from` / `to` city) and groups (two orders in
one message). Mixed scripts on purpose: Latin product names with spaces, digits, full-width digits.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

PRODUCTS = ["蓝牙耳机", "充电宝", "保温杯", "iPhone 15", "电动牙刷", "机械键盘", "小米手环", "AirPods Pro"]
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都"]
COUNTS = ["两", "三", "5", "10", "１２"]
REASONS = ["质量问题", "尺码不对", "不想要了", "发错货了"]

# (intent, template); {slot} or {slot:role} or {slot@group}
TEMPLATES: List[Tuple[str, str]] = [
    ("buy", "我想买{product}"),
    ("buy", "帮我下单{count}个{product}"),
    ("buy", "来{count}件{product}吧"),
    ("buy", "{product}还有货吗，我要{count}个"),
    ("buy", "给我拿一个{product}"),
    ("return", "{product}有{reason}，我要退货"),
    ("return", "我买的{product}想退，因为{reason}"),
    ("return", "退货原因是{reason}"),
    ("ticket", "订一张从{city:from}到{city:to}的票"),
    ("ticket", "我要去{city:to}，从{city:from}出发"),
    ("ticket", "{city:from}飞{city:to}的机票"),
    ("greet", "你好"),
    ("greet", "在吗"),
    ("greet", "早上好呀"),
    ("order", "买{count@1}个{product@1}和{count@2}个{product@2}"),
    ("order", "要{count@1}个{product@1}，再要{count@2}个{product@2}"),
    ("order", "{product@1}来{count@1}个，{product@2}来{count@2}个"),
]


def fill(
    template: str, rng: random.Random, values: Optional[Dict[str, List[str]]] = None
) -> Tuple[str, List[Dict[str, Any]]]:
    """The text of ``template`` with random values, and its Rasa entity dicts."""
    pools = {"product": PRODUCTS, "city": CITIES, "count": COUNTS, "reason": REASONS, **(values or {})}
    text, entities, rest = "", [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        text += before
        name, role, group = slot, None, None
        if ":" in slot:
            name, role = slot.split(":")
        if "@" in slot:
            name, group = slot.split("@")
        value = rng.choice(pools[name])
        entity: Dict[str, Any] = {"entity": name, "start": len(text), "end": len(text) + len(value), "value": value}
        if role:
            entity["role"] = role
        if group:
            entity["group"] = group
        entities.append(entity)
        text += value
    return text + rest, entities


def examples(per_template: int, seed: int = 0, values: Optional[Dict[str, List[str]]] = None) -> List[Message]:
    """Up to ``per_template`` different messages of each template."""
    rng = random.Random(seed)
    out, seen = [], set()
    for intent, template in TEMPLATES:
        made = 0
        for _ in range(per_template * 20):
            if made == per_template:
                break
            text, entities = fill(template, rng, values)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            data: Dict[str, Any] = {"text": text, "intent": intent}
            if entities:
                data["entities"] = entities
            out.append(Message(data=data))
    return out


def training_data(per_template: int = 8, seed: int = 0) -> TrainingData:
    return TrainingData(training_examples=examples(per_template, seed))


def spans(message: Message) -> List[Tuple[int, int, str, Optional[str], Optional[str]]]:
    return sorted(
        (e["start"], e["end"], e["entity"], e.get("role"), e.get("group")) for e in message.get("entities") or []
    )
