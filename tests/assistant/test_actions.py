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
from rasa_project.actions import identity
from rasa_project.actions.common import find_order_id, when
from rasa_project.actions.handoff import ActionHumanHandoff, agents_online
from rasa_project.actions.orders import (
    ActionAnswerOrder,
    ActionAskOrderId,
    ActionAskPhoneLast4,
    ActionAskReturnReason,
    ActionSubmitReturn,
    ValidateOrderForm,
    ValidateReturnForm,
)
from rasa_project.actions.shop import (
    ActionClaimCoupons,
    ActionListCoupons,
    ActionProductInfo,
    match_product,
    parse_quantity,
)


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
    return Tracker(sender, slots or {}, latest, events, False, None, {"name": active_loop} if active_loop else {}, None)


#: the last four digits of the phone on each demo order (rasa_project/db.py seed)
PHONE = {
    "2405180031": "5678",
    "2405200117": "1357",
    "2405210422": "2468",
    "2405150876": "5678",
    "2405190555": "4826",
    "2405220009": "7913",
}


def verified(order_id: str, **slots: Any) -> Dict[str, Any]:
    """Slots of a conversation that has verified the phone on ``order_id``."""
    return {"order_id": order_id, "verified_phone": PHONE[order_id], "phone_last4": PHONE[order_id], **slots}


def run(action, t: Tracker) -> tuple:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, {}))
    return "\n".join(m.get("text") or "" for m in dispatcher.messages), events


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2405180031", "2405180031"),
        ("订单号 2405 1800 31", "2405180031"),
        ("123", None),
        (None, None),
        ("24051800311", None),
    ],
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


def test_a_database_of_an_older_version_is_named_not_used(tmp_path, capsys) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:  # the orders table as the previous version made it: no phone
        connection.execute("CREATE TABLE orders (order_id VARCHAR(32) PRIMARY KEY, customer VARCHAR(64))")
    url = f"sqlite:///{path}"
    assert (
        db.schema_problem(url) == "the table orders has no column product_id, quantity, amount, status, "
        "created_at, shipped_at, delivered_at, carrier, tracking_no, phone"
    )
    assert db.main(["init", "--url", url]) == 1
    assert "init --reset" in capsys.readouterr().err
    assert db.main(["init", "--reset", "--url", url]) == 0 and db.schema_problem(url) is None


def test_show_masks_the_phones(shop: str, capsys) -> None:
    db.show(shop)
    out = capsys.readouterr().out
    assert "138****5678" in out and "13812345678" not in out


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
    text, events = run(ActionAnswerOrder(), tracker(verified(order_id, order_query=query)))
    assert order_id in text
    for word in expected:
        assert word in text
    assert events == []


@pytest.mark.parametrize(
    "slots",
    [
        {"order_id": "2405200117"},  # never verified
        {"order_id": "2405200117", "verified_phone": "5678"},  # verified for another customer's order
        {"order_id": "2405999999", "verified_phone": "5678"},  # no such order
        {**verified("2405200117"), "verify_failures": 3.0},
    ],  # locked
)
def test_answer_order_shows_nothing_without_the_verified_phone(shop: str, slots: Dict[str, Any]) -> None:
    text, events = run(ActionAnswerOrder(), tracker(slots))
    for secret in ("智能手环", "中通", "ZT7531902468", "运输中", "没有找到"):
        assert secret not in text
    assert ("核对" in text) and events[0] == SlotSet("order_id", None)


def test_order_id_is_checked_then_the_phone_is_asked_for(shop: str) -> None:
    form, dispatcher = ValidateOrderForm(), CollectingDispatcher()
    ask = {"order_id": "2405200117", "phone_last4": None}
    assert form.validate_order_id("订单 2405200117", dispatcher, tracker(), {}) == ask
    assert form.validate_order_id("我忘了", dispatcher, tracker(), {}) == {"order_id": None}
    # an unknown number gets the same question as a real one: the bot does not say which numbers exist
    assert form.validate_order_id("2405999999", dispatcher, tracker(), {}) == {
        "order_id": "2405999999",
        "phone_last4": None,
    }
    assert [m["text"] for m in dispatcher.messages] == ["订单号是 10 位数字，可以在“我的订单”里找到，请再核对一下。"]
    text, _ = run(ActionAskPhoneLast4(), tracker({"order_id": "2405200117"}))
    assert "2405200117" in text and "后四位" in text


def validate_phone(form, slots: Dict[str, Any], typed: str, sender: str = "customer-1") -> tuple:
    dispatcher = CollectingDispatcher()
    t = tracker({**slots, "phone_last4": typed}, texts=[typed], sender=sender)
    result = form.validate_phone_last4(typed, dispatcher, t, {})
    return result, "\n".join(m["text"] for m in dispatcher.messages)


@pytest.mark.parametrize("typed", ["1357", "尾号 1357", "13700001357", "137-0000-1357"])
def test_the_right_digits_verify_the_conversation(shop: str, typed: str) -> None:
    result, text = validate_phone(ValidateOrderForm(), {"order_id": "2405200117"}, typed)
    assert result == {"phone_last4": "1357", "verified_phone": "1357"} and text == ""
    with db.session_scope(shop) as session:
        check = session.query(db.IdentityCheck).one()
        assert (check.order_id, check.sender_id, check.ok) == ("2405200117", "customer-1", True)


def test_a_wrong_factor_shows_nothing_and_tries_are_limited(shop: str) -> None:
    form, slots = ValidateOrderForm(), {"order_id": "2405200117"}
    result, text = validate_phone(form, slots, "5678")
    assert result == {"order_id": None, "phone_last4": None, "verify_failures": 1.0}
    assert "对不上" in text and "还可以再试 2 次" in text and "智能手环" not in text
    # the same answer for an order that does not exist: no oracle for order numbers
    result, text_unknown = validate_phone(form, {"order_id": "2405999999", "verify_failures": 1.0}, "5678")
    assert result["verify_failures"] == 2.0 and text_unknown.replace("1 次", "2 次") == text
    result, text = validate_phone(form, {**slots, "verify_failures": 2.0}, "0000")
    assert result == {"order_id": None, "phone_last4": None, "verify_failures": 3.0} and text == ""
    # locked: the form ends at once, and even the right digits no longer show the order
    locked = tracker({**slots, "verify_failures": 3.0, "verified_phone": "1357"})
    assert asyncio.run(form.required_slots(["order_id", "phone_last4"], CollectingDispatcher(), locked, {})) == []
    text, _ = run(ActionAnswerOrder(), locked)
    assert text == identity.LOCKED_TEXT
    # a digit string that is not four digits is asked again without costing a try
    result, text = validate_phone(form, slots, "我不记得了")
    assert result == {"phone_last4": None} and "4 个数字" in text


def test_an_order_is_locked_after_too_many_failures_across_conversations(shop: str) -> None:
    form = ValidateOrderForm()
    for i in range(db.ORDER_LOCK_FAILURES):
        validate_phone(form, {"order_id": "2405200117"}, f"{i:04d}", sender=f"attacker-{i}")
    result, text = validate_phone(form, {"order_id": "2405200117"}, "1357", sender="owner")
    assert result == {"order_id": None, "phone_last4": None} and text == identity.ORDER_LOCKED_TEXT
    result, _ = validate_phone(form, {"order_id": "2405180031"}, "5678", sender="owner")
    assert result["verified_phone"] == "5678"  # other orders are not affected


def test_the_verified_phone_is_kept_for_the_conversation(shop: str) -> None:
    form, dispatcher = ValidateOrderForm(), CollectingDispatcher()
    kept = {"verified_phone": "5678", "phone_last4": "5678"}
    # another order with the same phone: no second question
    result = form.validate_order_id("2405150876", dispatcher, tracker(kept), {})
    assert result == {"order_id": "2405150876", "phone_last4": "5678"}
    # an order with another phone: the digits are asked for again
    result = form.validate_order_id("2405200117", dispatcher, tracker(kept), {})
    assert result == {"order_id": "2405200117", "phone_last4": None}
    assert dispatcher.messages == []


def test_the_kept_digits_typed_for_another_customers_order_are_a_wrong_try(shop: str) -> None:
    result, text = validate_phone(ValidateOrderForm(), {"order_id": "2405200117", "verified_phone": "5678"}, "5678")
    assert result == {"order_id": None, "phone_last4": None, "verify_failures": 1.0} and "对不上" in text
    result, text = validate_phone(ValidateOrderForm(), {"order_id": "2405150876", "verified_phone": "5678"}, "5678")
    assert result == {"phone_last4": "5678"} and text == ""  # the same customer's order: no new check


def test_two_order_numbers_in_one_message_are_asked_about(shop: str) -> None:
    form, dispatcher = ValidateOrderForm(), CollectingDispatcher()
    message = "帮我查一下2405180031和2405200117"
    t = tracker(texts=[message])
    assert form.validate_order_id("2405200117", dispatcher, t, {}) == {"order_id": None}
    assert "2 个订单号" in dispatcher.messages[0]["text"] and "2405180031、2405200117" in dispatcher.messages[0]["text"]
    text, _ = run(ActionAskOrderId(), tracker(texts=[message], active_loop="order_form"))
    assert text == ""  # no second question in the same turn


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
    # before the phone is verified nothing is said about the order
    dispatcher = CollectingDispatcher()
    assert ValidateReturnForm().validate_order_id(order_id, dispatcher, tracker(), {}) == {
        "order_id": order_id,
        "phone_last4": None,
    }
    assert dispatcher.messages == []
    result, text = validate_phone(ValidateReturnForm(), {"order_id": order_id}, PHONE[order_id])
    assert result["verified_phone"] == PHONE[order_id]
    assert result.get("order_id", order_id) == (order_id if accepted else None)
    assert (why in text) if not accepted else text == ""


def test_return_reason_validation() -> None:
    form, dispatcher = ValidateReturnForm(), CollectingDispatcher()
    assert form.validate_return_reason("质量问题", dispatcher, tracker(), {}) == {"return_reason": "质量问题"}
    for no_reason in ("嗯", "😀😀😀", "？？！"):
        assert form.validate_return_reason(no_reason, dispatcher, tracker(), {}) == {"return_reason": None}


def test_submit_return_writes_the_request_once(shop: str) -> None:
    slots = verified("2405180031", return_reason="尺寸不合适")
    text, events = run(ActionSubmitReturn(), tracker({**slots, "verified_phone": "1357"}))
    assert "核对" in text and "R0" not in text  # not verified for this order: nothing registered
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
        # names BERT found that are no database name nor synonym: the product sharing the most characters
        ({}, [{"entity": "product", "value": "降噪蓝牙耳塞"}], ["蓝牙耳机", "¥299.00"]),
        ({}, [{"entity": "product", "value": "保温瓶"}], ["保温杯", "¥89.00"]),
        # a quantity gives the price of that many, and says when the stock is short
        (
            {},
            [{"entity": "quantity", "value": "两"}, {"entity": "product", "value": "保温杯"}],
            ["2 件共 ¥178.00"],
        ),
        (
            {},
            [{"entity": "product", "value": "空气炸锅"}, {"entity": "quantity", "value": "20"}],
            ["20 件共 ¥7,180.00", "现货只有 12 件"],
        ),
    ],
)
def test_product_info(shop: str, slots, entities, expected) -> None:
    text, _ = run(ActionProductInfo(), tracker(slots, entities=entities, texts=["问一下"]))
    for word in expected:
        assert word in text


def test_product_info_remembers_the_database_name(shop: str) -> None:
    _, events = run(ActionProductInfo(), tracker(entities=[{"entity": "product", "value": "运动手环"}]))
    assert events == [SlotSet("product", "智能手环")]
    _, events = run(ActionProductInfo(), tracker(entities=[{"entity": "product", "value": "无人机"}]))
    assert events == []


@pytest.mark.parametrize(
    "name, expected",
    [
        ("蓝牙耳机", "蓝牙耳机"),
        ("牙耳机", "蓝牙耳机"),  # a span one character short still names it
        ("运动手环", "智能手环"),
        ("儿童牙刷", "电动牙刷"),
        ("电热水壶", None),  # one shared character is no match
        ("无人机", None),
        ("", None),
        (None, None),
    ],
)
def test_match_product(shop: str, name, expected) -> None:
    with db.session_scope() as session:
        products = session.query(db.Product).order_by(db.Product.id).all()
        found = match_product(products, name)
        assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    "value, expected",
    [("3", 3), ("３", 3), ("两", 2), ("十", 10), ("十二", 12), ("二十", 20), ("二十三", 23), ("0", None)]
    + [("1000", None), ("几", None), ("", None), (None, None), ("三五", None)],
)
def test_parse_quantity(value, expected) -> None:
    assert parse_quantity(value) == expected


def test_coupons_listed_then_claimed_once(shop: str) -> None:
    text, _ = run(ActionListCoupons(), tracker(sender="c1"))
    assert "NEW20" in text and "一键领取" in text
    for not_a_yes in ("😀", "👍👍", "！！！"):  # never read as a yes, whatever the NLU said
        text, _ = run(ActionClaimCoupons(), tracker(texts=[not_a_yes], sender="c1"))
        assert "已为您领取" not in text and "好的" in text
    text, _ = run(ActionClaimCoupons(), tracker(texts=["好的"], sender="c1"))
    assert "已为您领取 3 张" in text
    with db.session_scope(shop) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id="c1").count() == 3
    text, _ = run(ActionListCoupons(), tracker(sender="c1"))
    assert "已领取" in text and "都已经领过" in text
    text, _ = run(ActionClaimCoupons(), tracker(texts=["好"], sender="c1"))
    assert "都已经领过" in text
    text, _ = run(ActionListCoupons(), tracker(sender="c2"))
    assert "一键领取" in text  # another customer still can
    text, _ = run(ActionListCoupons(), tracker(sender="c2", active_loop="return_form"))
    assert "需要我帮您一键领取吗" not in text and "办完" in text  # inside a form no yes/no question


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
