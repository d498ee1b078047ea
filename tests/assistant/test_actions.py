"""The custom actions against a real (temporary) SQLite shop database, without any server."""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from rasa_project import db
from rasa_project.actions.common import find_order_id, when
from rasa_project.actions.handoff import ActionHumanHandoff, agents_online
from rasa_project.actions.orders import (
    ActionAnswerOrder,
    ActionAskOrderId,
    ActionAskReturnReason,
    ActionSubmitReturn,
    ValidateOrderForm,
    ValidateReturnForm,
)
from rasa_project.actions.shop import ActionClaimCoupons, ActionListCoupons, ActionProductInfo


@pytest.fixture
def shop(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.setenv(db.DB_URL_ENV, url)
    assert db.seed(url) is True
    return url


def tracker(
    slots: Optional[Dict[str, Any]] = None,
    entities: Optional[List[Dict[str, Any]]] = None,
    texts: Optional[List[str]] = None,
    active_loop: Optional[str] = None,
    sender: str = "customer-1",
) -> Tracker:
    events = [{"event": "user", "text": t} for t in (texts or [])]
    latest = {"text": (texts or [""])[-1], "entities": entities or [], "intent": {}}
    return Tracker(
        sender, slots or {}, latest, events, False, None, {"name": active_loop} if active_loop else {}, None
    )


def run(action, t: Tracker) -> tuple:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, {}))
    return "\n".join(m.get("text") or "" for m in dispatcher.messages), events


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "value, expected",
    [("2405180031", "2405180031"), ("订单号 2405 1800 31", "2405180031"), ("123", None), (None, None),
     ("24051800311", None)],
)
def test_find_order_id(value, expected) -> None:
    assert find_order_id(value) == expected


def test_when_reads_like_a_person() -> None:
    now = dt.datetime(2024, 5, 20, 15, 0)
    assert when(dt.datetime(2024, 5, 20, 9, 5), now) == "今天 09:05"
    assert when(dt.datetime(2024, 5, 19, 9, 5), now) == "昨天 09:05"
    assert when(dt.datetime(2024, 5, 17, 9, 5), now) == "3 天前"
    assert when(None, now) == "-"


# ------------------------------------------------------------------ database


def test_seed_is_idempotent_and_reset_restores(shop: str) -> None:
    assert db.seed(shop) is False
    with db.session_scope(shop) as session:
        assert session.query(db.Order).count() == 6
        session.add(db.HandoffTicket(sender_id="x", summary="y"))
    db.reset(shop)
    with db.session_scope(shop) as session:
        assert session.query(db.HandoffTicket).count() == 0
        assert session.query(db.Product).count() == len(db.PRODUCTS)


def test_database_url_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(db.DB_URL_ENV, raising=False)
    assert db.database_url() == db.DEFAULT_DB_URL
    monkeypatch.setenv(db.DB_URL_ENV, "postgresql+psycopg2://shop:pw@db.internal:5432/shop")
    assert db.database_url().startswith("postgresql+psycopg2://")


def test_db_cli_init_and_show(shop: str, capsys) -> None:
    assert db.main(["init", "--url", shop]) == 0
    assert "already seeded" in capsys.readouterr().out
    assert db.main(["show", "--url", shop]) == 0
    assert "2405180031" in capsys.readouterr().out


# ------------------------------------------------------------------ orders


@pytest.mark.parametrize(
    "order_id, query, expected",
    [
        ("2405200117", "status", ["智能手环", "运输中", "中通快递"]),
        ("2405210422", "status", ["空气炸锅", "备货"]),
        ("2405220009", "status", ["已取消"]),
        ("2405180031", "status", ["已签收", "蓝牙耳机"]),
        ("2405190555", "logistics", ["京东物流", "JDV002233445566", "成都"]),
        ("2405210422", "logistics", ["还没有发货"]),
    ],
)
def test_answer_order_reads_the_database(shop: str, order_id: str, query: str, expected: List[str]) -> None:
    text, events = run(ActionAnswerOrder(), tracker({"order_id": order_id, "order_query": query}))
    assert order_id in text
    for word in expected:
        assert word in text
    assert events == []


def test_answer_order_unknown_number(shop: str) -> None:
    text, events = run(ActionAnswerOrder(), tracker({"order_id": "2405999999"}))
    assert "没有找到" in text and events == [SlotSet("order_id", None)]


def test_order_form_validation(shop: str) -> None:
    form, dispatcher = ValidateOrderForm(), CollectingDispatcher()
    assert form.validate_order_id("订单 2405200117", dispatcher, tracker(), {}) == {"order_id": "2405200117"}
    assert form.validate_order_id("我忘了", dispatcher, tracker(), {}) == {"order_id": None}
    assert form.validate_order_id("2405999999", dispatcher, tracker(), {}) == {"order_id": None}
    texts = [m["text"] for m in dispatcher.messages]
    assert "10 位数字" in texts[0] and "没有找到" in texts[1]


@pytest.mark.parametrize(
    "order_id, accepted, why",
    [
        ("2405180031", True, ""),
        ("2405150876", False, "七天无理由"),
        ("2405200117", False, "还在路上"),
        ("2405210422", False, "还没有发货"),
        ("2405220009", False, "已经取消"),
    ],
)
def test_return_form_accepts_only_returnable_orders(shop: str, order_id: str, accepted: bool, why: str) -> None:
    dispatcher = CollectingDispatcher()
    result = ValidateReturnForm().validate_order_id(order_id, dispatcher, tracker(), {})
    assert result == {"order_id": order_id if accepted else None}
    if not accepted:
        assert why in dispatcher.messages[0]["text"]


def test_return_reason_validation() -> None:
    form, dispatcher = ValidateReturnForm(), CollectingDispatcher()
    assert form.validate_return_reason("质量问题", dispatcher, tracker(), {}) == {"return_reason": "质量问题"}
    assert form.validate_return_reason("嗯", dispatcher, tracker(), {}) == {"return_reason": None}


def test_submit_return_writes_the_request_once(shop: str) -> None:
    slots = {"order_id": "2405180031", "return_reason": "尺寸不合适"}
    text, events = run(ActionSubmitReturn(), tracker(slots, sender="buyer-7"))
    assert "R00001" in text and "尺寸不合适" in text
    assert events == [SlotSet("return_reason", None)]
    with db.session_scope(shop) as session:
        request = session.query(db.ReturnRequest).one()
        assert (request.order_id, request.reason, request.sender_id) == ("2405180031", "尺寸不合适", "buyer-7")
        assert session.get(db.Order, "2405180031").status == db.STATUS_RETURNING
    text, _ = run(ActionSubmitReturn(), tracker(slots))
    assert "已经有退货申请 R00001" in text
    with db.session_scope(shop) as session:
        assert session.query(db.ReturnRequest).count() == 1


def test_ask_order_id_depends_on_the_form() -> None:
    text, _ = run(ActionAskOrderId(), tracker(active_loop="return_form"))
    assert "退货的订单号" in text
    text, _ = run(ActionAskOrderId(), tracker({"order_query": "logistics"}, active_loop="order_form"))
    assert "查物流的订单号" in text
    text, _ = run(ActionAskReturnReason(), tracker({"order_id": "2405180031"}))
    assert "2405180031" in text and "原因" in text


# ------------------------------------------------------------------ products and coupons


@pytest.mark.parametrize(
    "slots, entities, expected",
    [
        ({}, [{"entity": "product", "value": "蓝牙耳机"}], ["蓝牙耳机", "¥299.00", "现货 120 件"]),
        ({"product": "充电宝"}, [], ["充电宝", "缺货"]),
        ({"product": "无人机"}, [], ["没有“无人机”", "空气炸锅"]),
        ({}, [], ["在售的商品有", "保温杯"]),
    ],
)
def test_product_info(shop: str, slots, entities, expected) -> None:
    text, _ = run(ActionProductInfo(), tracker(slots, entities=entities, texts=["问一下"]))
    for word in expected:
        assert word in text


def test_coupons_listed_then_claimed_once(shop: str) -> None:
    text, _ = run(ActionListCoupons(), tracker(sender="c1"))
    assert "NEW20" in text and "一键领取" in text
    text, _ = run(ActionClaimCoupons(), tracker(sender="c1"))
    assert "已为您领取 3 张" in text
    with db.session_scope(shop) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id="c1").count() == 3
    text, _ = run(ActionListCoupons(), tracker(sender="c1"))
    assert "已领取" in text and "都已经领过" in text
    text, _ = run(ActionClaimCoupons(), tracker(sender="c1"))
    assert "都已经领过" in text
    text, _ = run(ActionListCoupons(), tracker(sender="c2"))
    assert "一键领取" in text  # another customer still can


def test_expired_coupons_are_not_offered(shop: str) -> None:
    with db.session_scope(shop) as session:
        for coupon in session.query(db.Coupon):
            coupon.expires_at = dt.datetime.now() - dt.timedelta(days=1)
    text, _ = run(ActionListCoupons(), tracker())
    assert "没有可领的优惠券" in text


# ------------------------------------------------------------------ handoff


def test_handoff_writes_a_ticket_with_the_conversation(shop: str) -> None:
    t = tracker({"order_id": "2405200117"}, texts=["快递好几天没动了", "转人工"], sender="c9")
    text, _ = run(ActionHumanHandoff(), t)
    assert "H00001" in text
    with db.session_scope(shop) as session:
        ticket = session.query(db.HandoffTicket).one()
        assert ticket.sender_id == "c9"
        assert "2405200117" in ticket.summary and "快递好几天没动了" in ticket.summary


def test_agents_online_hours() -> None:
    assert agents_online(dt.datetime(2024, 5, 20, 9, 0))
    assert not agents_online(dt.datetime(2024, 5, 20, 22, 0))
    assert not agents_online(dt.datetime(2024, 5, 20, 3, 0))
