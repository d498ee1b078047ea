"""Orders: the forms' validation (order number, then the phone digits), the answer about an order, the return."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from rasa_project import db
from rasa_project.actions import identity
from rasa_project.actions.common import find_order_id, when, yuan

logger = logging.getLogger(__name__)


def return_blocker(session, order: db.Order, now: Optional[dt.datetime] = None) -> Optional[Text]:
    """Why ``order`` cannot be returned through the bot, or None when it can."""
    now = now or dt.datetime.now()
    if order.status == db.STATUS_RETURNING:
        request = (
            session.query(db.ReturnRequest)
            .filter(db.ReturnRequest.order_id == order.order_id)
            .order_by(db.ReturnRequest.id.desc())
            .first()
        )
        number = request.number if request else ""
        return f"订单 {order.order_id} 已经有退货申请 {number} 在处理中了，不用重复提交。"
    if order.status == db.STATUS_CANCELLED:
        return f"订单 {order.order_id} 已经取消，款项会原路退回，不需要再退货。"
    if order.status == db.STATUS_PENDING:
        return f"订单 {order.order_id} 还没有发货，不用退货：输入“转人工”，客服可以直接帮您取消订单并退款。"
    if order.status in (db.STATUS_SHIPPED, db.STATUS_OUT_FOR_DELIVERY):
        return f"订单 {order.order_id} 还在路上（{order.status}），可以签收后再申请退货，或者直接拒收。"
    if order.delivered_at and now - order.delivered_at > dt.timedelta(days=db.RETURN_WINDOW_DAYS):
        return (
            f"订单 {order.order_id} 已签收超过 {db.RETURN_WINDOW_DAYS} 天，过了七天无理由退货期。"
            "如果是质量问题，输入“转人工”，客服会帮您处理售后。"
        )
    return None


class ValidateOrderMixin:
    """The validation both forms share: the order number, then the phone digits that unlock the order."""

    check_returnable = False

    async def required_slots(
        self, domain_slots: List[Text], dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[Text]:
        # Too many wrong tries: the form ends at once and the answering action says why.
        return [] if identity.locked(tracker) else domain_slots

    def validate_order_id(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        several = identity.order_ids_in((tracker.latest_message or {}).get("text"))
        if len(several) > 1:
            dispatcher.utter_message(
                text=f"您的消息里有 {len(several)} 个订单号：{'、'.join(several)}。一次办理一个订单，请把要先办的那个订单号发给我。"
            )
            return {"order_id": None}
        order_id = find_order_id(slot_value)
        if order_id is None:
            dispatcher.utter_message(text="订单号是 10 位数字，可以在“我的订单”里找到，请再核对一下。")
            return {"order_id": None}
        with db.session_scope() as session:
            order = identity.verified_order(session, tracker, order_id)
            if order is None:
                # Not (yet) verified for this order: ask for the digits; nothing about the order is said.
                return {"order_id": order_id, "phone_last4": None}
            blocker = self._blocker(session, order)
        if blocker:
            dispatcher.utter_message(text=blocker)
            return {"order_id": None}
        return {"order_id": order_id, "phone_last4": tracker.get_slot("verified_phone")}

    def validate_phone_last4(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        if tracker.slots.get("phone_last4") is None:
            return {}  # validate_order_id just asked for the digits again
        order_id = find_order_id(tracker.get_slot("order_id"))
        if order_id is None:
            return {"phone_last4": None}  # the number comes first
        digits = identity.digits_from(slot_value)
        if digits is None:
            dispatcher.utter_message(text="请输入下单手机号的后四位（4 个数字）。不办了可以说“算了”。")
            return {"phone_last4": None}
        kept = tracker.get_slot("verified_phone")
        with db.session_scope() as session:
            if digits == kept and identity.verified_order(session, tracker, order_id) is not None:
                return {"phone_last4": digits}  # the factor verified earlier in this conversation
            if db.order_locked(session, order_id):
                dispatcher.utter_message(text=identity.ORDER_LOCKED_TEXT)
                return {"order_id": None, "phone_last4": None}
            order = session.get(db.Order, order_id)
            ok = db.phone_matches(order, digits)
            db.record_identity_check(session, order_id, tracker.sender_id, ok)
            if ok:
                blocker = self._blocker(session, order)
                verified = {"phone_last4": digits, "verified_phone": digits}
                if blocker:
                    dispatcher.utter_message(text=blocker)
                    return {**verified, "order_id": None}
                return verified
        tries = identity.failures(tracker) + 1
        left = identity.MAX_TRIES - tries
        logger.info(
            "identity check failed for order %s in conversation %s (%d/%d)",
            order_id,
            tracker.sender_id,
            tries,
            identity.MAX_TRIES,
        )
        if left > 0:
            dispatcher.utter_message(
                text=f"订单号和手机尾号对不上，不能显示订单信息（还可以再试 {left} 次）。请重新告诉我订单号。"
            )
        return {"order_id": None, "phone_last4": None, "verify_failures": float(tries)}

    def _blocker(self, session, order: db.Order) -> Optional[Text]:
        if not self.check_returnable:
            return None
        blocker = return_blocker(session, order)
        return blocker + "如需退其他订单，请直接告诉我订单号；不办了可以说“算了”。" if blocker else None


class ValidateOrderForm(ValidateOrderMixin, FormValidationAction):
    def name(self) -> Text:
        return "validate_order_form"


class ValidateReturnForm(ValidateOrderMixin, FormValidationAction):
    check_returnable = True

    def name(self) -> Text:
        return "validate_return_form"

    def validate_return_reason(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        reason = str(slot_value or "").strip()
        if sum(ch.isalnum() for ch in reason) < 2:  # "嗯", emoji or punctuation are not a reason
            dispatcher.utter_message(text="能再具体说说退货原因吗？比如质量问题、尺寸不合适、不想要了。")
            return {"return_reason": None}
        return {"return_reason": reason[:200]}


def describe_status(order: db.Order, now: Optional[dt.datetime] = None) -> Text:
    head = f"订单 {order.order_id}（{order.product.name} ×{order.quantity}，{yuan(order.amount)}）"
    if order.status == db.STATUS_PENDING:
        return f"{head}已付款，正在仓库备货，预计 24 小时内发货。"
    if order.status == db.STATUS_CANCELLED:
        return f"{head}已取消，款项会在 1–3 个工作日内原路退回。"
    if order.status == db.STATUS_DELIVERED:
        return f"{head}已签收（{when(order.delivered_at, now)}，{order.carrier}）。如有问题可以申请退货。"
    if order.status == db.STATUS_RETURNING:
        return f"{head}正在办理退货，收到退货后 1–3 个工作日退款。"
    latest = order.events[-1] if order.events else None
    where = f"，最新：{latest.location} {latest.description}" if latest else ""
    return f"{head}{order.status}，{when(order.shipped_at, now)}由{order.carrier}发出{where}。"


def describe_logistics(order: db.Order, now: Optional[dt.datetime] = None) -> Text:
    if not order.carrier:
        if order.status == db.STATUS_CANCELLED:
            return f"订单 {order.order_id} 已取消，没有物流信息。"
        return f"订单 {order.order_id} 还没有发货，暂时没有物流信息，预计 24 小时内发出。"
    lines = [f"订单 {order.order_id} 由{order.carrier}配送，运单号 {order.tracking_no}，当前：{order.status}。"]
    for event in order.events[-3:][::-1]:
        lines.append(f"· {when(event.time, now)}  {event.location}  {event.description}")
    return "\n".join(lines)


class ActionAnswerOrder(Action):
    """Answers order_form: the order's status or its logistics, from the database, once the phone is verified."""

    def name(self) -> Text:
        return "action_answer_order"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        if identity.locked(tracker):
            dispatcher.utter_message(text=identity.LOCKED_TEXT)
            return [SlotSet("order_id", None), SlotSet("phone_last4", None)]
        with db.session_scope() as session:
            order = identity.verified_order(session, tracker, find_order_id(tracker.get_slot("order_id")))
            if order is None:
                dispatcher.utter_message(text=identity.NOT_VERIFIED_TEXT)
                return [SlotSet("order_id", None)]
            if tracker.get_slot("order_query") == "logistics":
                dispatcher.utter_message(text=describe_logistics(order))
            else:
                dispatcher.utter_message(text=describe_status(order))
        return []


class ActionSubmitReturn(Action):
    """Registers the return filled in by return_form and marks the order as being returned."""

    def name(self) -> Text:
        return "action_submit_return"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        if identity.locked(tracker):
            dispatcher.utter_message(text=identity.LOCKED_TEXT)
            return [SlotSet("order_id", None), SlotSet("phone_last4", None), SlotSet("return_reason", None)]
        order_id = find_order_id(tracker.get_slot("order_id"))
        reason = (tracker.get_slot("return_reason") or "").strip() or "未说明"
        with db.session_scope() as session:
            order = identity.verified_order(session, tracker, order_id)
            if order is None:
                dispatcher.utter_message(text=identity.NOT_VERIFIED_TEXT)
                return [SlotSet("order_id", None), SlotSet("return_reason", None)]
            blocker = return_blocker(session, order)
            if blocker:
                dispatcher.utter_message(text=blocker)
                return [SlotSet("return_reason", None)]
            request = db.ReturnRequest(order_id=order.order_id, sender_id=tracker.sender_id, reason=reason)
            session.add(request)
            order.status = db.STATUS_RETURNING
            session.flush()
            number, product = request.number, order.product.name
        logger.info("return %s registered for order %s (%s)", number, order_id, reason)
        dispatcher.utter_message(
            text=(
                f"已为您提交退货申请 {number}：订单 {order_id}（{product}），原因：{reason}。"
                "请在 7 天内把商品寄回：浙江省杭州市余杭区青禾仓 3 号门（收件人：售后组）。"
                "仓库收到后 1–3 个工作日原路退款。"
            )
        )
        return [SlotSet("return_reason", None)]


class ActionAskOrderId(Action):
    """The forms' question for ``order_id``, worded for what the customer is doing."""

    def name(self) -> Text:
        return "action_ask_order_id"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        if len(identity.order_ids_in((tracker.latest_message or {}).get("text"))) > 1:
            return []  # validate_order_id has just asked which of the numbers
        if tracker.active_loop_name == "return_form":
            dispatcher.utter_message(text="请告诉我要退货的订单号（10 位数字，可以在“我的订单”里找到）。")
        elif tracker.get_slot("order_query") == "logistics":
            dispatcher.utter_message(text="请告诉我要查物流的订单号（10 位数字，可以在“我的订单”里找到）。")
        else:
            dispatcher.utter_message(text="请告诉我您的订单号（10 位数字，可以在“我的订单”里找到）。")
        return []


class ActionAskPhoneLast4(Action):
    """The forms' question for the second factor."""

    def name(self) -> Text:
        return "action_ask_phone_last4"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        order_id = tracker.get_slot("order_id")
        dispatcher.utter_message(text=f"为了保护您的信息，请输入订单 {order_id} 下单时所留手机号的后四位。")
        return []


class ActionAskReturnReason(Action):
    def name(self) -> Text:
        return "action_ask_return_reason"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        order_id = tracker.get_slot("order_id")
        which = f"订单 {order_id} " if order_id else ""
        dispatcher.utter_message(
            text=f"好的，{which}可以退货。请问退货的原因是什么？比如质量问题、尺寸不合适、发错货、与描述不符，或者不想要了。"
        )
        return []
