"""nlu_bert/action_payload.py: with ``events_last_turns`` the action server gets the last turns' events, the rest of
the request is Rasa's, and the sample assistant's actions answer exactly as they do with every event.

Requests are built by Rasa's ``RemoteAction`` for long random conversations (forms, slots, reverts, restarts,
new sessions), once with Rasa's own ``_action_call_format`` and once with the installed one, and each is run
through rasa_sdk's ``ActionExecutor`` with the sample assistant's actions, against two copies of the seeded shop
database (handoff tickets are numbered by the database).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from nlu_bert import action_payload
from rasa_project import db

from dialogue_fixtures import random_conversation

TEXTS = [
    "蓝牙耳机多少钱",
    "我的订单 2405180031 到哪了",
    "5678",
    "有什么优惠券",
    "领取优惠券",
    "转人工",
    "我要退货",
    "质量问题",
]


@pytest.fixture
def installed() -> Iterator[None]:
    action_payload.install()
    yield
    action_payload.uninstall()


def conversation(domain: Domain, seed: int, turns: int) -> List[Any]:
    """A random conversation whose user messages are the sample assistant's kind (products, orders, phones)."""
    rng = random.Random(seed)
    out: List[Any] = []
    for event in random_conversation(domain, rng, turns):
        if isinstance(event, UserUttered):
            text = rng.choice(TEXTS)
            entities = [{"entity": "order_id", "value": "2405180031", "start": 5, "end": 15}] if "2405" in text else []
            event = UserUttered(text, event.intent, entities, timestamp=event.timestamp)
            out.append(event)
            if rng.random() < 0.3:  # what a form extracts from the message
                out.append(SlotSet("order_id" if entities else "phone_last4", "2405180031" if entities else "5678"))
            continue
        out.append(event)
    return out


def requests(action: RemoteAction, tracker: DialogueStateTracker, domain: Domain) -> Any:
    """(Rasa's request, the installed one's)."""
    action_payload.uninstall()
    try:
        rasas = action._action_call_format(tracker, domain)
    finally:
        action_payload.install()
    return rasas, action._action_call_format(tracker, domain)


def user_messages(events: List[Any]) -> int:
    return sum(isinstance(e, UserUttered) for e in events)


@pytest.mark.parametrize("turns", [1, 5, 10])
def test_only_the_events_are_cut_and_they_are_the_last_turns(domain: Domain, installed: None, turns: int) -> None:
    action = RemoteAction("action_human_handoff", EndpointConfig("http://actions", events_last_turns=turns))
    events = conversation(domain, turns, 40)
    for length in range(1, len(events) + 1, 3):
        tracker = DialogueStateTracker.from_events("payload", events[:length], domain.slots)
        rasas, got = requests(action, tracker, domain)
        sent, whole = got["tracker"].pop("events"), rasas["tracker"].pop("events")
        assert json.dumps(got, sort_keys=False) == json.dumps(rasas, sort_keys=False)  # same fields, same order
        assert sent == whole[len(whole) - len(sent) :]
        if user_messages(events[:length]) >= turns:
            assert sent[0]["event"] == "user" and sum(e["event"] == "user" for e in sent) == turns
        else:
            assert sent == whole


def test_without_the_key_or_with_enough_turns_the_request_is_rasas(domain: Domain, installed: None) -> None:
    events = conversation(domain, 3, 20)
    tracker = DialogueStateTracker.from_events("payload", events, domain.slots)
    for endpoint in (EndpointConfig("http://actions"), EndpointConfig("http://actions", events_last_turns=10_000)):
        rasas, got = requests(RemoteAction("action_list_coupons", endpoint), tracker, domain)
        assert json.dumps(got) == json.dumps(rasas)


@pytest.mark.parametrize("value", [0, -3, "many", "2.5", None])
def test_a_value_that_is_not_a_whole_number_sends_every_event(
    domain: Domain, installed: None, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = DialogueStateTracker.from_events("payload", conversation(domain, 4, 12), domain.slots)
    action = RemoteAction("action_list_coupons", EndpointConfig("http://actions", events_last_turns=value))
    with caplog.at_level(logging.WARNING):
        rasas, got = requests(action, tracker, domain)
    assert got == rasas
    assert (value is None) == ("events_last_turns" not in caplog.text)


def test_settings_from_endpoints_yml_are_read_as_numbers() -> None:
    assert action_payload.turns_setting(EndpointConfig("http://a", events_last_turns="12")) == 12
    assert action_payload.turns_setting(EndpointConfig("http://a")) is None
    assert action_payload.turns_setting(None) is None


def run_actions(payloads: List[Dict[str, Any]]) -> List[Any]:
    from rasa_sdk.executor import ActionExecutor

    executor = ActionExecutor()
    executor.register_package("rasa_project.actions")
    results = []
    for payload in payloads:
        try:
            results.append(asyncio.run(executor.run(json.loads(json.dumps(payload)))))
        except Exception as error:  # noqa: BLE001 - an action that fails must fail the same way
            results.append(f"{type(error).__name__}: {error}")
    return results


def test_the_sample_assistants_actions_answer_the_same(
    domain: Domain, installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every custom action and form validation of the sample assistant, at every 4th event of long conversations,
    with every event and with the last 5 (the fewest its actions need) and 10 turns' events."""
    names = [a for a in domain.user_actions if a.startswith(("action_", "validate_")) and a != "action_listen"]
    assert "action_human_handoff" in names and "validate_order_form" in names
    payloads: Dict[str, List[Dict[str, Any]]] = {"rasa": [], "5": [], "10": []}
    for seed in range(3):
        events = conversation(domain, 20 + seed, 30)
        for length in range(4, len(events) + 1, 4):
            tracker = DialogueStateTracker.from_events(f"sdk-{seed}", copy.deepcopy(events[:length]), domain.slots)
            name = names[(seed + length) % len(names)]
            for turns in (5, 10):
                endpoint = EndpointConfig("http://actions", events_last_turns=turns)
                rasas, got = requests(RemoteAction(name, endpoint), tracker, domain)
                payloads[str(turns)].append(got)
            payloads["rasa"].append(rasas)
    assert sum(len(p["tracker"]["events"]) for p in payloads["5"]) < sum(
        len(p["tracker"]["events"]) for p in payloads["rasa"]
    )
    results = {}
    for kind, kind_payloads in payloads.items():
        url = f"sqlite:///{tmp_path / kind}.db"
        assert db.seed(url) is True
        monkeypatch.setenv(db.DB_URL_ENV, url)
        results[kind] = run_actions(kind_payloads)
        with db.session_scope(url) as session:  # what the handoff tickets say (the last user texts)
            tickets = [(t.sender_id, t.summary) for t in session.query(db.HandoffTicket).order_by(db.HandoffTicket.id)]
        results[kind].append(tickets)
    assert len(results["rasa"][-1]) >= 3 and any(summary.count(" / ") == 4 for _, summary in results["rasa"][-1])
    assert results["5"] == results["rasa"]
    assert results["10"] == results["rasa"]
